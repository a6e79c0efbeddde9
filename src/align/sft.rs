//! Supervised fine-tuning on prompt/completion demonstrations: cross-entropy on completion tokens
//! only (TRL's `completion_only_loss`), averaged over tokens; `mean_token_accuracy` as TRL logs it.

use super::Encoding;
use super::train::LossOutput;
use crate::data::Demonstration;
use crate::model::Llama;
use crate::logps::{ScoringBatch, token_stats};
use crate::{LoadedModel, Result};

pub fn encode_demos(lm: &LoadedModel, enc: &Encoding, data: &[Demonstration]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    data.iter().map(|d| Ok((enc.prompt(lm, &d.prompt)?, enc.completion(lm, &d.completion)?))).collect()
}

pub fn sft_step(policy: &Llama, batch: &[(Vec<u32>, Vec<u32>)], pad_id: u32) -> Result<LossOutput> {
    let sb = ScoringBatch::new(policy, batch, pad_id)?;
    let stats = token_stats(policy, &sb, false, true);
    let n_tokens = sb.completion_lens.iter().sum::<usize>().max(1) as f64;
    let loss = stats.logps.sum().neg() / n_tokens;
    let correct = stats.correct.expect("asked for accuracy");
    Ok(LossOutput::new(loss, vec![("mean_token_accuracy", correct.sum() / n_tokens)]))
}
