//! Reward model: the backbone (usually with LoRA) plus a scalar head read at the last
//! non-padding token, trained with the Bradley-Terry loss
//! `-log σ(r_chosen - r_rejected - margin)` (+ `center_rewards_coefficient * mean((r_c + r_r)²)`,
//! Eisenstein et al. 2023), as TRL's `RewardTrainer`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use {
    super::{dpo::EncodedPair, train::LossOutput},
    crate::backend::read_f32,
    crate::logps::SharedPromptBatch,
    crate::model::{Batch, Llama},
    crate::{Error, Result},
    burn::module::{Module, Param},
    burn::nn::Linear,
    burn::tensor::activation::log_sigmoid,
    burn::tensor::{Int, Tensor, TensorData},
    rand::{Rng, SeedableRng},
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct RewardConfig {
    /// Required gap between chosen and rejected rewards (0 = plain Bradley-Terry).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RewardConfig::default().margin))]
    pub margin: f64,
    /// Pulls rewards towards 0: `coefficient * mean((r_chosen + r_rejected)^2)` is added.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RewardConfig::default().center_rewards_coefficient))]
    pub center_rewards_coefficient: f64,
    /// Run each pair's prompt once for both answers, as DPO's `share_prompt` does: the same
    /// rewards, less work. TRL scores chosen and rejected apart (false). With LoRA dropout on, the
    /// prompt gets one dropout draw for both answers instead of one each.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RewardConfig::default().share_prompt,
        action = clap::ArgAction::Set, value_name = "BOOL"))]
    pub share_prompt: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self { margin: 0.0, center_rewards_coefficient: 0.0, share_prompt: true }
    }
}

#[cfg(feature = "engine")]
#[derive(Module, Debug)]
pub struct RewardModel {
    pub backbone: Llama,
    /// `[hidden, 1]`: transformers' `LlamaForSequenceClassification.score`.
    pub score: Linear,
}

#[cfg(feature = "engine")]
impl RewardModel {
    /// A new head (normal, std 0.02 like transformers' initializer_range) on `backbone`.
    pub fn new(backbone: Llama, seed: u64) -> Self {
        let device = backbone.device();
        let d = backbone.hidden_size();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Box-Muller for a normal draw without another dependency.
        let w: Vec<f32> = (0..d)
            .map(|_| {
                let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                0.02 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect();
        let weight = Tensor::<2>::from_data(TensorData::new(w, [d, 1]), &device);
        Self { backbone, score: Linear { weight: Param::from_tensor(weight), bias: None } }
    }

    /// Rewards `[batch]` for whole sequences (prompt + completion), read at each last real token.
    pub fn rewards(&self, seqs: &[Vec<u32>], pad_id: u32) -> Result<Tensor<1>> {
        if seqs.is_empty() || seqs.iter().any(Vec::is_empty) {
            return Err(Error::Invalid("cannot score an empty sequence".into()));
        }
        let device = self.backbone.device();
        let (batch, lens) = Batch::right_padded(&self.backbone, seqs, pad_id)?;
        let h = self.backbone.hidden(&batch, None); // [b, t, d]
        let [b, _, d] = h.dims();
        let last: Vec<i32> = lens.iter().map(|&l| (l - 1) as i32).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(last, [b]), &device)
            .reshape([b, 1, 1])
            .expand([b, 1, d]);
        let h_last = h.gather(1, idx).reshape([b, d]);
        Ok(self.score.forward(h_last).reshape([b]))
    }

    /// Host-side rewards for (prompt, completion) id pairs.
    pub async fn rewards_for(&self, pairs: &[(Vec<u32>, Vec<u32>)], pad_id: u32) -> Result<Vec<f32>> {
        let seqs: Vec<Vec<u32>> = pairs.iter().map(|(p, c)| p.iter().chain(c).copied().collect()).collect();
        read_f32(self.rewards(&seqs, pad_id)?).await
    }
}

/// Bradley-Terry losses per pair from chosen and rejected rewards. Written once, tested.
#[cfg(feature = "engine")]
pub fn reward_losses(cfg: &RewardConfig, chosen: Tensor<1>, rejected: Tensor<1>) -> Tensor<1> {
    let mut loss = log_sigmoid(chosen.clone() - rejected.clone() - cfg.margin).neg();
    if cfg.center_rewards_coefficient > 0.0 {
        loss = loss + (chosen + rejected).powi_scalar(2) * cfg.center_rewards_coefficient;
    }
    loss
}

#[cfg(feature = "engine")]
pub fn reward_step(cfg: &RewardConfig, model: &RewardModel, pairs: &[EncodedPair], pad_id: u32) -> Result<LossOutput> {
    let b = pairs.len();
    let r = if cfg.share_prompt {
        let ids: Vec<[&[u32]; 3]> = pairs.iter().map(EncodedPair::parts).collect();
        let last = SharedPromptBatch::new(&model.backbone, &ids, pad_id)?.last_hidden(&model.backbone, None);
        model.score.forward(last).reshape([2 * b])
    } else {
        let seqs: Vec<Vec<u32>> = pairs
            .iter()
            .map(|p| p.prompt.iter().chain(&p.chosen).copied().collect())
            .chain(pairs.iter().map(|p| p.prompt.iter().chain(&p.rejected).copied().collect()))
            .collect();
        model.rewards(&seqs, pad_id)?
    };
    let (rc, rr) = (r.clone().narrow(0, 0, b), r.narrow(0, b, b));
    let loss = reward_losses(cfg, rc.clone(), rr.clone()).mean();
    let (rc, rr) = (rc.detach(), rr.detach());
    Ok(LossOutput::new(
        loss,
        vec![
            ("accuracy", rc.clone().greater(rr.clone()).float().mean()),
            ("margin", (rc.clone() - rr.clone()).mean()),
            ("mean_reward", (rc + rr).mean() / 2.0),
        ],
    ))
}

/// Saves the reward model as PEFT does for `task_type = SEQ_CLS`: LoRA adapters plus the `score`
/// head as a module to save (`base_model.model.score.weight`, `[1, hidden]`).
#[cfg(feature = "engine")]
pub async fn save_reward_model(rm: &RewardModel, cfg: &crate::model::LoraConfig, base_model: &str) -> Result<crate::io::peft::AdapterFiles> {
    let head = rm.score.weight.val().transpose(); // [1, hidden]
    crate::io::peft::save_adapter_with(&rm.backbone, cfg, base_model, "SEQ_CLS", vec![(
        "score".into(),
        "base_model.model.score.weight".into(),
        head,
    )])
    .await
}

/// Loads a reward model saved by [`save_reward_model`] (or by PEFT) onto `backbone`.
#[cfg(feature = "engine")]
pub fn load_reward_model(mut backbone: Llama, config_json: &[u8], safetensors: &[u8]) -> Result<(RewardModel, crate::model::LoraConfig)> {
    let d = backbone.hidden_size();
    let device = backbone.device();
    let mut head = None;
    let cfg = crate::io::peft::load_adapter_with(&mut backbone, config_json, safetensors, &["score"], &mut |key, (shape, data)| {
        if shape != [1, d] {
            return Err(Error::format(format!("'{key}' has shape {shape:?}, expected [1, {d}]")));
        }
        head = Some(Tensor::<2>::from_data(TensorData::new(data, [1, d]), &device).transpose());
        Ok(())
    })?;
    let weight = head.ok_or_else(|| Error::format("the reward model has no score head"))?;
    Ok((RewardModel { backbone, score: Linear { weight: Param::from_tensor(weight), bias: None } }, cfg))
}
