//! Supervised fine-tuning on prompt/completion demonstrations: cross-entropy on completion tokens
//! only (TRL's `completion_only_loss`), averaged over tokens; `mean_token_accuracy` as TRL logs it.

use burn::tensor::activation::log_softmax;

use super::Encoding;
use super::train::LossOutput;
use crate::data::Demonstration;
use crate::model::Llama;
use crate::score::ScoringBatch;
use crate::{LoadedModel, Result};

pub fn encode_demos(lm: &LoadedModel, enc: &Encoding, data: &[Demonstration]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    data.iter().map(|d| Ok((enc.prompt(lm, &d.prompt)?, enc.completion(lm, &d.completion)?))).collect()
}

pub fn sft_step(policy: &Llama, batch: &[(Vec<u32>, Vec<u32>)], pad_id: u32) -> Result<LossOutput> {
    let device = policy.embed_tokens.weight.device();
    let sb = ScoringBatch::new(batch, pad_id, &device)?;
    let logits = policy.forward(&sb.batch, None);
    let [b, t, _] = logits.dims();
    let logits = logits.narrow(1, 0, t - 1);
    let logp = log_softmax(logits.clone(), 2);
    let picked = logp.gather(2, sb.targets.clone().unsqueeze_dim::<3>(2)).reshape([b, t - 1]);
    let mask = sb.completion_mask.clone();
    let n_tokens = sb.completion_lens.iter().sum::<usize>().max(1) as f64;
    let loss = (picked * mask.clone()).sum().neg() / n_tokens;
    let predicted = logits.detach().argmax(2).reshape([b, t - 1]);
    let correct = predicted.equal(sb.targets.clone()).float() * mask;
    Ok(LossOutput { loss, metrics: vec![("mean_token_accuracy", correct.sum() / n_tokens)] })
}
