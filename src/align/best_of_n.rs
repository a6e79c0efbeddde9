//! Best-of-N: sample N completions, score each with a reward model or the judges, return all of
//! them sorted best first.

use serde::Serialize;

use crate::generate::{SamplingConfig, generate_async};
use crate::io::Tokenizer;
use crate::model::Llama;
use crate::Result;

/// A completion for a prompt, as reward functions see it.
pub struct Candidate<'a> {
    pub prompt: &'a str,
    pub prompt_ids: &'a [u32],
    pub completion: &'a str,
    pub completion_ids: &'a [u32],
}

/// Scores a batch of candidates (judges, a reward model, or both).
pub type RewardFn<'a> = dyn FnMut(&[Candidate]) -> Result<Vec<f64>> + 'a;

#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    pub text: String,
    pub tokens: Vec<u32>,
    pub score: f64,
}

pub async fn best_of_n_async(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    prompt_ids: &[u32],
    sampling: &SamplingConfig,
    reward: &mut RewardFn<'_>,
) -> Result<Vec<Ranked>> {
    let samples = generate_async(model, tokenizer, prompt_ids, sampling, &mut |_| true).await?;
    let cands: Vec<Candidate> = samples
        .iter()
        .map(|s| Candidate { prompt, prompt_ids, completion: &s.text, completion_ids: &s.tokens })
        .collect();
    let scores = reward(&cands)?;
    let mut ranked: Vec<Ranked> = samples
        .into_iter()
        .zip(scores)
        .map(|(s, score)| Ranked { text: s.text, tokens: s.tokens, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(ranked)
}

/// Samples N completions and ranks them by `reward`, best first.
#[cfg(not(target_arch = "wasm32"))]
pub fn best_of_n(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    prompt_ids: &[u32],
    sampling: &SamplingConfig,
    reward: &mut RewardFn,
) -> Result<Vec<Ranked>> {
    crate::backend::block_on(best_of_n_async(model, tokenizer, prompt, prompt_ids, sampling, reward))
}
