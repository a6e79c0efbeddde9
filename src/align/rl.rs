//! Online RL from a reward (a reward model or the judges), GRPO/RLOO style:
//! 1. sample K completions per prompt from the policy;
//! 2. score them; optionally subtract `beta * KL(policy_old || ref)` from the reward (PPO/RLOO);
//! 3. group-relative advantages: GRPO `(r - mean) / std`, or RLOO `r - mean(others)`;
//! 4. a few inner epochs of the PPO clipped surrogate on token log-prob ratios
//!    `min(ρA, clip(ρ, 1-ε, 1+ε)A)`, `ρ = π/π_old`, optionally minus `beta * KL` per token (GRPO),
//!    with the k1 (`log π/ref`) or k3 (`ref/π - log(ref/π) - 1`) estimator. `π_old` is the
//!    policy that sampled: the first epoch's own log-probabilities, so that epoch's `ρ` is 1.

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use {
    super::Reference,
    super::best_of_n::Candidate,
    super::train::{LossOutput, Metrics, Trainer},
    crate::backend::read_f32,
    crate::generate::{DecodePath, FinishReason, Generations, Request, SamplingConfig},
    crate::io::Tokenizer,
    crate::logps::{ScoringBatch, token_logps, token_logps_and_entropy},
    crate::{Error, Result},
    burn::module::Module,
    burn::tensor::{Tensor, TensorData},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Advantage {
    Grpo,
    Rloo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum KlEstimator {
    K1,
    K3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum KlPlacement {
    /// Subtract the sequence KL from the reward (PPO, RLOO).
    Reward,
    /// Add the per-token KL to the loss (GRPO).
    Loss,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct RlConfig {
    /// Prompts sampled per round.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().prompts_per_step))]
    pub prompts_per_step: usize,
    /// Completions per prompt (K).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().num_generations))]
    pub num_generations: usize,
    /// Longest sampled answer, in tokens.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().max_new_tokens))]
    pub max_new_tokens: usize,
    /// Sampling temperature of the rounds' answers.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().temperature))]
    pub temperature: f32,
    /// Nucleus sampling of the rounds' answers (1 = off).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().top_p))]
    pub top_p: f32,
    /// Inner optimisation epochs per batch of samples (TRL's `num_iterations`).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().num_iterations))]
    pub num_iterations: usize,
    /// PPO clip range for the per-token probability ratio.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().epsilon))]
    pub epsilon: f64,
    /// KL penalty towards the reference (0 = no leash).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = RlConfig::default().beta))]
    pub beta: f64,
    /// Group baseline: GRPO (mean and std) or RLOO (leave one out).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = RlConfig::default().advantage))]
    pub advantage: Advantage,
    /// Per-token KL estimate: k1 (log ratio) or k3 (unbiased, never negative).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = RlConfig::default().kl_estimator))]
    pub kl_estimator: KlEstimator,
    /// Where the KL penalty goes: the loss (GRPO) or the reward (PPO).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = RlConfig::default().kl_in))]
    pub kl_in: KlPlacement,
    #[cfg_attr(not(target_arch = "wasm32"), arg(skip))]
    pub seed: u64,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            prompts_per_step: 2,
            num_generations: 4,
            max_new_tokens: 32,
            temperature: 1.0,
            top_p: 1.0,
            num_iterations: 2,
            epsilon: 0.2,
            beta: 0.04,
            advantage: Advantage::Grpo,
            kl_estimator: KlEstimator::K3,
            kl_in: KlPlacement::Loss,
            seed: 0,
        }
    }
}

/// Group-relative advantages of `rewards` laid out as groups of `k` consecutive samples.
pub fn advantages(rewards: &[f64], k: usize, kind: Advantage) -> Vec<f64> {
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(k) {
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        match kind {
            Advantage::Grpo => {
                let std = (g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
                out.extend(g.iter().map(|r| (r - mean) / (std + 1e-4)));
            }
            Advantage::Rloo => {
                let sum: f64 = g.iter().sum();
                out.extend(g.iter().map(|r| if n > 1.0 { r - (sum - r) / (n - 1.0) } else { 0.0 }));
            }
        }
    }
    out
}

/// Per-token KL estimate from policy and reference log-probs.
#[cfg(feature = "engine")]
pub fn kl_estimate(kind: KlEstimator, logp: Tensor<2>, ref_logp: Tensor<2>) -> Tensor<2> {
    match kind {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K3 => {
            let d = ref_logp - logp;
            d.clone().exp() - d - 1.0
        }
    }
}

/// The completions of one round: K per prompt, in prompt order.
#[cfg(feature = "engine")]
pub struct RlSamples {
    /// (prompt ids, completion ids + end-of-turn when the policy chose to stop).
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    pub texts: Vec<String>,
    k: usize,
}

#[cfg(feature = "engine")]
impl RlSamples {
    /// What a reward function scores (the browser scores them between sampling and updating).
    pub fn candidates<'a>(&'a self, prompts: &'a [(String, Vec<u32>)]) -> Vec<Candidate<'a>> {
        self.pairs
            .iter()
            .zip(&self.texts)
            .enumerate()
            .map(|(i, ((p, c), t))| Candidate { prompt: &prompts[i / self.k].0, prompt_ids: p, completion: t, completion_ids: c })
            .collect()
    }
}

/// Step 1 of a round: sample K completions per prompt from the current policy.
#[cfg(feature = "engine")]
pub async fn rl_sample(cfg: &RlConfig, trainer: &Trainer, tokenizer: &Tokenizer, prompts: &[(String, Vec<u32>)]) -> Result<RlSamples> {
    if cfg.num_generations < 2 {
        return Err(Error::Invalid("RL needs at least 2 generations per prompt to compare them".into()));
    }
    let k = cfg.num_generations;
        let round = trainer.step as u64;
    let mut pairs: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(pi, (_, ids))| Request {
            prompt: ids.clone(),
            sampling: SamplingConfig {
                max_new_tokens: cfg.max_new_tokens,
                temperature: cfg.temperature,
                top_p: cfg.top_p,
                top_k: 0,
                repetition_penalty: 1.0,
                seed: cfg.seed.wrapping_add(round * 7919 + pi as u64),
                num_samples: k,
            },
        })
        .collect();
    // The batch's prompts decoded together.
    let mut answers = Generations::new(DecodePath::Auto, &trainer.model, tokenizer, requests)?;
    while let Some((pi, samples)) = answers.next(&mut |_, _| true).await? {
        let ids = &prompts[pi].1;
        for s in samples {
            let mut c = s.tokens.clone();
            // The end-of-turn token is part of what the policy chose: reinforce it too.
            if s.finish_reason == FinishReason::Stop || c.is_empty() {
                c.push(tokenizer.end_of_turn());
            }
            pairs.push((ids.clone(), c));
            texts.push(s.text);
        }
    }
    Ok(RlSamples { pairs, texts, k })
}

/// One sample's numbers in a round, in sample order: the reward it was given, its advantage, and
/// its KL from the reference, `Σ_t log π_old(y_t) − log π_ref(y_t)` over the answer (nats).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    pub reward: f64,
    pub advantage: f64,
    pub kl: f64,
}

/// Step 2 of a round, given one reward per sample: advantages, then the clipped updates. Returns
/// the round's metrics and each sample's numbers.
#[cfg(feature = "engine")]
pub async fn rl_update(
    cfg: &RlConfig,
    trainer: &mut Trainer,
    reference: &Reference,
    tokenizer: &Tokenizer,
    samples: &RlSamples,
    raw: Vec<f64>,
) -> Result<(Metrics, Vec<SampleScore>)> {
    let (k, pad, pairs) = (samples.k, tokenizer.pad_id(), &samples.pairs);
    if raw.len() != pairs.len() {
        return Err(Error::Invalid(format!("{} rewards for {} samples", raw.len(), pairs.len())));
    }
    let n = raw.len();
    let mean_reward = raw.iter().sum::<f64>() / n as f64;
    let reward_std = (raw.iter().map(|r| (r - mean_reward).powi(2)).sum::<f64>() / n as f64).sqrt();
    let mean_len = pairs.iter().map(|(_, c)| c.len()).sum::<usize>() as f64 / n as f64;

    // 3. Reference log-probs, without gradients.
    let device = trainer.model.device();
    let sb = ScoringBatch::new(&trainer.model, pairs, pad)?;
    let ref_model = reference.model(&trainer.model);
    let ref_lp = token_logps(&ref_model, &sb).detach();
    // π_old is the policy that sampled, which is the policy of the first inner epoch: its own
    // log-probabilities, detached, so that epoch's ratio is exactly 1 and no pass runs only to
    // read them (TRL does the same with one epoch). PPO's KL in the reward is needed before the
    // advantages, so there they are read ahead, untracked: a pass that records a graph for a
    // backward pass that never comes is kept by burn's autodiff (hundreds of MB on SmolLM2).
    let kl_in_reward = cfg.kl_in == KlPlacement::Reward && cfg.beta > 0.0;
    let mut old = kl_in_reward.then(|| token_logps(&trainer.model.clone().no_grad(), &sb));
    // Log-probs are zero outside the answers: the sums are over each answer's tokens.
    let seq_kl_of = |old: Tensor<2>| read_f32((old - ref_lp.clone()).sum_dim(1).reshape([n]));
    let early_kl = match &old {
        Some(old) => Some(seq_kl_of(old.clone()).await?),
        None => None,
    };
    let mut rewards = raw.clone();
    if let Some(seq_kl) = &early_kl {
        for (r, kl) in rewards.iter_mut().zip(seq_kl) {
            *r -= cfg.beta * *kl as f64;
        }
    }
    let adv = advantages(&rewards, k, cfg.advantage);
    let adv_t = Tensor::<2>::from_data(TensorData::new(adv.iter().map(|&a| a as f32).collect::<Vec<_>>(), [n, 1]), &device);
    let mask = sb.completion_mask.clone();
    let lens = mask.clone().sum_dim(1).clamp_min(1.0); // [n, 1]
    let n_tokens = read_f32(mask.clone().sum()).await?[0].max(1.0) as f64;

    // 4. Clipped surrogate for a few inner epochs.
    let mut metrics = Metrics::new();
    for _ in 0..cfg.num_iterations.max(1) {
        metrics = trainer.step(&mut |model, _| {
            let (logp, entropy) = token_logps_and_entropy(model, &sb);
            let old = old.get_or_insert_with(|| logp.clone().detach()).clone();
            let ratio = (logp.clone() - old).exp();
            let unclipped = ratio.clone() * adv_t.clone();
            let clipped = ratio.clone().clamp(1.0 - cfg.epsilon, 1.0 + cfg.epsilon) * adv_t.clone();
            let objective = unclipped.clone().min_pair(clipped.clone());
            let kl = kl_estimate(cfg.kl_estimator, logp.clone(), ref_lp.clone()) * mask.clone();
            let mut per_token = objective.neg();
            if cfg.kl_in == KlPlacement::Loss && cfg.beta > 0.0 {
                per_token = per_token + kl.clone() * cfg.beta;
            }
            // Mean over each sequence's tokens, then over sequences (GRPO).
            let loss = ((per_token * mask.clone()).sum_dim(1) / lens.clone()).mean();
            let is_clipped = clipped.lower(unclipped).float() * mask.clone();
            Ok(LossOutput::new(
                loss,
                vec![
                    ("kl", kl.detach().sum() / n_tokens),
                    ("entropy", entropy.sum() / n_tokens),
                    ("clip_ratio", is_clipped.sum() / n_tokens),
                ],
            ))
        }).await?;
    }
    let seq_kl = match early_kl {
        Some(kl) => kl,
        None => seq_kl_of(old.ok_or_else(|| Error::Invalid("the update ran no inner epoch".into()))?).await?,
    };
    metrics.insert("reward".into(), mean_reward);
    metrics.insert("reward_std".into(), reward_std);
    metrics.insert("completions/mean_length".into(), mean_len);
    let scores = raw.iter().zip(&adv).zip(&seq_kl).map(|((&reward, &advantage), &kl)| SampleScore { reward, advantage, kl: kl as f64 }).collect();
    Ok((metrics, scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_advantages() {
        let r = [1.0, 2.0, 3.0, 10.0, 10.0, 10.0];
        let g = advantages(&r, 3, Advantage::Grpo);
        assert!((g[0] + 1.0).abs() < 1e-3 && g[1].abs() < 1e-9 && (g[2] - 1.0).abs() < 1e-3);
        assert!(g[3..].iter().all(|a| a.abs() < 1e-9), "equal rewards, no signal");
        let l = advantages(&r, 3, Advantage::Rloo);
        assert_eq!(l[0], 1.0 - 2.5);
        assert_eq!(l[2], 3.0 - 1.5);
    }
}
