//! Log-probabilities of completions given prompts: `log p(completion_t | prompt, completion_<t)`
//! per completion token, batched. DPO, reward models and RL all start from this.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::backend::read_f32;
use crate::model::{Batch, Llama};
use crate::{Error, LoadedModel, Result};

/// A batch of prompt+completion sequences, right-padded, with the mask of completion targets.
pub struct ScoringBatch {
    pub batch: Batch,
    /// `[batch, seq-1]`: the token predicted at each position (input shifted left by one).
    pub targets: Tensor<2, Int>,
    /// `[batch, seq-1]`: 1.0 where the target is a completion token, else 0.0.
    pub completion_mask: Tensor<2>,
    /// Completion length of each row.
    pub completion_lens: Vec<usize>,
}

impl ScoringBatch {
    pub fn new(pairs: &[(Vec<u32>, Vec<u32>)], pad_id: u32, device: &Device) -> Result<Self> {
        if pairs.is_empty() {
            return Err(Error::Invalid("nothing to score".into()));
        }
        let seqs: Vec<Vec<u32>> = pairs
            .iter()
            .map(|(p, c)| p.iter().chain(c).copied().collect())
            .collect();
        if let Some((i, _)) = pairs.iter().enumerate().find(|(_, (p, _))| p.is_empty()) {
            return Err(Error::Invalid(format!("prompt #{i} is empty; a completion needs a prompt to follow")));
        }
        let (batch, _) = Batch::right_padded(&seqs, pad_id, device);
        let t = seqs.iter().map(Vec::len).max().unwrap_or(1).max(2);
        let b = seqs.len();
        let mut targets = vec![pad_id as i32; b * (t - 1)];
        let mut mask = vec![0.0f32; b * (t - 1)];
        for (r, ((p, c), s)) in pairs.iter().zip(&seqs).enumerate() {
            for j in 1..s.len() {
                targets[r * (t - 1) + j - 1] = s[j] as i32;
                if j >= p.len() && j < p.len() + c.len() {
                    mask[r * (t - 1) + j - 1] = 1.0;
                }
            }
        }
        Ok(Self {
            batch,
            targets: Tensor::from_data(TensorData::new(targets, [b, t - 1]), device),
            completion_mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
            completion_lens: pairs.iter().map(|(_, c)| c.len()).collect(),
        })
    }
}

/// Per-position log-probabilities of the targets, `[batch, seq-1]`, zero outside completions.
/// Differentiable: training code calls this on an autodiff device.
pub fn token_logps(model: &Llama, sb: &ScoringBatch) -> Tensor<2> {
    let logits = model.forward(&sb.batch, None);
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits.narrow(1, 0, t - 1), 2);
    let picked = logp.gather(2, sb.targets.clone().unsqueeze_dim::<3>(2)).reshape([b, t - 1]);
    picked * sb.completion_mask.clone()
}

/// Per-position target log-probabilities and entropies of the next-token distribution, both
/// `[batch, seq-1]` and zero outside completions (RL needs both from one forward pass).
pub fn token_logps_and_entropy(model: &Llama, sb: &ScoringBatch) -> (Tensor<2>, Tensor<2>) {
    let logits = model.forward(&sb.batch, None);
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits.narrow(1, 0, t - 1), 2);
    let entropy = (logp.clone().exp() * logp.clone()).sum_dim(2).neg().reshape([b, t - 1]).detach();
    let picked = logp.gather(2, sb.targets.clone().unsqueeze_dim::<3>(2)).reshape([b, t - 1]);
    let mask = sb.completion_mask.clone();
    (picked * mask.clone(), entropy * mask)
}

/// Sum of completion log-probabilities per sequence, `[batch]`.
pub fn sequence_logps(model: &Llama, sb: &ScoringBatch) -> Tensor<1> {
    let [b, _] = sb.completion_mask.dims();
    token_logps(model, sb).sum_dim(1).reshape([b])
}

/// Host-side result for one (prompt, completion) pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Scored {
    pub logprobs: Vec<f32>,
    pub sum: f32,
}

/// Scores `(prompt ids, completion ids)` pairs in one batch.
pub fn score(lm: &LoadedModel, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Scored>> {
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let sb = ScoringBatch::new(pairs, pad, &lm.device)?;
    let [b, t1] = sb.completion_mask.dims();
    let lp = read_f32(token_logps(&lm.model, &sb))?;
    Ok((0..b)
        .map(|r| {
            let (p, c) = (&pairs[r].0, &pairs[r].1);
            let start = p.len() - 1;
            let logprobs: Vec<f32> = lp[r * t1 + start..r * t1 + start + c.len()].to_vec();
            let sum = logprobs.iter().map(|&x| x as f64).sum::<f64>() as f32;
            Scored { logprobs, sum }
        })
        .collect())
}
