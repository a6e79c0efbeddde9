//! KTO (Ethayarajh et al. 2024) on unpaired thumbs-up/down data, as TRL computes it. The reference
//! point `z` is the policy-vs-reference KL on mismatched pairs (prompt i with completion i+1),
//! clamped at 0 and not differentiated:
//! desirable `1 - σ(β (log π/ref(y) - z))`, undesirable `1 - σ(β (z - log π/ref(y)))`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use {
    super::{Encoding, train::LossOutput},
    crate::data::Unpaired,
    crate::logps::{ScoringBatch, sequence_logps},
    crate::model::Llama,
    crate::{Error, LoadedModel, Result},
    burn::module::Module,
    burn::tensor::activation::sigmoid,
    burn::tensor::{Tensor, TensorData},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct KtoConfig {
    /// How far the policy may move from the reference.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = KtoConfig::default().beta))]
    pub beta: f64,
    /// Weight of thumbs-up examples.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = KtoConfig::default().desirable_weight))]
    pub desirable_weight: f64,
    /// Weight of thumbs-down examples.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = KtoConfig::default().undesirable_weight))]
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    fn default() -> Self {
        Self { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0 }
    }
}

#[cfg(feature = "engine")]
#[derive(Clone, Debug)]
pub struct EncodedExample {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
    pub label: bool,
}

#[cfg(feature = "engine")]
pub fn encode_examples(lm: &LoadedModel, enc: &Encoding, data: &[Unpaired]) -> Result<Vec<EncodedExample>> {
    data.iter()
        .map(|d| Ok(EncodedExample { prompt: enc.prompt(lm, &d.prompt)?, completion: enc.completion(lm, &d.completion)?, label: d.label }))
        .collect()
}

/// Per-example KTO losses from log-ratios `log π(y) - log ref(y)` (`[batch]`), labels (1 = desirable)
/// and the reference point `kl` (a scalar). Written once, used by training and tests.
#[cfg(feature = "engine")]
pub fn kto_losses(cfg: &KtoConfig, logratios: Tensor<1>, desirable: Tensor<1>, kl: f64) -> Tensor<1> {
    let kl = Tensor::<1>::from_floats([kl as f32], &logratios.device());
    kto_losses_kl(cfg, logratios, desirable, kl)
}

/// [`kto_losses`] with the reference point as a `[1]` tensor, so training never waits on a read.
#[cfg(feature = "engine")]
fn kto_losses_kl(cfg: &KtoConfig, logratios: Tensor<1>, desirable: Tensor<1>, kl: Tensor<1>) -> Tensor<1> {
    let n = logratios.dims()[0];
    let kl = kl.expand([n]);
    let undesirable = desirable.clone().neg() + 1.0;
    let chosen = (sigmoid((logratios.clone() - kl.clone()) * cfg.beta).neg() + 1.0) * desirable * cfg.desirable_weight;
    let rejected = sigmoid((logratios.neg() + kl) * cfg.beta).neg() + 1.0;
    chosen + rejected * undesirable * cfg.undesirable_weight
}

#[cfg(feature = "engine")]
pub fn kto_step(cfg: &KtoConfig, policy: &Llama, reference: &Llama, batch: &[EncodedExample], pad_id: u32) -> Result<LossOutput> {
    let n = batch.len();
    if n < 2 {
        return Err(Error::Invalid("KTO needs at least 2 examples per batch (its KL estimate pairs mismatched ones)".into()));
    }
    let device = policy.device();
    let seqs: Vec<(Vec<u32>, Vec<u32>)> = batch.iter().map(|e| (e.prompt.clone(), e.completion.clone())).collect();
    // Mismatched pairs for the KL reference point.
    let kl_seqs: Vec<(Vec<u32>, Vec<u32>)> =
        (0..n).map(|i| (batch[i].prompt.clone(), batch[(i + 1) % n].completion.clone())).collect();
    let sb = ScoringBatch::new(policy, &seqs, pad_id)?;
    let kl_sb = ScoringBatch::new(policy, &kl_seqs, pad_id)?;

    let logps = sequence_logps(policy, &sb);
    let ref_logps = sequence_logps(reference, &sb).detach();
    // Untracked (not only detached): burn keeps the graph of a pass no backward pass consumes.
    let kl_t = (sequence_logps(&policy.clone().no_grad(), &kl_sb) - sequence_logps(reference, &kl_sb)).mean();
    let kl = kl_t.clamp_min(0.0).reshape([1]);

    let labels: Vec<f32> = batch.iter().map(|e| if e.label { 1.0 } else { 0.0 }).collect();
    let n_des = labels.iter().sum::<f32>();
    let desirable = Tensor::<1>::from_data(TensorData::new(labels, [n]), &device);
    let logratios = logps.clone() - ref_logps;
    let losses = kto_losses_kl(cfg, logratios.clone(), desirable.clone(), kl.clone());
    let rewards = logratios.detach() * cfg.beta;
    // Means over the examples of each kind (0 when a batch has none of that kind).
    let mean_where = |x: Tensor<1>, w: Tensor<1>, count: f32| (x * w).sum() / (count.max(1.0) as f64);
    let undesirable = desirable.clone().neg() + 1.0;
    let n_und = n as f32 - n_des;
    let rc = mean_where(rewards.clone(), desirable.clone(), n_des);
    let rr = mean_where(rewards, undesirable.clone(), n_und);
    Ok(LossOutput::new(
        losses.mean(),
        vec![
            ("rewards/chosen", rc.clone()),
            ("rewards/rejected", rr.clone()),
            ("rewards/margins", rc - rr),
            ("kl", kl),
            ("logps/chosen", mean_where(logps.clone().detach(), desirable, n_des)),
            ("logps/rejected", mean_where(logps.detach(), undesirable, n_und)),
        ],
    ))
}
