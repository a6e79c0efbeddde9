//! Evaluation on held-out prompts: fresh samples from a model, their mean reward and length, and
//! the mean sequence KL to the reference, `KL ≈ mean over samples of log π(y) - log ref(y)`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use {
    super::answers::seeded,
    super::rewards::Rewarder,
    super::session::Session,
    crate::Result,
    crate::align::Encoding,
    crate::align::best_of_n::Candidate,
    crate::backend::read_f32,
    crate::generate::{DecodePath, Generations, Request, Sample, SamplingConfig},
    crate::logps::{ScoringBatch, sequence_logps},
    crate::model::Llama,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub mean_score: f64,
    pub kl: f64,
    pub mean_length: f64,
}

/// Samples `sampling.num_samples` answers per prompt from `model` (seed + prompt index), scores
/// them with `rewarder`, and measures their KL to `reference`; `None` when `model` is its own
/// reference (an untrained policy, the base model): its KL is 0, not measured.
#[cfg(feature = "engine")]
pub async fn evaluate(
    session: &Session,
    model: &Llama,
    reference: Option<&Llama>,
    enc: &Encoding,
    prompts: &[String],
    sampling: &SamplingConfig,
    rewarder: &Rewarder,
) -> Result<EvalReport> {
    let (mut scores, mut kls, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Ok(Request { prompt: session.prompt_ids(enc, p)?, sampling: seeded(sampling, i) }))
        .collect::<Result<Vec<_>>>()?;
    // The prompts' answers decoded together.
    let mut answers = Generations::new(DecodePath::Auto, model, &session.lm.tokenizer, requests.clone())?;
    if reference.is_some() {
        answers = answers.keeping_logps();
    }
    while let Some((i, samples)) = answers.next(&mut |_, _| true).await? {
        let (prompt, ids) = (&prompts[i], &requests[i].prompt);
        let cands: Vec<Candidate> = samples
            .iter()
            .map(|s| Candidate { prompt, prompt_ids: ids, completion: &s.text, completion_ids: &s.tokens })
            .collect();
        scores.extend(rewarder.rewards(&cands).await?);
        match reference {
            Some(r) => kls.extend(sequence_kl(session, r, ids, &samples).await?),
            None => kls.extend(samples.iter().filter(|s| !s.tokens.is_empty()).map(|_| 0.0)),
        }
        lens.extend(samples.iter().map(|s| s.tokens.len() as f64));
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    Ok(EvalReport { mean_score: mean(&scores), kl: mean(&kls), mean_length: mean(&lens) })
}

/// `log π(y | x) - log ref(y | x)` for each non-empty sample `y` of the prompt `x` (`prompt_ids`),
/// with `log π(y | x)` read off each sample's own log-probabilities, kept while decoding
/// ([`Generations::keeping_logps`]): one pass over the answers, the reference's, instead of two.
/// The reference is scored as a frozen copy: on an autodiff device a pass with trainable weights
/// records a graph for a backward pass that never comes, and burn keeps it (hundreds of MB a
/// call on SmolLM2).
#[cfg(feature = "engine")]
pub async fn sequence_kl(session: &Session, reference: &Llama, prompt_ids: &[u32], samples: &[Sample]) -> Result<Vec<f64>> {
    let kept: Vec<&Sample> = samples.iter().filter(|s| !s.tokens.is_empty()).collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(s) = kept.iter().find(|s| s.logps.len() != s.tokens.len()) {
        return Err(crate::Error::Invalid(format!("a sample of {} tokens kept {} log-probabilities: decode it keeping them", s.tokens.len(), s.logps.len())));
    }
    let pairs: Vec<_> = kept.iter().map(|s| (prompt_ids.to_vec(), s.tokens.clone())).collect();
    let sb = ScoringBatch::new(&session.lm.model, &pairs, session.pad())?;
    let reference = reference.for_inference();
    let by_reference = read_f32(sequence_logps(&reference, &sb)).await?;
    Ok(kept.iter().zip(by_reference).map(|(s, r)| s.logps.iter().map(|&l| f64::from(l)).sum::<f64>() - f64::from(r)).collect())
}

