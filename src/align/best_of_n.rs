//! Best-of-N's vocabulary: a completion as reward sources see it, and a ranked sample. The loop
//! (sample N, score, sort) is [`crate::lab::best_of_n`], where the reward sources live.

use serde::Serialize;

/// A completion for a prompt, as reward sources see it.
pub struct Candidate<'a> {
    pub prompt: &'a str,
    pub prompt_ids: &'a [u32],
    pub completion: &'a str,
    /// The completion's tokens (a reward model's scorer adds the end-of-turn token if missing).
    pub completion_ids: &'a [u32],
}

/// A sample and its reward, best first in a ranking.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    pub text: String,
    pub tokens: Vec<u32>,
    pub score: f64,
}
