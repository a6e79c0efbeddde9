//! A training run: a [`RunSpec`] made real on a session. [`Run::step`] is one optimizer update
//! (one round of sampling and updates for RLHF) with its metrics by TRL's names, plus `eval/...`
//! metrics on the held-out split every `eval_steps`. The caller decides when to step, so pausing,
//! stopping and saving belong to whoever drives it.

use std::collections::HashSet;
use std::rc::Rc;

use burn::module::Module;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::detail::{StepDetail, dpo_pairs, rl_samples};
use super::policy::Policy;
use super::rewards::{RewardHead, Rewarder};
use super::session::Session;
use super::spec::{Method, MethodKind, RunSpec};
use crate::align::{Reference, parts};
use crate::backend::is_cpu;
use crate::align::dpo::{EncodedPair, RefLogps, RefLogpsCache, dpo_step, encode_pairs};
use crate::align::kto::{EncodedExample, encode_examples, kto_step};
use crate::align::reward::{RewardModel, reward_step};
use crate::align::rl::{RlConfig, rl_sample, rl_update};
use crate::align::sft::{encode_demos, sft_step};
use crate::align::train::{Batches, LossOutput, Metrics, Trainer};
use crate::io::LoadedModel;
use crate::model::{Llama, LoraConfig};
use crate::{Error, Result};

/// Encoded training examples, one kind per method.
#[derive(Clone)]
pub enum Examples {
    Pairs(Vec<EncodedPair>),
    Unpaired(Vec<EncodedExample>),
    Demos(Vec<(Vec<u32>, Vec<u32>)>),
    Prompts(Vec<(String, Vec<u32>)>),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Self::Pairs(v) => v.len(),
            Self::Unpaired(v) => v.len(),
            Self::Demos(v) => v.len(),
            Self::Prompts(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs, or none for another kind of example.
    fn pairs(&self) -> &[EncodedPair] {
        match self {
            Self::Pairs(v) => v,
            _ => &[],
        }
    }

    fn pick(&self, idx: &[usize]) -> Self {
        fn take<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            Self::Pairs(v) => Self::Pairs(take(v, idx)),
            Self::Unpaired(v) => Self::Unpaired(take(v, idx)),
            Self::Demos(v) => Self::Demos(take(v, idx)),
            Self::Prompts(v) => Self::Prompts(take(v, idx)),
        }
    }

    /// Encodes the spec's data for its method.
    fn encode(lm: &LoadedModel, spec: &RunSpec) -> Result<Self> {
        let (enc, d) = (&spec.encoding, &spec.data);
        Ok(match spec.method.kind() {
            MethodKind::Dpo | MethodKind::Reward => Self::Pairs(encode_pairs(lm, enc, &d.pairs)?),
            MethodKind::Kto => Self::Unpaired(encode_examples(lm, enc, &d.unpaired)?),
            MethodKind::Sft => Self::Demos(encode_demos(lm, enc, &d.demos)?),
            MethodKind::Rl => {
                // The prompts given, else the distinct prompts of the pairs, in order.
                let mut seen = HashSet::new();
                let from_pairs = d.pairs.iter().map(|p| p.prompt.clone());
                let prompts: Vec<String> = if d.prompts.is_empty() { from_pairs.collect() } else { d.prompts.clone() };
                let prompts = prompts.into_iter().filter(|p| seen.insert(p.clone()));
                Self::Prompts(prompts.map(|p| Ok((p.clone(), enc.prompt(lm, &p)?))).collect::<Result<_>>()?)
            }
        })
    }
}

enum Learner {
    Policy { trainer: Trainer<Llama>, reference: Reference },
    Reward { trainer: Trainer<RewardModel>, lora: LoraConfig },
}

/// What a run trained, for the session to take.
pub enum Trained {
    Policy { model: Llama, lora: Option<LoraConfig> },
    RewardModel(RewardHead),
}

/// A run's position beside its saved adapter and optimizer state (`trainer_state.json`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Steps taken (rounds for RLHF).
    pub step: usize,
    /// The adapter's parameter ids by PEFT tensor name: the optimizer state's keys.
    pub param_ids: std::collections::BTreeMap<String, u64>,
}

pub struct Run {
    pub spec: RunSpec,
    lm: Rc<LoadedModel>,
    train: Examples,
    held_out: Examples,
    learner: Learner,
    batches: Batches,
    rewarder: Option<Rewarder>,
    /// DPO's reference log-probabilities of the training and held-out pairs, when kept.
    ref_logps: Option<[RefLogpsCache; 2]>,
    /// Steps as the user counts them (rounds for RLHF).
    done: usize,
    /// The last step example by example, for the pictures beside the charts.
    detail: Option<StepDetail>,
}

impl Run {
    /// Checks the spec, encodes and splits the data, and sets up the model to train from the
    /// session's policy (or, for a reward model, a fresh head on the base weights).
    pub fn new(session: &Session, spec: RunSpec) -> Result<Self> {
        spec.validate()?;
        let examples = Examples::encode(&session.lm, &spec)?;
        Self::from_examples(session, spec, examples)
    }

    /// [`Run::new`] on examples already encoded (benchmarks feed token ids directly).
    pub fn from_examples(session: &Session, spec: RunSpec, examples: Examples) -> Result<Self> {
        spec.validate()?;
        let lm = session.lm.clone();
        if !lm.device.is_autodiff() {
            return Err(Error::Invalid("training needs the model on an autodiff device".into()));
        }
        let kind = spec.method.kind();
        let min = if kind == MethodKind::Kto { 2 } else { 1 };
        if examples.len() < min {
            return Err(Error::Invalid(format!("{} needs {}", kind.name(), kind.needs())));
        }
        let (train, held_out) = split(examples, &spec, min);
        // Dropout on a GPU draws from the device's generator (on the CPU from the trainer's seeded
        // streams): seeded, the same spec is the same run.
        lm.device.seed(spec.train.seed);
        let rewarder = match &spec.method {
            Method::Rl { reward, .. } => Some(session.rewarder(reward)?),
            _ => None,
        };
        let mut train_cfg = spec.train.clone();
        let learner = match &spec.method {
            Method::Reward(_) => {
                let lora = spec.lora.clone().expect("validated: a reward model has LoRA");
                let mut backbone = lm.model.clone();
                backbone.add_lora(&lora)?;
                let trainer = Trainer::new(RewardModel::new(backbone, spec.train.seed), train_cfg)?;
                Learner::Reward { trainer, lora }
            }
            method => {
                if let Method::Rl { cfg, .. } = method {
                    // The trainer's schedule counts optimizer steps: num_iterations per round.
                    train_cfg.max_steps *= cfg.num_iterations;
                }
                let model = session.policy.for_training(spec.lora.as_ref())?;
                let reference = Reference::for_policy(&model);
                Learner::Policy { trainer: Trainer::new(model, train_cfg)?, reference }
            }
        };
        let batch = match &spec.method {
            Method::Rl { cfg, .. } => cfg.prompts_per_step,
            _ => spec.train.per_device_train_batch_size,
        };
        let batches = Batches::new(train.len(), batch, spec.train.seed, spec.train.in_order);
        // The session's values serve a run whose reference is the loaded model.
        let store = session.policy.base_is_loaded().then(|| session.ref_logps.clone());
        let ref_logps = match &spec.method {
            Method::Dpo(c) if c.precompute_ref_log_probs => {
                Some([&train, &held_out].map(|e| RefLogpsCache::new(e.pairs(), c.share_prompt, store.clone())))
            }
            _ => None,
        };
        Ok(Self { spec, lm, train, held_out, learner, batches, rewarder, ref_logps, done: 0, detail: None })
    }

    /// Continues a stopped run at `step` (as counted by [`Run::steps_done`]): the schedule goes on
    /// from there and the batches are the ones the run would have drawn next. AdamW's moments
    /// start anew unless [`Run::restore`] brings them back.
    pub fn resume_at(&mut self, step: usize) {
        self.done = step.min(self.spec.train.max_steps);
        let per = self.rl().map_or(1, |c| c.num_iterations);
        match &mut self.learner {
            Learner::Policy { trainer, .. } => trainer.step = self.done * per,
            Learner::Reward { trainer, .. } => trainer.step = self.done,
        }
        let size = self.rl().map_or(self.spec.train.per_device_train_batch_size, |c| c.prompts_per_step);
        self.batches = Batches::new(self.train.len(), size, self.spec.train.seed, self.spec.train.in_order);
        for _ in 0..self.done * self.micro_batches() {
            self.batches.next();
        }
    }

    /// Where the run stands, to save beside its adapter: the steps taken and the optimizer's state
    /// with the ids it is keyed by. `None` for a run that keeps none so far: only LoRA policy runs
    /// do (reward models and full fine-tunes save their weights alone).
    pub fn state(&self) -> Result<Option<(RunState, Vec<u8>)>> {
        match &self.learner {
            Learner::Policy { trainer, .. } if trainer.model.has_lora() => {
                Ok(Some((RunState { step: self.done, param_ids: trainer.model.lora_param_ids() }, trainer.optimizer_state()?)))
            }
            _ => Ok(None),
        }
    }

    /// Continues exactly where [`Run::state`] left off: the session's policy must hold the adapter
    /// saved with it.
    pub fn restore(&mut self, state: &RunState, optimizer: &[u8]) -> Result<()> {
        self.resume_at(state.step);
        match &mut self.learner {
            Learner::Policy { trainer, .. } => {
                trainer.model.set_lora_param_ids(&state.param_ids)?;
                trainer.load_optimizer_state(optimizer)
            }
            Learner::Reward { .. } => Err(Error::Unsupported("reward-model runs cannot be resumed yet".into())),
        }
    }

    fn rl(&self) -> Option<&RlConfig> {
        match &self.spec.method {
            Method::Rl { cfg, .. } => Some(cfg),
            _ => None,
        }
    }

    /// Micro-batches drawn per step: each gradient-accumulation step gets its own (RLHF draws
    /// one set of prompts per round).
    fn micro_batches(&self) -> usize {
        if self.rl().is_some() { 1 } else { self.spec.train.gradient_accumulation_steps }
    }

    /// Steps as the user counts them: optimizer steps, or rounds for RLHF.
    pub fn total_steps(&self) -> usize {
        self.spec.train.max_steps
    }

    pub fn steps_done(&self) -> usize {
        self.done
    }

    pub fn is_done(&self) -> bool {
        self.done >= self.total_steps()
    }

    pub fn examples(&self) -> usize {
        self.train.len()
    }

    pub fn held_out(&self) -> usize {
        self.held_out.len()
    }

    pub fn trainable(&self) -> usize {
        match &self.learner {
            Learner::Policy { trainer, .. } => Policy::trainable(&trainer.model),
            Learner::Reward { trainer, .. } => trainer.model.backbone.num_trainable() + trainer.model.score.num_params(),
        }
    }

    /// One optimizer step (one round for RLHF), then the held-out metrics when they are due.
    pub async fn step(&mut self) -> Result<Metrics> {
        if self.is_done() {
            return Err(Error::Invalid("this run has taken all its steps".into()));
        }
        // Dropout on a GPU draws from the device's generator, seeded per step: a resumed run draws
        // what the uninterrupted one would have.
        self.lm.device.seed(self.spec.train.seed.wrapping_add((self.done as u64).wrapping_mul(0x9E37_79B9)));
        let idx: Vec<Vec<usize>> = (0..self.micro_batches()).map(|_| self.batches.next()).collect();
        let batches: Vec<Examples> = idx.iter().map(|i| self.train.pick(i)).collect();
        let pad = self.lm.tokenizer.pad_id();
        // On the CPU each example of a batch trains on a core of its own, when the method's loss
        // is a weighted mean over examples.
        let parts: Option<Vec<Vec<f64>>> =
            is_cpu(&self.lm.device).then(|| batches.iter().map(|b| part_weights(&self.spec.method, b)).collect()).flatten();
        let mut metrics = match (&mut self.learner, &self.spec.method) {
            (Learner::Policy { trainer, reference }, Method::Rl { cfg, .. }) => {
                let Examples::Prompts(prompts) = &batches[0] else { unreachable!("RLHF encodes prompts") };
                let samples = rl_sample(cfg, trainer, &self.lm.tokenizer, prompts).await?;
                let rewarder = self.rewarder.as_ref().expect("RLHF has a reward source");
                let candidates = samples.candidates(prompts);
                let rewards = rewarder.rewards(&candidates).await?;
                let (metrics, scores) = rl_update(cfg, trainer, reference, &self.lm.tokenizer, &samples, rewards).await?;
                self.detail = Some(rl_samples(&candidates, scores));
                metrics
            }
            (Learner::Policy { trainer, reference }, method) => {
                let mut kept = Vec::new();
                // Before the first step the policy may be its own reference: the step's forward
                // then gives the reference's values, kept for later epochs, and no reference
                // pass runs.
                let mut own = false;
                if let (Some([cache, _]), Examples::Pairs(all)) = (&mut self.ref_logps, &self.train) {
                    own = reference.is_policy(&trainer.model, self.done > 0).await?;
                    if !own {
                        let reference = reference.model(&trainer.model);
                        cache.fill(&reference, all, &idx.concat(), pad).await?;
                        kept = idx.iter().map(|i| cache.get(i)).collect::<Result<_>>()?;
                    }
                }
                let given = |i: usize, j: Option<usize>| match (own, kept.get(i)) {
                    (true, _) => Some(RefLogps::Own),
                    (false, Some(k)) => Some(RefLogps::Values(j.map_or(k.as_slice(), |j| &k[j..=j]))),
                    (false, None) => None,
                };
                let metrics = match &parts {
                    Some(parts) => {
                        let part = |m: &Llama, i: usize, j: usize| {
                            policy_loss(method, m, reference, given(i, Some(j)), &batches[i].pick(&[j]), pad)
                        };
                        trainer.step_parts(parts, &part).await?
                    }
                    None => {
                        let mut micro = |m: &Llama, i: usize| policy_loss(method, m, reference, given(i, None), &batches[i], pad);
                        trainer.step(&mut micro).await?
                    }
                };
                if let (true, Some([cache, _]), Examples::Pairs(all)) = (own, &mut self.ref_logps, &self.train) {
                    cache.keep_own(all, &idx.concat(), &trainer.last_examples)?;
                }
                self.detail = match method {
                    Method::Dpo(cfg) => dpo_pairs(cfg, &trainer.last_examples, &self.lm.device).await?,
                    _ => None,
                };
                metrics
            }
            (Learner::Reward { trainer, .. }, Method::Reward(cfg)) => {
                let pairs = |i: usize| match &batches[i] {
                    Examples::Pairs(pairs) => pairs,
                    _ => unreachable!("a reward model trains on pairs"),
                };
                match &parts {
                    Some(parts) => trainer.step_parts(parts, &|m, i, j| reward_step(cfg, m, &pairs(i)[j..=j], pad)).await?,
                    None => trainer.step(&mut |m, i| reward_step(cfg, m, pairs(i), pad)).await?,
                }
            }
            (Learner::Reward { .. }, _) => unreachable!("only the reward method trains a reward model"),
        };
        self.done += 1;
        metrics.insert("step".into(), self.done as f64);
        if !self.held_out.is_empty() && (self.done % self.spec.eval.eval_steps == 0 || self.is_done()) {
            metrics.extend(self.evaluate().await?);
        }
        Ok(metrics)
    }

    /// The method's loss and metrics on the held-out examples, without gradients, averaged over
    /// batches, each named `eval/...`.
    pub async fn evaluate(&mut self) -> Result<Metrics> {
        let pad = self.lm.tokenizer.pad_id();
        let n = self.held_out.len();
        let size = self.spec.train.per_device_train_batch_size.max(2);
        // Scoring only: one copy without gradients or dropout serves every batch.
        let (policy, reward_model) = match &self.learner {
            Learner::Policy { trainer, .. } => (Some(trainer.model.clone().freeze()), None),
            Learner::Reward { trainer, .. } => (None, Some(trainer.model.clone().freeze())),
        };
        let batches: Vec<Vec<usize>> = (0..n).step_by(size).map(|s| (s..(s + size).min(n)).collect()).collect();
        let mut kept = Vec::new();
        if let (Some([_, cache]), Examples::Pairs(all), Learner::Policy { trainer, reference }) =
            (&mut self.ref_logps, &self.held_out, &self.learner)
        {
            let reference = reference.model(&trainer.model);
            cache.fill(&reference, all, &batches.concat(), pad).await?;
            kept = batches.iter().map(|idx| cache.get(idx)).collect::<Result<_>>()?;
        }
        let (held_out, learner, method) = (&self.held_out, &self.learner, &self.spec.method);
        let score = |k: usize, idx: &Vec<usize>| -> Result<LossOutput> {
            let batch = held_out.pick(idx);
            match (learner, method) {
                (Learner::Reward { .. }, Method::Reward(cfg)) => {
                    let Examples::Pairs(p) = &batch else { unreachable!() };
                    reward_step(cfg, reward_model.as_ref().expect("frozen above"), p, pad)
                }
                (Learner::Policy { reference, .. }, method) => {
                    // KTO's KL estimate needs two examples: a lone last one borrows the first.
                    let batch = match (&batch, held_out) {
                        (Examples::Unpaired(b), Examples::Unpaired(all)) if b.len() < 2 => {
                            Examples::Unpaired(vec![b[0].clone(), all[0].clone()])
                        }
                        _ => batch,
                    };
                    policy_loss(method, policy.as_ref().expect("frozen above"), reference, kept.get(k).map(|v| RefLogps::Values(v)), &batch, pad)
                }
                _ => unreachable!(),
            }
        };
        // Without gradients the batches are independent: on the CPU they run at once on its cores.
        let outs = parts::run(is_cpu(&self.lm.device), batches.iter().collect(), score);
        let mut sums: Vec<(String, f64)> = Vec::new();
        for (idx, out) in batches.iter().zip(outs) {
            let weight = idx.len() as f64 / n as f64;
            let (values, _) = out?.read().await?;
            if sums.is_empty() {
                sums = values.iter().map(|(k, _)| (format!("eval/{k}"), 0.0)).collect();
            }
            for (s, (_, v)) in sums.iter_mut().zip(values) {
                s.1 += v * weight;
            }
        }
        Ok(sums.into_iter().collect())
    }

    /// The last step example by example, where the method has a picture of it.
    pub fn detail(&self) -> Option<&StepDetail> {
        self.detail.as_ref()
    }

    /// What the run has trained so far.
    pub fn trained(&self) -> Trained {
        match &self.learner {
            Learner::Policy { trainer, .. } => Trained::Policy { model: trainer.model.clone(), lora: self.spec.lora.clone() },
            Learner::Reward { trainer, lora } => {
                Trained::RewardModel(RewardHead { model: trainer.model.clone().freeze(), lora: lora.clone() })
            }
        }
    }

    /// Hands what the run has trained so far to the session: the policy, or the reward model.
    /// Generate uses it from then on (a page publishes after every step).
    pub fn publish(&self, session: &mut Session) {
        match self.trained() {
            Trained::Policy { model, lora } => session.policy.trained(model, lora),
            Trained::RewardModel(head) => session.reward_model = Some(head),
        }
    }

    /// The line a finished run adds to the policy's history: "DPO (20 steps)".
    pub fn label(&self) -> String {
        format!("{} ({} steps)", self.spec.method.name(), self.done)
    }
}

/// The loss of one micro-batch for the policy methods; `given`: where DPO's reference
/// log-probabilities of the batch come from when the run keeps them (kept values, or the policy's
/// own pass), else from a pass of `reference`.
fn policy_loss(method: &Method, model: &Llama, reference: &Reference, given: Option<RefLogps>, batch: &Examples, pad: u32) -> Result<LossOutput> {
    match (method, batch) {
        (Method::Dpo(cfg), Examples::Pairs(b)) => match given {
            Some(r) => dpo_step(cfg, model, r, b, pad),
            None => dpo_step(cfg, model, RefLogps::Model(&reference.model(model)), b, pad),
        },
        (Method::Kto(cfg), Examples::Unpaired(b)) => kto_step(cfg, model, &reference.model(model), b, pad),
        (Method::Sft, Examples::Demos(b)) => sft_step(model, b, pad),
        _ => Err(Error::Invalid("this method does not fit this data".into())),
    }
}

/// Each example's share of a micro-batch's loss, for the methods whose loss is a weighted mean
/// over examples: DPO's and a reward model's mean over pairs, SFT's over completion tokens. KTO's
/// KL estimate pairs examples of the batch with each other, so it trains the batch whole (`None`),
/// as RLHF does.
fn part_weights(method: &Method, batch: &Examples) -> Option<Vec<f64>> {
    match (method, batch) {
        (Method::Dpo(_) | Method::Reward(_), Examples::Pairs(pairs)) => Some(parts::each_alone(pairs.len())),
        (Method::Sft, Examples::Demos(demos)) => Some(parts::by_size(demos.iter().map(|(_, c)| c.len()))),
        _ => None,
    }
}

/// Shuffles (seeded) and holds out `eval_fraction` of the examples, leaving at least `min` to
/// train on. RLHF's prompts are all trained on.
fn split(examples: Examples, spec: &RunSpec, min: usize) -> (Examples, Examples) {
    let (train, eval) = split_indices(examples.len(), spec, min);
    (examples.pick(&train), examples.pick(&eval))
}

/// The indices of [`split`]: (trained on, held out), the held-out ones in the seeded order. The
/// TRL hand-off writes its `train.jsonl` and `eval.jsonl` with these, so both tools see one split.
///
/// A curriculum (`in_order`) holds out by content, not position: the examples whose seeded hash
/// is largest, so the same pairs ordered easy-first or hard-first hold out the same pairs and
/// the runs can be compared; what is trained on keeps the order it was given in.
pub fn split_indices(n: usize, spec: &RunSpec, min: usize) -> (Vec<usize>, Vec<usize>) {
    let held = if spec.method.kind() == MethodKind::Rl {
        0
    } else {
        ((n as f64 * spec.eval.eval_fraction).round() as usize).min(n.saturating_sub(min))
    };
    if held == 0 {
        return ((0..n).collect(), Vec::new());
    }
    let mut order: Vec<usize> = (0..n).collect();
    match content_keys(spec).filter(|k| spec.train.in_order && k.len() == n) {
        // Largest hashes last: they are held out.
        Some(keys) => order.sort_by_key(|&i| (keys[i], i)),
        None => order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(spec.train.seed)),
    }
    let (train, eval) = order.split_at(n - held);
    let mut train = train.to_vec();
    if spec.train.in_order {
        train.sort_unstable();
    }
    (train, eval.to_vec())
}

/// A seeded FNV-1a hash of each of the method's examples, as written (JSON).
fn content_keys(spec: &RunSpec) -> Option<Vec<u64>> {
    let hash = |v: serde_json::Result<Vec<u8>>| {
        v.ok().map(|bytes| bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ spec.train.seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)))
    };
    let d = &spec.data;
    match spec.method.kind() {
        MethodKind::Dpo | MethodKind::Reward => d.pairs.iter().map(|x| hash(serde_json::to_vec(x))).collect(),
        MethodKind::Kto => d.unpaired.iter().map(|x| hash(serde_json::to_vec(x))).collect(),
        MethodKind::Sft => d.demos.iter().map(|x| hash(serde_json::to_vec(x))).collect(),
        MethodKind::Rl => None,
    }
}
