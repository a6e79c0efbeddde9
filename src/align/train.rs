//! The training loop every method shares: AdamW, warm-up then linear/cosine decay, global
//! gradient-norm clipping, gradient accumulation, metrics per step (TRL's names), and a guard that
//! stops on a non-finite loss or gradient and keeps the last good weights.
//!
//! A method supplies the loss of one micro-batch; the trainer does the rest. Pause/resume is the
//! caller's: `step` is one optimizer update, call it when you like.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    crate::backend::read_f32,
    crate::model::Llama,
    burn::module::{Module, ModuleVisitor, Param},
    burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, OptimizerRecord},
    burn::tensor::{Bytes, Tensor},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Optimisation settings, named as in transformers' `TrainingArguments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct TrainConfig {
    /// AdamW step size (peak, after warm-up).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().learning_rate))]
    pub learning_rate: f64,
    /// AdamW weight decay.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().weight_decay))]
    pub weight_decay: f64,
    /// AdamW first-moment decay.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().adam_beta1))]
    pub adam_beta1: f64,
    /// AdamW second-moment decay.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().adam_beta2))]
    pub adam_beta2: f64,
    /// AdamW epsilon.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().adam_epsilon))]
    pub adam_epsilon: f64,
    /// Fraction of `max_steps` spent warming the learning rate up from 0.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().warmup_ratio))]
    pub warmup_ratio: f64,
    /// Learning-rate decay after warm-up.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = TrainConfig::default().lr_scheduler_type))]
    pub lr_scheduler_type: Schedule,
    /// Clip the global gradient norm to this (0 = off).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().max_grad_norm))]
    pub max_grad_norm: f64,
    /// Micro-batches whose gradients make one optimizer step.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().gradient_accumulation_steps))]
    pub gradient_accumulation_steps: usize,
    /// Examples per micro-batch.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long = "batch-size", alias = "per-device-train-batch-size", default_value_t = TrainConfig::default().per_device_train_batch_size))]
    pub per_device_train_batch_size: usize,
    /// Optimizer steps (rounds for RLHF).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().max_steps))]
    pub max_steps: usize,
    /// Seed for shuffling, LoRA initialisation, dropout and sampling: the same seed is the same run.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = TrainConfig::default().seed))]
    pub seed: u64,
    /// Take the training examples in the order given, epoch after epoch, instead of shuffling
    /// them: a curriculum (order them first, for example easy pairs first).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub in_order: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            // TRL's DPO default is 1e-6 for full fine-tuning; LoRA adapters want a larger step,
            // and a class wants to see the model move within a few steps.
            learning_rate: 5e-4,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            warmup_ratio: 0.1,
            lr_scheduler_type: Schedule::Linear,
            max_grad_norm: 1.0,
            gradient_accumulation_steps: 1,
            per_device_train_batch_size: 2,
            max_steps: 20,
            seed: 42,
            in_order: false,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.into()));
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate must be a positive number");
        }
        if self.gradient_accumulation_steps == 0 || self.per_device_train_batch_size == 0 || self.max_steps == 0 {
            return bad("batch size, accumulation steps and max_steps must be at least 1");
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad("warmup_ratio must be in [0, 1)");
        }
        Ok(())
    }

    /// Learning rate at optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        let warmup = (self.warmup_ratio * self.max_steps as f64).ceil() as usize;
        if step < warmup {
            return self.learning_rate * (step + 1) as f64 / (warmup + 1) as f64;
        }
        let span = (self.max_steps - warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / span).min(1.0);
        match self.lr_scheduler_type {
            Schedule::Constant => self.learning_rate,
            Schedule::Linear => self.learning_rate * (1.0 - progress),
            Schedule::Cosine => self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

/// One step's numbers by TRL's names (`loss`, `grad_norm`, `learning_rate`, `rewards/chosen`...).
pub type Metrics = BTreeMap<String, f64>;

/// What a method's loss returns for one micro-batch: the scalar loss (`[1]`, differentiable),
/// named scalar metrics (`[1]` each) and, for the pictures of a step, named values per example
/// (`[batch]` each), all read back with the loss in one transfer.
#[cfg(feature = "engine")]
pub struct LossOutput {
    pub loss: Tensor<1>,
    pub metrics: Vec<(&'static str, Tensor<1>)>,
    pub per_example: Vec<(&'static str, Tensor<1>)>,
}

/// Values per example by name, in batch order (micro-batches one after another).
pub type PerExample = Vec<(&'static str, Vec<f64>)>;

/// The values per example named `name`, if the step reported them.
pub fn example_column<'a>(examples: &'a PerExample, name: &str) -> Option<&'a [f64]> {
    examples.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_slice())
}

#[cfg(feature = "engine")]
impl LossOutput {
    pub fn new(loss: Tensor<1>, metrics: Vec<(&'static str, Tensor<1>)>) -> Self {
        Self { loss, metrics, per_example: Vec::new() }
    }

    /// The same values cut from the autodiff graph (after its backward pass).
    pub fn detach(self) -> Self {
        let cut = |v: Vec<(&'static str, Tensor<1>)>| v.into_iter().map(|(n, t)| (n, t.detach())).collect();
        Self { loss: self.loss.detach(), metrics: cut(self.metrics), per_example: cut(self.per_example) }
    }

    /// The loss and the metrics by name (`[("loss", l), (m1, v1), ...]`) and the values per
    /// example, read back in one transfer.
    pub async fn read(&self) -> Result<(Vec<(&'static str, f64)>, PerExample)> {
        let mut parts = vec![self.loss.clone().detach()];
        parts.extend(self.metrics.iter().map(|(_, t)| t.clone().detach()));
        parts.extend(self.per_example.iter().map(|(_, t)| t.clone().detach()));
        let values = read_f32(Tensor::cat(parts, 0)).await?;
        let names = std::iter::once("loss").chain(self.metrics.iter().map(|(n, _)| *n));
        let scalars: Vec<(&'static str, f64)> = names.zip(&values).map(|(n, v)| (n, *v as f64)).collect();
        let mut rest = &values[scalars.len()..];
        let mut per_example = Vec::with_capacity(self.per_example.len());
        for (name, t) in &self.per_example {
            let (mine, after) = rest.split_at(t.dims()[0]);
            per_example.push((*name, mine.iter().map(|&v| v as f64).collect()));
            rest = after;
        }
        Ok((scalars, per_example))
    }
}

/// The policy being trained, its optimizer and schedule.
#[cfg(feature = "engine")]
pub struct Trainer<M: Module = Llama> {
    pub model: M,
    pub cfg: TrainConfig,
    /// Optimizer steps taken.
    pub step: usize,
    optim: ModuleOptimizer,
    /// Weights before the last update: what a non-finite loss rolls back to.
    last_good: M,
    /// The last step's values per example ([`LossOutput::per_example`]), micro-batches in order.
    pub last_examples: PerExample,
}

#[cfg(feature = "engine")]
impl<M: Module> Trainer<M> {
    /// `model` must live on an autodiff device; with LoRA adapters only they train.
    pub fn new(model: M, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        if !model.devices().first().is_some_and(|d| d.is_autodiff()) {
            return Err(Error::Invalid("training needs the model on an autodiff device (Device::autodiff)".into()));
        }
        Ok(Self { last_good: model.clone(), optim: adamw(&cfg), model, cfg, step: 0, last_examples: Vec::new() })
    }

    /// The optimizer's state (AdamW's moments and step count, keyed by parameter id), as
    /// burnpack bytes: saved beside the weights, it lets a stopped run continue exactly.
    pub fn optimizer_state(&self) -> Result<Vec<u8>> {
        let bytes = self.optim.to_record().into_bytes().map_err(|e| Error::Device(format!("saving the optimizer state failed: {e:?}")))?;
        Ok(bytes.to_vec())
    }

    /// Restores [`Self::optimizer_state`]; the model's parameters must carry the ids it was
    /// saved under. A state that does not fit them is refused ([`super::resume`]).
    pub fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<()> {
        super::resume::check_optimizer_state(bytes, &super::resume::trainable(&self.model))?;
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
            .map_err(|e| Error::format(format!("the saved optimizer state is corrupt: {e:?}")))?;
        let fresh = adamw(&self.cfg);
        self.optim = std::mem::replace(&mut self.optim, fresh).load_record(record);
        Ok(())
    }

    /// Whether the model trains on the CPU: its steps' dropout then draws from seeded streams,
    /// and [`Self::step_parts`] runs its parts on the cores at once.
    fn on_cpu(&self) -> bool {
        self.model.devices().first().is_some_and(crate::backend::is_cpu)
    }

    pub fn done(&self) -> bool {
        self.step >= self.cfg.max_steps
    }

    /// One optimizer update over `gradient_accumulation_steps` micro-batches; `micro(model, i)`
    /// computes the loss of micro-batch `i`. On a non-finite loss or gradient nothing is updated,
    /// the weights go back to the last ones that gave a finite loss, and the error says so.
    /// Two reads are awaited: loss and metrics, then the gradient norm.
    ///
    /// On the CPU, LoRA's dropout draws from the run's seeded stream, each micro-batch as
    /// [`Self::step_parts`]'s part 0: 16 bits an element where burn's generator draws a float. (On
    /// a GPU the device's generator makes the mask where it is used, with no upload.)
    pub async fn step(&mut self, micro: &mut dyn FnMut(&M, usize) -> Result<LossOutput>) -> Result<Metrics> {
        let accum = self.cfg.gradient_accumulation_steps;
        let (run_seed, step) = (self.cfg.seed, self.step);
        let on_cpu = self.on_cpu();
        let mut tally = Tally::new();
        for i in 0..accum {
            let out = if on_cpu {
                crate::model::with_dropout_stream(super::parts::seed(run_seed, step, i, 0), || micro(&self.model, i))?
            } else {
                micro(&self.model, i)?
            };
            let (values, per_example) = out.read().await?;
            self.check_loss(values[0].1)?;
            tally.add(values, per_example, 1.0 / accum as f64);
            let grads = (out.loss / accum as f64).backward();
            tally.grads.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
        }
        self.update(tally).await
    }

    /// As [`Self::step`] for a loss that is a weighted mean over parts of each micro-batch:
    /// `loss(model, i, j)` is part `j` of micro-batch `i`, whose weight is `parts[i][j]` (each
    /// micro-batch's weights sum to 1). The parts of a micro-batch run at once on the CPU's cores
    /// (one after another on a GPU), each with its own dropout stream ([`super::parts`]); the
    /// result does not depend on how many threads there are.
    pub async fn step_parts(
        &mut self,
        parts: &[Vec<f64>],
        loss: &(dyn Fn(&M, usize, usize) -> Result<LossOutput> + Sync),
    ) -> Result<Metrics>
    where
        M: Send,
    {
        let accum = self.cfg.gradient_accumulation_steps;
        if parts.len() != accum || parts.iter().any(Vec::is_empty) {
            return Err(Error::Invalid(format!("{} micro-batches of parts for {accum} accumulation steps", parts.len())));
        }
        let (run_seed, step) = (self.cfg.seed, self.step);
        let at_once = self.on_cpu();
        let mut tally = Tally::new();
        for (i, weights) in parts.iter().enumerate() {
            let models = weights.iter().map(|_| super::parts::fresh_leaves(self.model.clone())).collect();
            let done = super::parts::run(at_once, models, |j, model: M| {
                crate::model::with_dropout_stream(super::parts::seed(run_seed, step, i, j), || {
                    let out = loss(&model, i, j)?;
                    let grads = (out.loss.clone() * (weights[j] / accum as f64)).backward();
                    Ok::<_, Error>((out.detach(), GradientsParams::from_grads(grads, &model)))
                })
            });
            for (j, part) in done.into_iter().enumerate() {
                let (out, grads) = part?;
                let (values, per_example) = out.read().await?;
                self.check_loss(values[0].1)?;
                tally.add(values, per_example, weights[j] / accum as f64);
                tally.grads.accumulate(&self.model, grads);
            }
        }
        self.update(tally).await
    }

    /// A non-finite loss stops the step: the weights go back to the last good ones.
    fn check_loss(&mut self, loss: f64) -> Result<()> {
        if loss.is_finite() {
            return Ok(());
        }
        self.model = self.last_good.clone();
        Err(Error::NonFinite(format!(
            "training stopped at step {}: the loss became {loss} (NaN or infinite). The last good \
             weights are kept. Try a smaller learning rate or beta, or check the data.",
            self.step + 1
        )))
    }

    /// Clips the summed gradients and takes the optimizer step.
    async fn update(&mut self, mut tally: Tally<M>) -> Result<Metrics> {
        let mut grads = tally.grads.grads();
        let norm = global_norm(&self.model, &mut grads).await?;
        if !norm.is_finite() {
            self.model = self.last_good.clone();
            return Err(Error::NonFinite(format!(
                "training stopped at step {}: the gradient norm became {norm}. The last good weights are \
                 kept. Try a smaller learning rate.",
                self.step + 1
            )));
        }
        if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
            scale_grads(&self.model, &mut grads, self.cfg.max_grad_norm / (norm + 1e-6));
        }
        let lr = self.cfg.lr_at(self.step);
        self.last_good = self.model.clone();
        let model = self.model.clone();
        self.model = self.optim.step(lr, model, grads);
        self.step += 1;
        self.last_examples = tally.examples;
        let mut m: Metrics = tally.sums.into_iter().collect();
        m.insert("grad_norm".into(), norm);
        m.insert("learning_rate".into(), lr);
        m.insert("step".into(), self.step as f64);
        Ok(m)
    }
}

/// What a step gathers from its micro-batches: summed gradients, weighted metric means and the
/// values per example in batch order.
#[cfg(feature = "engine")]
struct Tally<M: Module> {
    grads: GradientsAccumulator<M>,
    sums: Vec<(String, f64)>,
    examples: PerExample,
}

#[cfg(feature = "engine")]
impl<M: Module> Tally<M> {
    fn new() -> Self {
        Self { grads: GradientsAccumulator::new(), sums: Vec::new(), examples: Vec::new() }
    }

    fn add(&mut self, values: Vec<(&'static str, f64)>, per_example: PerExample, weight: f64) {
        if self.sums.is_empty() {
            self.sums = values.iter().map(|(n, _)| (n.to_string(), 0.0)).collect();
        }
        for (s, (_, v)) in self.sums.iter_mut().zip(&values) {
            s.1 += v * weight;
        }
        if self.examples.is_empty() {
            self.examples = per_example;
        } else {
            for ((_, all), (_, more)) in self.examples.iter_mut().zip(per_example) {
                all.extend(more);
            }
        }
    }
}

#[cfg(feature = "engine")]
fn adamw(cfg: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(cfg.adam_beta1 as f32)
        .with_beta_2(cfg.adam_beta2 as f32)
        .with_epsilon(cfg.adam_epsilon as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init()
}

/// Hands out micro-batches of example indices: shuffled each epoch (seeded), fixed size.
pub struct Batches {
    order: Vec<usize>,
    pos: usize,
    size: usize,
    rng: rand::rngs::StdRng,
    in_order: bool,
}

impl Batches {
    /// Batches of `size` indices into `n` examples: each epoch shuffled (seeded), or `in_order`.
    pub fn new(n: usize, size: usize, seed: u64, in_order: bool) -> Self {
        use rand::SeedableRng;
        // pos = n: the first call starts an epoch.
        Self { order: (0..n).collect(), pos: n, size: size.min(n).max(1), rng: rand::rngs::StdRng::seed_from_u64(seed), in_order }
    }

    pub fn next(&mut self) -> Vec<usize> {
        use rand::seq::SliceRandom;
        if self.pos + self.size > self.order.len() {
            if !self.in_order {
                self.order.shuffle(&mut self.rng);
            }
            self.pos = 0;
        }
        let out = self.order[self.pos..self.pos + self.size].to_vec();
        self.pos += self.size;
        out
    }
}

/// Global L2 norm of all gradients, read back once.
#[cfg(feature = "engine")]
async fn global_norm<M: Module>(model: &M, grads: &mut GradientsParams) -> Result<f64> {
    struct SumSq<'a> {
        grads: &'a GradientsParams,
        acc: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSq<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.acc = Some(match self.acc.take() {
                    Some(a) => a + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSq { grads, acc: None };
    model.visit(&mut v);
    match v.acc {
        Some(t) => Ok((read_f32(t).await?[0] as f64).sqrt()),
        None => Err(Error::Invalid("no parameter received a gradient: is anything trainable?".into())),
    }
}

#[cfg(feature = "engine")]
fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        let cfg = TrainConfig { learning_rate: 1.0, warmup_ratio: 0.2, max_steps: 10, ..Default::default() };
        let lrs: Vec<f64> = (0..10).map(|s| cfg.lr_at(s)).collect();
        assert!(lrs[0] < lrs[1] && lrs[1] < 1.0, "{lrs:?}");
        assert_eq!(lrs[2], 1.0);
        assert!(lrs.windows(2).skip(2).all(|w| w[1] < w[0]), "{lrs:?}");
        let cos = TrainConfig { lr_scheduler_type: Schedule::Cosine, ..cfg };
        assert!((cos.lr_at(2) - 1.0).abs() < 1e-12);
        assert!(cos.lr_at(6) < 0.6 && cos.lr_at(6) > 0.4);
    }
}
