//! Best-of-N and automatic labelling, written once: sample N answers, score them with a reward
//! source, rank them; pair the best against the worst for preference data.

use crate::align::best_of_n::Ranked;
use crate::data::Preference;
#[cfg(feature = "engine")]
use {
    super::rewards::Rewarder,
    super::session::Session,
    super::spec::Which,
    crate::Result,
    crate::align::Encoding,
    crate::align::best_of_n::Candidate,
    crate::generate::{Sample, SamplingConfig},
};

/// Samples `sampling.num_samples` answers to `prompt` and ranks them by `rewarder`, best first.
/// `keep_going` is asked after each token; `false` stops the sampling.
#[cfg(feature = "engine")]
pub async fn best_of_n(
    session: &Session,
    which: Which,
    enc: &Encoding,
    prompt: &str,
    sampling: &SamplingConfig,
    rewarder: &Rewarder,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<Ranked>> {
    let (ids, samples) = session.generate(which, enc, prompt, sampling, &mut |_| keep_going()).await?;
    rank(prompt, &ids, samples, rewarder).await
}

/// `samples` of `prompt` (its ids `ids`) ranked by `rewarder`, best first.
#[cfg(feature = "engine")]
pub async fn rank(prompt: &str, ids: &[u32], samples: Vec<Sample>, rewarder: &Rewarder) -> Result<Vec<Ranked>> {
    // Ids as sampled: a reward model's scorer adds the end-of-turn token it learnt with.
    let cands: Vec<Candidate> = samples
        .iter()
        .map(|s| Candidate { prompt, prompt_ids: ids, completion: &s.text, completion_ids: &s.tokens })
        .collect();
    let scores = rewarder.rewards(&cands).await?;
    let mut ranked: Vec<Ranked> =
        samples.into_iter().zip(scores).map(|(s, score)| Ranked { text: s.text, tokens: s.tokens, score }).collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(ranked)
}

/// Preference pairs from a ranking: best vs worst, second best vs second worst, ... up to
/// `per_prompt`. A pair needs a strictly higher score and two different, non-empty answers:
/// equal scores say nothing about which is better.
pub fn pairs_from_ranking(prompt: &str, ranked: &[Ranked], per_prompt: usize) -> Vec<Preference> {
    (0..per_prompt.min(ranked.len() / 2))
        .map(|k| (&ranked[k], &ranked[ranked.len() - 1 - k]))
        .filter(|(best, worst)| {
            best.score > worst.score && !best.text.trim().is_empty() && !worst.text.trim().is_empty() && best.text != worst.text
        })
        .map(|(best, worst)| Preference { prompt: prompt.to_string(), chosen: best.text.clone(), rejected: worst.text.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str, score: f64) -> Ranked {
        Ranked { text: text.into(), tokens: vec![], score }
    }

    #[test]
    fn pairs_need_a_strictly_better_and_different_answer() {
        let ranked = [r("great", 0.9), r("good", 0.5), r("meh", 0.5), r("bad", -0.2)];
        let p = pairs_from_ranking("q", &ranked, 2);
        assert_eq!(p.len(), 1, "the middle two tie: no second pair");
        assert_eq!((p[0].chosen.as_str(), p[0].rejected.as_str()), ("great", "bad"));
        assert!(pairs_from_ranking("q", &[r("same", 1.0), r("same", 0.0)], 1).is_empty());
        assert!(pairs_from_ranking("q", &[r("x", 1.0), r(" ", 0.0)], 1).is_empty());
        assert!(pairs_from_ranking("q", &[r("x", 1.0)], 1).is_empty());
    }
}
