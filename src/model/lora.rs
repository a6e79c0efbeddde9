//! LoRA (Hu et al. 2021) as PEFT does it: `y = x W + (alpha / r) * dropout(x) A B`, with B zero at
//! the start so the adapted model equals the base, base weights frozen, adapters switchable (the
//! DPO/RL reference model is the base with adapters off: one copy of the weights), and
//! merge/unmerge into the base.
//!
//! burn 0.22 has `Module::apply_lora`, but it folds the adapter into `param.val()`, with no
//! dropout, no way to switch adapters off for a reference pass, and no PEFT naming, so we keep
//! our own small layer.

#[cfg(feature = "engine")]
use {
    burn::module::{Module, Param},
    burn::nn::{Dropout, DropoutConfig, Linear},
    burn::tensor::{Device, Tensor, TensorData},
    super::{linear, matmul},
    rand::rngs::StdRng,
    rand::{Rng, RngCore, SeedableRng},
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The linear layers a Llama block has, by their transformers names.
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct LoraConfig {
    /// Rank of the adapter matrices.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long = "lora-r", default_value_t = LoraConfig::default().r))]
    pub r: usize,
    /// Scale of the update: alpha / r (or alpha / sqrt(r) with rsLoRA).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = LoraConfig::default().lora_alpha))]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input while training.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = LoraConfig::default().lora_dropout))]
    pub lora_dropout: f64,
    /// Projections that get an adapter (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_delimiter = ',', default_values_t = LoraConfig::default().target_modules))]
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub use_rslora: bool,
    /// Seed for A's initialisation.
    #[serde(default)]
    #[cfg_attr(not(target_arch = "wasm32"), arg(skip))]
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
            seed: 0,
        }
    }
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        if self.use_rslora { self.lora_alpha / (self.r as f64).sqrt() } else { self.lora_alpha / self.r as f64 }
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 || self.r > 4096 {
            return Err(Error::Invalid(format!("LoRA rank r = {} must be between 1 and 4096", self.r)));
        }
        // 1e308 would load, and every output would be NaN.
        if !(self.lora_alpha.is_finite() && self.lora_alpha > 0.0 && self.lora_alpha <= 1e6) {
            return Err(Error::Invalid(format!("lora_alpha = {} must be a positive number up to 1e6", self.lora_alpha)));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::Invalid("lora_dropout must be in [0, 1)".into()));
        }
        if self.target_modules.is_empty() {
            return Err(Error::Invalid("choose at least one LoRA target module".into()));
        }
        for t in &self.target_modules {
            if !TARGETS.contains(&t.as_str()) {
                return Err(Error::Invalid(format!("unknown LoRA target '{t}'; choose from {}", TARGETS.join(", "))));
            }
        }
        Ok(())
    }
}

/// The low-rank update of one linear layer, in burn's `[in, out]` orientation:
/// `a: [in, r]`, `b: [r, out]` (PEFT stores `lora_A.weight: [r, in]`, `lora_B.weight: [out, r]`).
#[cfg(feature = "engine")]
#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
    pub scaling: f64,
    pub dropout: Dropout,
}

#[cfg(feature = "engine")]
impl LoraAdapter {
    /// A as PEFT initialises it (kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))),
    /// B zero.
    pub fn init(d_in: usize, d_out: usize, cfg: &LoraConfig, rng: &mut StdRng, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * cfg.r).map(|_| rng.random_range(-bound..bound)).collect();
        Self::from_parts(
            Tensor::from_data(TensorData::new(a, [d_in, cfg.r]), device),
            Tensor::zeros([cfg.r, d_out], device),
            cfg,
        )
    }

    pub fn from_parts(a: Tensor<2>, b: Tensor<2>, cfg: &LoraConfig) -> Self {
        Self {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scaling: cfg.scaling(),
            dropout: DropoutConfig::new(cfg.lora_dropout).init(),
        }
    }

    /// `scaling * A B`, `[in, out]`: what merging adds to the base weight.
    pub fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()) * self.scaling
    }

    /// `x A B s` for rows `x [n, d_in]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        matmul(matmul(self.dropped(x), self.a.val()), self.b.val()) * self.scaling
    }

    /// Inverted dropout, `x * m / (1 - p)` with `m ~ Bernoulli(1 - p)`, while training: the mask
    /// from this thread's dropout stream when one is set, else from the device's generator.
    fn dropped<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let p = self.dropout.prob;
        if p == 0.0 || !self.dropout.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        DROPOUT_STREAM.with(|s| match s.borrow_mut().as_mut() {
            Some(rng) => {
                let mask = dropout_mask(rng, x.shape().num_elements(), p);
                let mask = Tensor::from_data(TensorData::new(mask, x.shape()), &x.device());
                x * mask
            }
            None => self.dropout.forward(x),
        })
    }
}

/// Inverted dropout's mask for `n` elements: `1 / (1 - p)` where one is kept, 0 where dropped.
/// Each element reads 16 bits of the stream, four a draw (`p` is then kept to 1 part in 65536):
/// the stream's ChaCha runs a quarter as long as with a float a draw, and in the page, without
/// its SIMD, those draws were a few percent of a training step.
#[cfg(feature = "engine")]
fn dropout_mask(rng: &mut StdRng, n: usize, p: f64) -> Vec<f32> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    // An element is kept when its 16 bits are below this.
    let below = (keep * 65536.0).round() as u64;
    let mut mask = vec![0.0; n];
    for four in mask.chunks_mut(4) {
        let bits = rng.next_u64();
        for (i, m) in four.iter_mut().enumerate() {
            if (bits >> (16 * i)) & 0xffff < below {
                *m = scale;
            }
        }
    }
    mask
}

#[cfg(feature = "engine")]
thread_local!(static DROPOUT_STREAM: std::cell::RefCell<Option<StdRng>> = const { std::cell::RefCell::new(None) });

/// Runs `f` with LoRA's dropout drawn from a stream of this thread's own, seeded with `seed`:
/// parts of a batch trained at once on several threads each draw their own masks, where the
/// device's one generator would hand them out in whichever order the threads asked.
#[cfg(feature = "engine")]
pub fn with_dropout_stream<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            DROPOUT_STREAM.with(|s| *s.borrow_mut() = None);
        }
    }
    DROPOUT_STREAM.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
    let _unset = Unset;
    f()
}

/// A linear layer that may carry a LoRA adapter.
#[cfg(feature = "engine")]
#[derive(Module, Debug)]
pub struct LoraLinear {
    pub base: Linear,
    pub lora: Option<LoraAdapter>,
    /// Adapter applied in forward (off for the reference model).
    pub enabled: bool,
    /// The adapter is already added into `base` (then forward must not add it again).
    pub merged: bool,
}

#[cfg(feature = "engine")]
impl LoraLinear {
    pub fn new(base: Linear) -> Self {
        Self { base, lora: None, enabled: true, merged: false }
    }

    /// `y = x W (+ the adapter's x A B s)` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // As one matrix of rows: burn's CPU backend runs a 3-D input as one product per batch
        // entry, packing the weight for each of them again.
        let mut dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let x: Tensor<2> = x.reshape([rows, dims[D - 1]]);
        let y = linear(x.clone(), &self.base);
        let y = match &self.lora {
            Some(lora) if self.enabled && !self.merged => y + lora.forward(x),
            _ => y,
        };
        dims[D - 1] = y.dims()[1];
        y.reshape(dims)
    }

    /// The `[d_in, d_out]` weight forward effectively applies: the base plus an active,
    /// unmerged adapter.
    pub fn effective_weight(&self) -> Tensor<2> {
        match &self.lora {
            Some(lora) if self.enabled && !self.merged => self.base.weight.val() + lora.delta(),
            _ => self.base.weight.val(),
        }
    }

    /// `[d_in, d_out]`
    pub fn dims(&self) -> [usize; 2] {
        self.base.weight.dims()
    }

    /// Adds the adapter into the base weight (PEFT `merge_adapter`).
    pub fn merge(&mut self) {
        if let (Some(lora), false) = (&self.lora, self.merged) {
            let delta = lora.delta().detach();
            self.base.weight = self.base.weight.clone().map(|w| w + delta);
            self.merged = true;
        }
    }

    /// Subtracts a merged adapter back out (PEFT `unmerge_adapter`).
    pub fn unmerge(&mut self) {
        if let (Some(lora), true) = (&self.lora, self.merged) {
            let delta = lora.delta().detach();
            self.base.weight = self.base.weight.clone().map(|w| w - delta);
            self.merged = false;
        }
    }
}

/// Seeded generator for adapter initialisation.
#[cfg(feature = "engine")]
pub fn lora_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x10_7a)
}

// ---- LoRA on a whole Llama ------------------------------------------------------------------------

#[cfg(feature = "engine")]
use super::Llama;

#[cfg(feature = "engine")]
impl Llama {
    /// Every adaptable linear layer with its transformers module path
    /// (`model.layers.{i}.self_attn.q_proj`, ...).
    pub fn linears_mut(&mut self) -> Vec<(String, &'static str, &mut LoraLinear)> {
        let mut out = Vec::new();
        for (i, b) in self.layers.iter_mut().enumerate() {
            let a = &mut b.self_attn;
            let m = &mut b.mlp;
            for (name, lin) in [
                ("q_proj", &mut a.q_proj),
                ("k_proj", &mut a.k_proj),
                ("v_proj", &mut a.v_proj),
                ("o_proj", &mut a.o_proj),
            ] {
                out.push((format!("model.layers.{i}.self_attn.{name}"), name, lin));
            }
            for (name, lin) in [("gate_proj", &mut m.gate_proj), ("up_proj", &mut m.up_proj), ("down_proj", &mut m.down_proj)] {
                out.push((format!("model.layers.{i}.mlp.{name}"), name, lin));
            }
        }
        out
    }

    pub fn linears(&self) -> Vec<(String, &LoraLinear)> {
        let mut out = Vec::new();
        for (i, b) in self.layers.iter().enumerate() {
            let a = &b.self_attn;
            let m = &b.mlp;
            for (name, lin) in [("q_proj", &a.q_proj), ("k_proj", &a.k_proj), ("v_proj", &a.v_proj), ("o_proj", &a.o_proj)] {
                out.push((format!("model.layers.{i}.self_attn.{name}"), lin));
            }
            for (name, lin) in [("gate_proj", &m.gate_proj), ("up_proj", &m.up_proj), ("down_proj", &m.down_proj)] {
                out.push((format!("model.layers.{i}.mlp.{name}"), lin));
            }
        }
        out
    }

    /// Freezes every base weight and adds fresh adapters (B = 0) to the target layers.
    pub fn add_lora(&mut self, cfg: &LoraConfig) -> Result<()> {
        cfg.validate()?;
        if self.has_lora() {
            return Err(Error::Invalid("this model already has LoRA adapters; remove them first".into()));
        }
        *self = self.clone().no_grad();
        let device = self.device();
        let mut rng = lora_rng(cfg.seed);
        for (_, name, lin) in self.linears_mut() {
            if cfg.target_modules.iter().any(|t| t == name) {
                let [d_in, d_out] = lin.dims();
                lin.lora = Some(LoraAdapter::init(d_in, d_out, cfg, &mut rng, &device));
                lin.enabled = true;
                lin.merged = false;
            }
        }
        Ok(())
    }

    pub fn has_lora(&self) -> bool {
        self.linears().iter().any(|(_, l)| l.lora.is_some())
    }

    /// Whether the model has adapters and every one's B is exactly zero (as [`Self::add_lora`]
    /// makes them), so that each adds exactly nothing. Reads the B matrices back (a NaN is not zero).
    pub async fn adapters_add_zero(&self) -> Result<bool> {
        let peaks: Vec<Tensor<1>> =
            self.linears().iter().filter_map(|(_, l)| l.lora.as_ref()).map(|l| l.b.val().detach().abs().max()).collect();
        if peaks.is_empty() {
            return Ok(false);
        }
        let peak = crate::backend::read_f32(Tensor::cat(peaks, 0).max()).await?;
        Ok(peak.first() == Some(&0.0))
    }

    /// Switches adapters on (policy) or off (reference model).
    pub fn set_adapters_enabled(&mut self, enabled: bool) {
        for (_, _, lin) in self.linears_mut() {
            lin.enabled = enabled;
        }
    }

    /// A copy with adapters off: the reference model, sharing every base weight.
    pub fn reference(&self) -> Self {
        let mut r = self.clone();
        r.set_adapters_enabled(false);
        r
    }

    pub fn merge_lora(&mut self) {
        for (_, _, lin) in self.linears_mut() {
            lin.merge();
        }
    }

    pub fn unmerge_lora(&mut self) {
        for (_, _, lin) in self.linears_mut() {
            lin.unmerge();
        }
    }

    /// Drops all adapters (unmerging first), leaving the base model.
    pub fn remove_lora(&mut self) {
        for (_, _, lin) in self.linears_mut() {
            lin.unmerge();
            lin.lora = None;
        }
    }

    /// Adapter tensors under PEFT's names and orientation: `...lora_A.weight: [r, in]`,
    /// `...lora_B.weight: [out, r]`.
    pub fn lora_tensors(&self) -> Vec<(String, Tensor<2>)> {
        let mut out = Vec::new();
        for (path, lin) in self.linears() {
            if let Some(l) = &lin.lora {
                out.push((format!("base_model.model.{path}.lora_A.weight"), l.a.val().transpose()));
                out.push((format!("base_model.model.{path}.lora_B.weight"), l.b.val().transpose()));
            }
        }
        out
    }

    /// Each adapter matrix's parameter id under its PEFT name (see [`Llama::lora_tensors`]): what
    /// an optimizer's state is keyed by.
    pub fn lora_param_ids(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for (path, lin) in self.linears() {
            if let Some(l) = &lin.lora {
                out.insert(format!("base_model.model.{path}.lora_A.weight"), l.a.id.val());
                out.insert(format!("base_model.model.{path}.lora_B.weight"), l.b.id.val());
            }
        }
        out
    }

    /// Gives the adapter matrices the ids `ids` names (from [`Llama::lora_param_ids`] of the run
    /// that saved an optimizer state), so that state applies to them again.
    pub fn set_lora_param_ids(&mut self, ids: &std::collections::BTreeMap<String, u64>) -> Result<()> {
        let mut set = 0;
        for (path, _, lin) in self.linears_mut() {
            if let Some(l) = &mut lin.lora {
                for (part, param) in [("lora_A", &mut l.a), ("lora_B", &mut l.b)] {
                    let key = format!("base_model.model.{path}.{part}.weight");
                    let id = ids.get(&key).ok_or_else(|| Error::format(format!("the saved run state has no id for '{key}'")))?;
                    param.id = burn::module::ParamId::from(*id);
                    set += 1;
                }
            }
        }
        if set != ids.len() {
            return Err(Error::format("the saved run state names adapters this model does not have"));
        }
        Ok(())
    }

    /// Installs adapters from PEFT-named host tensors (see [`Llama::lora_tensors`]), freezing the
    /// base. Every target layer must be present and every shape must fit.
    pub fn load_lora(&mut self, cfg: &LoraConfig, get: &mut dyn FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>) -> Result<()> {
        cfg.validate()?;
        if self.has_lora() {
            self.remove_lora();
        }
        *self = self.clone().no_grad();
        let device = self.device();
        let mut found = 0;
        for (path, name, lin) in self.linears_mut() {
            if !cfg.target_modules.iter().any(|t| t == name) {
                continue;
            }
            let [d_in, d_out] = lin.dims();
            let mut fetch = |part: &str, shape: [usize; 2]| -> Result<Tensor<2>> {
                let key = format!("base_model.model.{path}.{part}.weight");
                let (s, data) = get(&key).ok_or_else(|| {
                    Error::format(format!("adapter file lacks '{key}'; it was saved for other target modules or another model"))
                })?;
                if s != shape {
                    return Err(Error::format(format!(
                        "adapter tensor '{key}' has shape {s:?}, but this model needs {shape:?}: \
                         the adapter was trained on another base model (or with another rank)"
                    )));
                }
                // PEFT orientation to burn's: transpose on the device.
                Ok(Tensor::<2>::from_data(TensorData::new(data, shape), &device).transpose())
            };
            let a = fetch("lora_A", [cfg.r, d_in])?;
            let b = fetch("lora_B", [d_out, cfg.r])?;
            lin.lora = Some(LoraAdapter::from_parts(a, b, cfg));
            lin.enabled = true;
            lin.merged = false;
            found += 1;
        }
        if found == 0 {
            return Err(Error::format("the adapter targets no layer of this model".to_string()));
        }
        Ok(())
    }

    /// Number of trainable parameters (those requiring gradients).
    pub fn num_trainable(&self) -> usize {
        self.linears()
            .iter()
            .filter_map(|(_, l)| l.lora.as_ref())
            .map(|l| l.a.dims().iter().product::<usize>() + l.b.dims().iter().product::<usize>())
            .sum()
    }
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    use super::*;

    #[test]
    fn a_dropout_mask_keeps_one_minus_p_scaled_up() {
        let mask = |seed, n, p| dropout_mask(&mut StdRng::seed_from_u64(seed), n, p);
        // An odd length: the last draw is read in part.
        let n = 100_003;
        for p in [0.05, 0.25, 0.5] {
            let m = mask(7, n, p);
            assert_eq!(m.len(), n);
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(m.iter().all(|&v| v == 0.0 || v == scale), "p {p}: only 0 and 1/(1-p)");
            let kept = m.iter().filter(|&&v| v > 0.0).count() as f64 / n as f64;
            // The kept share's standard deviation is at most 0.0016 here: 5 of them.
            assert!((kept - (1.0 - p)).abs() < 0.008, "p {p}: kept {kept}");
            let mean = m.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            assert!((mean - 1.0).abs() < 0.02, "p {p}: inverted dropout keeps the mean, got {mean}");
        }
        assert_eq!(mask(7, 10, 0.5), mask(7, 10, 0.5), "the same stream, the same mask");
        assert_ne!(mask(7, 64, 0.5), mask(8, 64, 0.5));
        // Consecutive elements are not tied to each other through the shared draw.
        let m = mask(3, n, 0.5);
        let same = m.windows(2).filter(|w| (w[0] > 0.0) == (w[1] > 0.0)).count() as f64 / (n - 1) as f64;
        assert!((same - 0.5).abs() < 0.008, "neighbours agree {same} of the time");
    }
}
