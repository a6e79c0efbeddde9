//! Decoding: greedy or sampled (temperature, top-k, top-p, repetition penalty), N samples per
//! prompt decoded together, seeded, streamed token by token.
//!
//! Sampling runs on the host from one logits row per sample: it is cheap next to the forward pass
//! and gives the same numbers on every backend.

#[cfg(feature = "engine")]
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
mod generations;
#[cfg(feature = "engine")]
pub use generations::{Generations, Request};

#[cfg(feature = "engine")]
use crate::{
    backend::read_f32,
    io::Tokenizer,
    model::{Batch, KvCache, Llama},
};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct SamplingConfig {
    /// Longest answer, in tokens.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().max_new_tokens))]
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().temperature))]
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().top_k))]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1.0 disables.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().top_p))]
    pub top_p: f32,
    /// transformers' CTRL-style penalty on tokens already in the sequence; 1.0 disables.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().repetition_penalty))]
    pub repetition_penalty: f32,
    /// Seed of the sampler: the same seed gives the same samples.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = SamplingConfig::default().seed))]
    pub seed: u64,
    /// Samples decoded together in one batch.
    #[cfg_attr(not(target_arch = "wasm32"), arg(short = 'n', long = "num-samples", default_value_t = SamplingConfig::default().num_samples))]
    pub num_samples: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.7,
            top_k: 0,
            top_p: 0.9,
            repetition_penalty: 1.0,
            seed: 0,
            num_samples: 1,
        }
    }
}

impl SamplingConfig {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, temperature: 0.0, top_p: 1.0, ..Self::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number >= 0 (0 = greedy)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty must be > 0 (1 = off)");
        }
        if self.num_samples == 0 || self.num_samples > 256 {
            return bad("the number of samples must be between 1 and 256");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence or end-of-turn token was produced (it is not part of `tokens`).
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// `log p(token)` of each of `tokens` under the model that wrote them (temperature 1, no
    /// penalty), when the generation was asked to keep them ([`Generations::keeping_logps`]);
    /// else empty. Not sent or stored: it is read where it was written.
    #[serde(skip)]
    pub logps: Vec<f32>,
}

/// One streamed token: which sample it belongs to and the text it adds.
#[derive(Clone, Debug)]
pub struct TokenEvent<'a> {
    pub sample: usize,
    pub token: u32,
    pub text_delta: &'a str,
}

/// Chooses the next token of each row from its logits. Holds the seeded generator, so one
/// `Sampler` per generation call keeps results reproducible.
#[cfg(feature = "engine")]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
}

#[cfg(feature = "engine")]
impl Sampler {
    pub fn new(cfg: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self { cfg, rng }
    }

    /// `logits` of one row (mutated in place); `prompt` and `generated` are that row's tokens
    /// so far (read only for the repetition penalty).
    pub fn sample(&mut self, logits: &mut [f32], prompt: &[u32], generated: &[u32]) -> u32 {
        let p = self.cfg.repetition_penalty;
        if p != 1.0 {
            let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p } else { *l * p };
                }
            }
        }
        if self.cfg.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.cfg.temperature;
        let (cand, probs) = self.nucleus(logits, inv_t);
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &p) in probs.iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }

    /// The tokens sampling may choose, most likely first, with their probabilities (at
    /// temperature `1 / inv_t`, cut by top-k, then by top-p). Sorting a 49k vocabulary for every
    /// token costs more than the choice; the nucleus is found among the most likely 64 tokens,
    /// then 256, ... (`select_nth_unstable` partitions in linear time), which almost always
    /// holds it. Without top-k, the whole vocabulary's exponentials are one vectorised pass
    /// (libm's `expf`, a token at a time, was most of the sampler's time, and the sampler 6 % of
    /// eight samples' decoding in the page), and only tokens that can be in the nucleus are
    /// candidates: each token below `(1 - top_p) / V` of the mass holds less than that, so all
    /// of them together hold less than `1 - top_p`, and the most likely tokens reach `top_p`
    /// before any of them.
    fn nucleus(&self, logits: &[f32], inv_t: f32) -> (Vec<(u32, f32)>, Vec<f32>) {
        let (top_k, top_p) = (self.cfg.top_k, self.cfg.top_p);
        let scaled = |(i, &l): (usize, &f32)| (i as u32, l * inv_t);
        if top_k == 0 || top_k >= logits.len() {
            let mut e = vec![0.0f32; logits.len()];
            let (max, total) = crate::model::rows::exp_scaled(logits, inv_t, &mut e);
            // (Not finite only when every logit is -inf: the generic path below copes.)
            if total.is_finite() {
                if top_p >= 1.0 {
                    // Every token stays: their order does not matter.
                    return (logits.iter().enumerate().map(scaled).collect(), e.iter().map(|p| p / total).collect());
                }
                // Halved for rounding.
                let floor = total * (1.0 - top_p) / (2.0 * logits.len() as f32);
                let cand = logits.iter().enumerate().filter(|&(i, _)| e[i] >= floor).map(scaled).collect();
                return top_p_of(cand, max, total, top_p);
            }
        }
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(scaled).collect();
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, descending);
            cand.truncate(top_k);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = cand.iter().map(|&(_, l)| (l - max).exp()).sum();
        if top_p >= 1.0 {
            // Every candidate stays: their order does not matter.
            let probs = cand.iter().map(|&(_, l)| (l - max).exp() / total).collect();
            return (cand, probs);
        }
        top_p_of(cand, max, total, top_p)
    }
}

/// Most likely first.
#[cfg(feature = "engine")]
fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1)
}

/// The most likely of `cand` (token, scaled logit) whose probabilities, `e^{l - max} / total`,
/// first reach `top_p`, with those probabilities.
#[cfg(feature = "engine")]
fn top_p_of(mut cand: Vec<(u32, f32)>, max: f32, total: f32, top_p: f32) -> (Vec<(u32, f32)>, Vec<f32>) {
    let prob = |c: &[(u32, f32)]| -> Vec<f32> { c.iter().map(|&(_, l)| (l - max).exp() / total).collect() };
    let mut keep = cand.len().min(64);
    loop {
        if keep < cand.len() {
            cand.select_nth_unstable_by(keep - 1, descending);
        }
        let mut head = cand[..keep].to_vec();
        head.sort_unstable_by(descending);
        let mut probs = prob(&head);
        let mut cum = 0.0;
        let reached = probs.iter().position(|&p| {
            cum += p;
            cum >= top_p
        });
        if let Some(i) = reached {
            probs.truncate(i + 1);
            head.truncate(i + 1);
            return (head, probs);
        }
        if keep == cand.len() {
            return (head, probs);
        }
        keep = (keep * 4).min(cand.len());
    }
}

/// Index of the largest value; the first one on ties, like `torch.argmax`.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Streams decoded text: emits only what the growing token list adds, holding back an incomplete
/// UTF-8 character until its last byte arrives. Decodes a short window, not the whole answer, on
/// each token (as text-generation-inference does): the text of the tokens since the last emitted
/// one, with a few before them so that a tokenizer that joins tokens differently at the start of
/// a text (SentencePiece's leading space) sees the same context both times.
#[cfg(feature = "engine")]
#[derive(Default, Clone)]
pub struct TextStream {
    tokens: Vec<u32>,
    /// Start of the decoding window, and the end of what has been emitted.
    prefix: usize,
    read: usize,
}

#[cfg(feature = "engine")]
impl TextStream {
    pub fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> String {
        self.tokens.push(token);
        let before = tokenizer.decode(&self.tokens[self.prefix..self.read]);
        let now = tokenizer.decode(&self.tokens[self.prefix..]);
        if now.ends_with('\u{FFFD}') || now.len() <= before.len() || !now.starts_with(&before) {
            return String::new();
        }
        let delta = now[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.tokens.len();
        delta
    }
}

/// Generates `cfg.num_samples` continuations of `prompt` (token ids) with any model sharing the
/// tokenizer (a policy in training, or its reference), without gradient tracking. `on_token` sees
/// every token as it is chosen and returns `false` to stop all samples. Each read of the logits
/// is awaited (WebGPU needs that).
#[cfg(feature = "engine")]
pub async fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    cfg: &SamplingConfig,
    on_token: &mut dyn FnMut(TokenEvent) -> bool,
) -> Result<Vec<Sample>> {
    generate_on(DecodePath::Auto, model, tokenizer, prompt, cfg, on_token).await
}

/// Where the decoding steps run (the prompt always runs on the model's device).
#[cfg(feature = "engine")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum DecodePath {
    /// On the host from a compact copy of the weights when the model is on the CPU
    /// ([`crate::decode`]); on a GPU from the decoding copy, in f16 where the GPU computes in f16
    /// (`half`), else in f32 (`fused`).
    Auto,
    /// Always on the model's device in f32, through burn's forward pass on the model itself: the
    /// reference the other paths are checked against.
    Device,
    /// On the model's device from the decoding copy in f32 ([`Llama::for_decoding`]): adapters
    /// merged, q/k/v and gate/up one product each. Needs a GPU.
    Fused,
    /// The decoding copy with the products' weights in f16: half the bytes a step reads. Needs a
    /// GPU whose adapter computes in f16.
    Half,
}

#[cfg(feature = "engine")]
impl DecodePath {
    /// Where a generation's steps run for a model on `device`: `Auto` made concrete, and a path
    /// the device cannot take refused.
    pub fn on(self, device: &burn::tensor::Device) -> Result<Route> {
        let cpu = crate::backend::is_cpu(device);
        let half = Llama::decodes_in_half(device);
        match self {
            Self::Device => Ok(Route::Device),
            Self::Auto if cpu => Ok(Route::Host),
            Self::Auto if half => Ok(Route::Half),
            Self::Auto => Ok(Route::Fused),
            Self::Fused if cpu => Err(Error::Device(
                "the decoding copy is for a GPU; on the CPU decode with auto or device".into(),
            )),
            Self::Fused => Ok(Route::Fused),
            Self::Half if half => Ok(Route::Half),
            Self::Half => Err(Error::Device(
                "this device does not compute in f16 (a CPU backend, or a GPU adapter without \
                 shader-f16); decode with auto or device"
                    .into(),
            )),
        }
    }
}

/// Where a generation's steps run, once [`DecodePath::on`] has chosen.
#[cfg(feature = "engine")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// On the host from a compact copy of the weights.
    Host,
    /// Through burn on the model's device, in f32, the model itself.
    Device,
    /// Through burn on the model's device, from the decoding copy in f32.
    Fused,
    /// Through burn on the model's device, from the decoding copy in f16.
    Half,
}

#[cfg(feature = "engine")]
impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Device => "device",
            Self::Fused => "fused",
            Self::Half => "half",
        }
    }

    /// The weights' type of the decoding copy this route decodes from, if it takes one.
    fn copy_dtype(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Self::Fused => Some(burn::tensor::FloatDType::F32),
            Self::Half => Some(burn::tensor::FloatDType::F16),
            Self::Host | Self::Device => None,
        }
    }
}

/// [`generate`], with the decoding steps run where `path` says.
#[cfg(feature = "engine")]
pub async fn generate_on(
    path: DecodePath,
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    cfg: &SamplingConfig,
    on_token: &mut dyn FnMut(TokenEvent) -> bool,
) -> Result<Vec<Sample>> {
    let requests = vec![Request { prompt: prompt.to_vec(), sampling: cfg.clone() }];
    let mut answers = Generations::new(path, model, tokenizer, requests)?;
    let (_, samples) = answers.next(&mut |_, ev| on_token(ev)).await?.expect("one request, not cancelled before it started");
    Ok(samples)
}

/// `prompt` through `model` on its device: the filled key/value cache and the next token's
/// logits, `[1, vocab]`.
#[cfg(feature = "engine")]
pub(crate) async fn prefill(model: &Llama, prompt: &[u32]) -> Result<(KvCache, Vec<f32>)> {
    let mut cache = KvCache::new(model.num_layers());
    let (batch, _) = Batch::left_padded(model, &[prompt.to_vec()], 0)?;
    let logits = read_f32(model.forward_last(&batch, Some(&mut cache))).await?;
    Ok((cache, logits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_penalty_applies() {
        let mut s = Sampler::new(SamplingConfig::greedy(1));
        assert_eq!(s.sample(&mut [0.1, 2.0, 2.0, -1.0], &[], &[]), 1);
        let mut s = Sampler::new(SamplingConfig { repetition_penalty: 4.0, ..SamplingConfig::greedy(1) });
        // token 1 (2.0 -> 0.5) loses to token 2 (1.0)
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.0, -1.0], &[1], &[]), 2);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let cfg = SamplingConfig { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 7, ..Default::default() };
        let logits = [0.0f32, 1.0, 3.0, 2.9, -5.0];
        let draw = |cfg: &SamplingConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..200).map(|_| s.sample(&mut logits.clone(), &[], &[])).collect::<Vec<_>>()
        };
        let a = draw(&cfg);
        assert_eq!(a, draw(&cfg));
        assert!(a.iter().all(|&t| t == 2 || t == 3));
        assert!(a.contains(&2) && a.contains(&3));
        let other = draw(&SamplingConfig { seed: 8, ..cfg });
        assert_ne!(a, other);
    }

    #[test]
    fn the_nucleus_is_the_one_a_full_sort_finds() {
        // Near-uniform logits (spread 0.25): the nucleus holds hundreds of tokens, past the first
        // 64. Spread 10: most tokens are below the floor under which none can be in the nucleus.
        let cases = [(0.25, 0, 0.9), (0.25, 300, 0.5), (0.25, 0, 0.01), (0.25, 10, 1.0), (0.25, 0, 1.0), (0.25, 2000, 0.9)];
        for (spread, top_k, top_p) in cases.into_iter().chain([(10.0, 0, 0.9), (10.0, 0, 0.5), (10.0, 0, 0.999), (10.0, 0, 1.0)]) {
            let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 * spread).collect();
            let cfg = SamplingConfig { temperature: 0.7, top_k, top_p, ..Default::default() };
            let (cand, probs) = Sampler::new(cfg).nucleus(&logits, 1.0 / 0.7);
            let mut all: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / 0.7)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            if top_k > 0 {
                all.truncate(top_k);
            }
            let total: f32 = all.iter().map(|c| (c.1 - all[0].1).exp()).sum();
            let mut cum = 0.0;
            let want: Vec<(u32, f32)> = all
                .iter()
                .take_while(|c| {
                    let before = cum;
                    cum += (c.1 - all[0].1).exp() / total;
                    top_p >= 1.0 || before < top_p
                })
                .copied()
                .collect();
            let mass: f32 = want.iter().map(|c| (c.1 - all[0].1).exp() / total).sum();
            assert!((probs.iter().sum::<f32>() - mass).abs() < 1e-4, "spread {spread}, top_k {top_k}, top_p {top_p}");
            let want: Vec<u32> = want.iter().map(|c| c.0).collect();
            let mut got: Vec<u32> = cand.iter().map(|c| c.0).collect();
            got.sort_unstable();
            let mut want = want;
            want.sort_unstable();
            assert_eq!(got, want, "spread {spread}, top_k {top_k}, top_p {top_p}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let cfg = SamplingConfig { temperature: 1.0, top_p: 0.5, seed: 1, ..Default::default() };
        let mut s = Sampler::new(cfg);
        // p(0) ~ 0.84: the nucleus is token 0 alone
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [3.0, 1.0, 0.5, 0.0], &[], &[]), 0);
        }
    }
}
