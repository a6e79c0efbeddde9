//! Direct Preference Optimization (Rafailov et al. 2023) and its TRL variants. With
//! `h = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l))`:
//! - `sigmoid`: `-(1-ε) log σ(βh) - ε log σ(-βh)` (ε = label_smoothing, cDPO)
//! - `robust`: `(-(1-ε) log σ(βh) + ε log σ(-βh)) / (1 - 2ε)` (Chowdhury et al. 2024)
//! - `hinge`: `relu(1 - βh)` (SLiC)
//! - `ipo`: `(h - 1/(2β))²` on length-normalised log-probs (Azar et al. 2023)

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::{Encoding, parts, train::{LossOutput, PerExample, example_column}},
    std::{cell::RefCell, collections::HashMap, rc::Rc},
    crate::backend::read_f32,
    crate::data::Preference,
    crate::logps::{ScoringBatch, SharedPromptLogps, sequence_logps},
    crate::model::Llama,
    crate::LoadedModel,
    burn::tensor::Tensor,
    burn::tensor::activation::{log_sigmoid, relu},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum DpoLossType {
    Sigmoid,
    Robust,
    Ipo,
    Hinge,
}

impl std::str::FromStr for DpoLossType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sigmoid" => Ok(Self::Sigmoid),
            "robust" => Ok(Self::Robust),
            "ipo" => Ok(Self::Ipo),
            "hinge" => Ok(Self::Hinge),
            o => Err(Error::Invalid(format!("unknown DPO loss '{o}'; use sigmoid, robust, ipo or hinge"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct DpoConfig {
    /// How far the policy may move from the reference: small beta = bolder changes.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DpoConfig::default().beta))]
    pub beta: f64,
    /// The DPO loss: sigmoid (the paper), robust, ipo or hinge.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = DpoConfig::default().loss_type))]
    pub loss_type: DpoLossType,
    /// Assumed fraction of flipped labels (conservative DPO).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DpoConfig::default().label_smoothing))]
    pub label_smoothing: f64,
    /// Compute the reference model's log-probabilities of each pair once and keep them for the
    /// run (TRL's option of this name): later epochs and evaluations skip the reference pass,
    /// and so does a first step from fresh adapters (the policy is then its own reference).
    /// The reference does not change during a run, so the loss is the same either way.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DpoConfig::default().precompute_ref_log_probs,
        action = clap::ArgAction::Set, value_name = "BOOL"))]
    pub precompute_ref_log_probs: bool,
    /// Run each pair's prompt once for both answers (`prompt | chosen | rejected` in one row,
    /// each answer seeing only the prompt and itself): the same log-probabilities, a quarter
    /// less work when prompts are as long as answers. TRL runs the prompt twice (false). With
    /// LoRA dropout on, the prompt's positions get one dropout draw for both answers instead of
    /// one each, so the two ways differ as two seeds do; without dropout they agree to rounding.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DpoConfig::default().share_prompt,
        action = clap::ArgAction::Set, value_name = "BOOL"))]
    pub share_prompt: bool,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { beta: 0.1, loss_type: DpoLossType::Sigmoid, label_smoothing: 0.0, precompute_ref_log_probs: true, share_prompt: true }
    }
}

/// Where each pair sits on the loss's horizontal axis, from the four summed log-probabilities
/// (`[batch]` each) and the completion lengths (for IPO's normalisation): `βh` (TRL's
/// `rewards/margins` per pair), or for IPO the length-normalised `h`. The per-pair loss is
/// [`dpo_loss_of_margin`] of it.
#[cfg(feature = "engine")]
pub fn dpo_margins(
    cfg: &DpoConfig,
    policy_chosen: Tensor<1>,
    policy_rejected: Tensor<1>,
    ref_chosen: Tensor<1>,
    ref_rejected: Tensor<1>,
    len_chosen: Tensor<1>,
    len_rejected: Tensor<1>,
) -> Tensor<1> {
    if cfg.loss_type == DpoLossType::Ipo {
        return (policy_chosen - ref_chosen) / len_chosen - (policy_rejected - ref_rejected) / len_rejected;
    }
    ((policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)) * cfg.beta
}

/// The loss as a function of the margin `x` from [`dpo_margins`]: the formulas at the top of
/// this file. The page draws it as a curve with the batch's pairs on it.
#[cfg(feature = "engine")]
pub fn dpo_loss_of_margin(cfg: &DpoConfig, x: Tensor<1>) -> Tensor<1> {
    let (beta, eps) = (cfg.beta, cfg.label_smoothing);
    match cfg.loss_type {
        DpoLossType::Sigmoid => log_sigmoid(x.clone()).neg() * (1.0 - eps) - log_sigmoid(x.neg()) * eps,
        DpoLossType::Robust => (log_sigmoid(x.clone()).neg() * (1.0 - eps) + log_sigmoid(x.neg()) * eps) / (1.0 - 2.0 * eps),
        DpoLossType::Hinge => relu(x.neg() + 1.0),
        DpoLossType::Ipo => (x - 1.0 / (2.0 * beta)).powi_scalar(2),
    }
}

/// Token ids of preference pairs, ready for scoring.
#[cfg(feature = "engine")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EncodedPair {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

#[cfg(feature = "engine")]
impl EncodedPair {
    /// `[prompt, chosen, rejected]`, as a packed batch takes them.
    pub fn parts(&self) -> [&[u32]; 3] {
        [&self.prompt, &self.chosen, &self.rejected]
    }
}

#[cfg(feature = "engine")]
pub fn encode_pairs(lm: &LoadedModel, enc: &Encoding, pairs: &[Preference]) -> Result<Vec<EncodedPair>> {
    pairs
        .iter()
        .map(|p| {
            Ok(EncodedPair {
                prompt: enc.prompt(lm, &p.prompt)?,
                chosen: enc.completion(lm, &p.chosen)?,
                rejected: enc.completion(lm, &p.rejected)?,
            })
        })
        .collect()
}

/// Where a DPO step gets the reference model's log-probabilities: a forward pass of the reference
/// (adapters off, or a frozen copy), values kept from an earlier pass ([`RefLogpsCache`]), or the
/// policy's own pass while the policy is its reference.
#[cfg(feature = "engine")]
#[derive(Clone, Copy)]
pub enum RefLogps<'a> {
    Model(&'a Llama),
    /// The policy computes what its reference does (before its first step: fresh adapters add
    /// zero, a full fine-tune is still its frozen copy), so its own log-probabilities, detached,
    /// are the reference's: the step runs no reference pass. The step reports them per pair
    /// ([`OWN_CHOSEN`], [`OWN_REJECTED`]) for a run to keep.
    Own,
    /// Summed log-probabilities of each pair's `[chosen, rejected]` completion, in batch order.
    Values(&'a [[f32; 2]]),
}

/// The names of the per-pair values a step with [`RefLogps::Own`] reports: the reference's summed
/// log-probabilities of the chosen and the rejected answer.
#[cfg(feature = "engine")]
pub const OWN_CHOSEN: &str = "ref_logps/chosen";
#[cfg(feature = "engine")]
pub const OWN_REJECTED: &str = "ref_logps/rejected";

/// Pairs ready for the model: chosen and rejected as sequences of their own (TRL's way), or
/// packed with their prompt once ([`SharedPromptLogps`]). Either gives each answer's summed
/// log-probabilities chosen first, `[2 pairs]`.
#[cfg(feature = "engine")]
enum PairBatch {
    Apart(ScoringBatch),
    Shared(SharedPromptLogps),
}

#[cfg(feature = "engine")]
impl PairBatch {
    fn new(model: &Llama, pairs: &[EncodedPair], pad_id: u32, share_prompt: bool) -> Result<Self> {
        if share_prompt {
            let ids: Vec<[&[u32]; 3]> = pairs.iter().map(EncodedPair::parts).collect();
            return Ok(Self::Shared(SharedPromptLogps::new(model, &ids, pad_id)?));
        }
        let seqs: Vec<(Vec<u32>, Vec<u32>)> = pairs
            .iter()
            .map(|p| (p.prompt.clone(), p.chosen.clone()))
            .chain(pairs.iter().map(|p| (p.prompt.clone(), p.rejected.clone())))
            .collect();
        Ok(Self::Apart(ScoringBatch::new(model, &seqs, pad_id)?))
    }

    fn logps(&self, model: &Llama) -> Tensor<1> {
        match self {
            Self::Apart(sb) => sequence_logps(model, sb),
            Self::Shared(sp) => sp.logps(model),
        }
    }

    fn completion_lens(&self) -> &[usize] {
        match self {
            Self::Apart(sb) => &sb.completion_lens,
            Self::Shared(sp) => &sp.completion_lens,
        }
    }
}

/// The DPO loss of one micro-batch of pairs: chosen and rejected go through the policy in one
/// batch, and through the reference without gradients unless its values are given.
#[cfg(feature = "engine")]
pub fn dpo_step(cfg: &DpoConfig, policy: &Llama, reference: RefLogps, pairs: &[EncodedPair], pad_id: u32) -> Result<LossOutput> {
    let b = pairs.len();
    let device = policy.device();
    let batch = PairBatch::new(policy, pairs, pad_id, cfg.share_prompt)?;
    let logps = batch.logps(policy);
    let ref_logps = match reference {
        RefLogps::Model(m) => batch.logps(m).detach(),
        RefLogps::Own => logps.clone().detach(),
        RefLogps::Values(v) if v.len() == b => {
            let flat: Vec<f32> = v.iter().map(|r| r[0]).chain(v.iter().map(|r| r[1])).collect();
            Tensor::<1>::from_floats(flat.as_slice(), &device)
        }
        RefLogps::Values(v) => {
            return Err(Error::Invalid(format!("{} reference values for a batch of {b} pairs", v.len())));
        }
    };
    let lens: Vec<f32> = batch.completion_lens().iter().map(|&l| l.max(1) as f32).collect();
    let lens = Tensor::<1>::from_floats(lens.as_slice(), &device);

    let (pc, pr) = (logps.clone().narrow(0, 0, b), logps.narrow(0, b, b));
    let (rc, rr) = (ref_logps.clone().narrow(0, 0, b), ref_logps.narrow(0, b, b));
    let margins = dpo_margins(cfg, pc.clone(), pr.clone(), rc.clone(), rr.clone(), lens.clone().narrow(0, 0, b), lens.narrow(0, b, b));
    let losses = dpo_loss_of_margin(cfg, margins.clone());

    let chosen_rewards = (pc.clone().detach() - rc.clone()) * cfg.beta;
    let rejected_rewards = (pr.clone().detach() - rr.clone()) * cfg.beta;
    let accuracies = chosen_rewards.clone().greater(rejected_rewards.clone()).float();
    // Each pair of the batch as a point on the loss curve; with its own reference, the values a
    // run keeps.
    let mut per_example = vec![("margin", margins.detach()), ("loss", losses.clone().detach())];
    if matches!(reference, RefLogps::Own) {
        per_example.extend([(OWN_CHOSEN, rc), (OWN_REJECTED, rr)]);
    }
    Ok(LossOutput {
        loss: losses.clone().mean(),
        metrics: vec![
            ("rewards/chosen", chosen_rewards.clone().mean()),
            ("rewards/rejected", rejected_rewards.clone().mean()),
            ("rewards/accuracies", accuracies.mean()),
            ("rewards/margins", (chosen_rewards - rejected_rewards).mean()),
            ("logps/chosen", pc.detach().mean()),
            ("logps/rejected", pr.detach().mean()),
        ],
        per_example,
    })
}

/// The reference's log-probabilities of a set of pairs, each computed the first time its pair is
/// drawn and kept (TRL computes them all before training; drawing them lazily gives the same
/// numbers without a long wait before the first step), or kept from a first step whose policy was
/// its own reference ([`RefLogps::Own`]). Valid while the reference is unchanged:
/// a run owns one, and its reference is fixed for the run. Given a [`RefLogpsStore`], it starts
/// from the values the store keeps and gives the store each value it gets, for later runs with
/// the same reference.
#[cfg(feature = "engine")]
pub struct RefLogpsCache {
    values: Vec<Option<[f32; 2]>>,
    /// Score each pair with its prompt once ([`DpoConfig::share_prompt`]).
    share_prompt: bool,
    store: Option<Rc<RefCell<RefLogpsStore>>>,
}

#[cfg(feature = "engine")]
impl RefLogpsCache {
    /// A cache of `pairs` (the run's pairs, in its order), holding what `store` keeps of them.
    pub fn new(pairs: &[EncodedPair], share_prompt: bool, store: Option<Rc<RefCell<RefLogpsStore>>>) -> Self {
        let values = match &store {
            Some(store) => {
                let mut store = store.borrow_mut();
                pairs.iter().map(|pair| store.get(share_prompt, pair)).collect()
            }
            None => vec![None; pairs.len()],
        };
        Self { values, share_prompt, store }
    }

    fn set(&mut self, i: usize, pair: &EncodedPair, v: [f32; 2]) {
        self.values[i] = Some(v);
        if let Some(store) = &self.store {
            store.borrow_mut().insert(self.share_prompt, pair, v);
        }
    }

    /// Computes the values of the pairs `idx` names that are not kept yet ([`pair_logps`]).
    pub async fn fill(&mut self, reference: &Llama, pairs: &[EncodedPair], idx: &[usize], pad_id: u32) -> Result<()> {
        let missing: Vec<usize> = idx.iter().copied().filter(|&i| self.values[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (&i, v) in missing.iter().zip(pair_logps(reference, pairs, &missing, pad_id, self.share_prompt).await?) {
            self.set(i, &pairs[i], v);
        }
        Ok(())
    }

    /// Keeps the values a step with its own reference reported ([`RefLogps::Own`]) for the pairs
    /// `idx` of `pairs`, in the step's order.
    pub fn keep_own(&mut self, pairs: &[EncodedPair], idx: &[usize], examples: &PerExample) -> Result<()> {
        let (Some(chosen), Some(rejected)) = (example_column(examples, OWN_CHOSEN), example_column(examples, OWN_REJECTED)) else {
            return Err(Error::Invalid("the step did not report its reference values".into()));
        };
        if chosen.len() != idx.len() || rejected.len() != idx.len() {
            return Err(Error::Invalid(format!("{} reference values for {} pairs", chosen.len(), idx.len())));
        }
        for ((&i, &c), &r) in idx.iter().zip(chosen).zip(rejected) {
            let pair = pairs.get(i).ok_or_else(|| Error::Invalid(format!("pair {i} is not in this run")))?;
            self.set(i, pair, [c as f32, r as f32]);
        }
        Ok(())
    }

    /// The kept values of `pairs[i]` for each `i` in `idx` ([`Self::fill`] first).
    pub fn get(&self, idx: &[usize]) -> Result<Vec<[f32; 2]>> {
        idx.iter().map(|&i| self.values[i].ok_or_else(|| Error::Invalid(format!("pair {i}'s reference values were not computed")))).collect()
    }
}

/// The summed log-probabilities of `[chosen, rejected]` under `model` of each pair `idx` names,
/// in `idx`'s order, without gradients: on the CPU a pair on each core at once (nothing is
/// shared), on a GPU in one batch.
#[cfg(feature = "engine")]
pub async fn pair_logps(model: &Llama, pairs: &[EncodedPair], idx: &[usize], pad_id: u32, share_prompt: bool) -> Result<Vec<[f32; 2]>> {
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let at_once = crate::backend::is_cpu(&model.device());
    // Positions in `idx`, grouped into batches.
    let groups: Vec<Vec<usize>> = if at_once { (0..idx.len()).map(|k| vec![k]).collect() } else { vec![(0..idx.len()).collect()] };
    let model = model.for_inference();
    let sums = parts::run(at_once, groups.clone(), |_, group| {
        let batch: Vec<EncodedPair> = group.iter().map(|&k| pairs[idx[k]].clone()).collect();
        Ok(PairBatch::new(&model, &batch, pad_id, share_prompt)?.logps(&model))
    });
    let mut values = vec![[0.0; 2]; idx.len()];
    for (group, sums) in groups.iter().zip(sums) {
        let sums = read_f32(sums?).await?;
        let n = group.len();
        for (j, &k) in group.iter().enumerate() {
            values[k] = [sums[j], sums[n + j]];
        }
    }
    Ok(values)
}

/// Reference log-probabilities kept beyond one run, for every later run whose reference is the
/// same model (TRL keeps them with the dataset): a session keeps one for its loaded model, and a
/// run reads it only while its reference is that model ([`crate::lab::Policy::base_is_loaded`]).
/// Keyed by a pair's token ids and how it is scored ([`DpoConfig::share_prompt`]), so another
/// template or tokenizer makes other keys. Its keys hold at most [`RefLogpsStore::MAX_TOKENS`]
/// token ids: past that a run keeps its values for itself alone.
#[cfg(feature = "engine")]
#[derive(Default)]
pub struct RefLogpsStore {
    /// By `share_prompt` (`false`, `true`), then by pair.
    values: [HashMap<EncodedPair, [f32; 2]>; 2],
    tokens: usize,
    served: usize,
}

#[cfg(feature = "engine")]
impl RefLogpsStore {
    /// 4 Mi token ids (16 MiB of keys): far above a class's datasets.
    pub const MAX_TOKENS: usize = 1 << 22;

    /// Pairs with values kept, counting each way of scoring apart.
    pub fn len(&self) -> usize {
        self.values.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values handed to runs so far: reference passes saved.
    pub fn served(&self) -> usize {
        self.served
    }

    /// Whether `pair` has values kept, without handing them to a run (not [`Self::served`]).
    pub fn contains(&self, share_prompt: bool, pair: &EncodedPair) -> bool {
        self.values[usize::from(share_prompt)].contains_key(pair)
    }

    fn get(&mut self, share_prompt: bool, pair: &EncodedPair) -> Option<[f32; 2]> {
        let v = self.values[usize::from(share_prompt)].get(pair).copied();
        self.served += usize::from(v.is_some());
        v
    }

    /// Keeps `v` for `pair`, in place of any value kept before: a first step's own values
    /// ([`RefLogps::Own`]) replace those scored ahead of the run ([`crate::lab::ReferenceAhead`]),
    /// so that later runs read what they would have read had nothing been scored ahead.
    fn insert(&mut self, share_prompt: bool, pair: &EncodedPair, v: [f32; 2]) {
        let tokens = pair.prompt.len().saturating_add(pair.chosen.len()).saturating_add(pair.rejected.len());
        let map = &mut self.values[usize::from(share_prompt)];
        if let Some(kept) = map.get_mut(pair) {
            *kept = v;
            return;
        }
        if self.tokens.saturating_add(tokens) > Self::MAX_TOKENS {
            return;
        }
        self.tokens += tokens;
        map.insert(pair.clone(), v);
    }
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    use super::*;

    /// A first step's own values replace those scored ahead of its run (`crate::lab::ahead`).
    #[test]
    fn a_later_value_replaces_the_kept_one_and_adds_no_tokens() {
        let pair = EncodedPair { prompt: vec![1, 2], chosen: vec![3], rejected: vec![4] };
        let mut store = RefLogpsStore::default();
        store.insert(false, &pair, [-1.0, -2.0]);
        store.insert(false, &pair, [-1.5, -2.5]);
        assert_eq!(store.get(false, &pair), Some([-1.5, -2.5]));
        assert_eq!(store.get(true, &pair), None, "scored with its prompt shared, it is another key");
        assert_eq!((store.len(), store.tokens), (1, 4));
    }
}
