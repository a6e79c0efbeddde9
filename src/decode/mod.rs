//! Token-by-token decoding on the CPU from a host copy of the weights.
//!
//! A decoding step is one token per sample through every layer: matrix-vector products, where
//! the time goes into reading the weights. burn's kernels are made for training's large matrix
//! products, and run a step as some 400 small operations, each with its own allocations, most on
//! one thread. Here a step is plain loops over a copy of the weights kept as compactly as it can
//! be without changing a value ([`quant`]: the Q4_1 blocks of a quantized GGUF read as stored),
//! split over the cores ([`kernels`], [`crew`]).
//!
//! A short prompt runs here too, all its positions at once; a long one is a large matrix product,
//! which burn's gemm does faster, so it runs through burn and its keys and values are handed
//! over. LoRA adapters are applied unmerged beside the base weights,
//! `y = x W + scaling (x A) B`, so training an adapter never invalidates the copy; the copy is
//! kept per set of base weights ([`cache`]) and rebuilt when they change (a merge, a full
//! fine-tune, another model).

mod cache;
mod crew;
pub mod kernels;
pub mod quant;

pub use cache::prime;

use std::sync::Arc;

use burn::module::Param;
use burn::tensor::Tensor;

use crate::Result;
use crate::backend::read_f32;
use crate::model::rows::exp;
use crate::model::{Llama, LoraLinear};
use crew::on_pool;
use kernels::{OneRow, dot, matmul, matmul_many};
use quant::QMatrix;

/// Prompts up to this many tokens run here, longer ones through burn: the host's products are
/// made for a few rows of input, burn's gemm for many. SmolLM2 on the 2-core Zen 1 VM, since the
/// host's rows are dotted two weight rows by four input rows (`alignlab bench generate --decode
/// auto|device --prompt-tokens N --tokens 1`, two runs each), prompt of 48 / 64 / 96 / 128 / 200
/// tokens: here 0.30 / 0.37 / 0.56 / 0.73 / 1.22 s, burn 0.42 / 0.43 / 0.70 / 0.89 / 1.17 s. (On
/// the Zen 4 VM, with burn's AVX-512 gemm and the host's earlier loop, 101 tokens took 496 ms
/// here against burn's 352.) In the page the same since its products run in their own tiles
/// (stop 66; the Zen 5 VM, both cores, the plain browser bench's first token, two runs each),
/// prompt of 72 / 100 / 128 / 198 / 254 tokens: here 0.35-0.39 / 0.51-0.52 / 0.63-0.65 /
/// 1.08-1.09 / 1.52-1.53 s, burn 0.38-0.44 / 0.48-0.49 / 0.54-0.55 / 0.74-0.79 / 0.91-1.01 s.
const HOST_PROMPT: usize = 96;

/// The seven projections of a block, in [`Llama::linears`]'s order.
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// The base weights, as decoding reads them. Shared by every generation with these weights.
pub struct HostBase {
    /// `[vocab, hidden]`; also the head when the head is tied.
    embed: QMatrix,
    /// `[vocab, hidden]` when the head has its own weights.
    head: Option<QMatrix>,
    layers: Vec<HostBlock>,
    norm: Norm,
    /// `[max_positions, head_dim]`, the rotary tables the model itself uses.
    cos: Vec<f32>,
    sin: Vec<f32>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// Matrices taken as the checkpoint stored them (the rest were read back from the device).
    from_file: usize,
}

struct HostBlock {
    input_norm: Norm,
    post_norm: Norm,
    /// q, k, v, o, gate, up, down, each `[out, in]`.
    linears: Vec<QMatrix>,
}

struct Norm {
    gamma: Vec<f32>,
    eps: f32,
}

/// One adapter, `scaling * (x A) B`, with `a: [r, in]` and `b: [out, r]` (PEFT's orientation).
struct HostLora {
    a: QMatrix,
    b: QMatrix,
    scaling: f32,
}

impl HostBase {
    /// Reads every base weight of `model` back from its device.
    async fn read(model: &Llama) -> Result<Self> {
        let mut from_file = 0;
        let named = model.named_matrices();
        let mut matrices = Vec::with_capacity(named.len());
        for (path, p, transposed) in &named {
            matrices.push(weight(model, path, p, *transposed, &mut from_file).await?);
        }
        // In `named_matrices`' order: the embedding, the head if not tied, seven a layer.
        let mut matrices = matrices.into_iter();
        let embed = matrices.next().expect("a model has an embedding");
        let head = model.lm_head.as_ref().and_then(|_| matrices.next());
        let mut layers = Vec::with_capacity(model.layers.len());
        for block in &model.layers {
            layers.push(HostBlock {
                input_norm: Norm::read(&block.input_layernorm).await?,
                post_norm: Norm::read(&block.post_attention_layernorm).await?,
                linears: matrices.by_ref().take(7).collect(),
            });
        }
        let (cos, sin) = model.rope.tables();
        let attn = &model.layers[0].self_attn;
        Ok(Self {
            embed,
            head,
            layers,
            norm: Norm::read(&model.norm).await?,
            cos: read_f32(cos).await?,
            sin: read_f32(sin).await?,
            num_heads: attn.num_heads,
            num_kv_heads: attn.num_kv_heads,
            head_dim: attn.head_dim,
            from_file,
        })
    }

    /// How many weight matrices were taken as the checkpoint stored them.
    pub fn from_file(&self) -> usize {
        self.from_file
    }

    /// Bytes of weights one decoded token reads, and each format's share of the parameters.
    pub fn summary(&self) -> (usize, Vec<(&'static str, usize)>) {
        let mut all: Vec<&QMatrix> = vec![&self.embed];
        all.extend(self.head.iter());
        all.extend(self.layers.iter().flat_map(|l| &l.linears));
        let mut formats: Vec<(&'static str, usize)> = Vec::new();
        for m in &all {
            match formats.iter_mut().find(|(f, _)| *f == m.format()) {
                Some((_, n)) => *n += m.rows * m.cols,
                None => formats.push((m.format(), m.rows * m.cols)),
            }
        }
        (all.iter().map(|m| m.bytes()).sum(), formats)
    }

    fn hidden(&self) -> usize {
        self.embed.cols
    }
}

impl Norm {
    async fn read(n: &burn::nn::RmsNorm) -> Result<Self> {
        Ok(Self { gamma: read_f32(n.gamma.val()).await?, eps: n.epsilon as f32 })
    }

    /// `x / sqrt(mean(x^2) + eps) * gamma` on each row of `x`, as burn's `RmsNorm` computes it.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.gamma.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let rms = (dot(row, row) / d as f32 + self.eps).sqrt();
            out.extend(row.iter().zip(&self.gamma).map(|(&v, &g)| v / rms * g));
        }
        out
    }
}

/// Weight `path` of `model` as decoding reads it: the blocks the checkpoint stored when they
/// still hold the weight's values (its values not made yet; or its first and last column, every
/// row, compared: a merge or a training step changes them), else read back from the device.
async fn weight(model: &Llama, path: &str, p: &Param<Tensor<2>>, transposed: bool, from_file: &mut usize) -> Result<QMatrix> {
    if let Some(q) = cache::take_pending(model, &format!("{path}.weight")) {
        if cache::deferred_from(p, &q) {
            *from_file += 1;
            return Ok(q);
        }
        let w = p.val();
        let [a, b] = w.dims();
        let (rows, cols) = if transposed { (b, a) } else { (a, b) };
        let mut same = (q.rows, q.cols) == (rows, cols);
        for c in [0, cols - 1] {
            if same {
                // Column c of `[rows, cols]` is row c of burn's `[in, out]` (or its column c).
                let dim = if transposed { 0 } else { 1 };
                same = read_f32(w.clone().narrow(dim, c, 1)).await? == q.column(c);
            }
        }
        if same {
            *from_file += 1;
            return Ok(q);
        }
    }
    read_matrix(p.val(), transposed).await
}

/// A weight read back to the host as `[rows, cols]`: burn keeps a linear layer's weight as
/// `[in, out]`, so those are transposed to `[out, in]`.
async fn read_matrix(w: Tensor<2>, transposed: bool) -> Result<QMatrix> {
    let [a, b] = w.dims();
    let data = read_f32(w).await?;
    if !transposed {
        return Ok(QMatrix::exact(a, b, data));
    }
    let mut t = vec![0.0f32; data.len()];
    for (i, row) in data.chunks_exact(b).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * a + i] = v;
        }
    }
    Ok(QMatrix::exact(b, a, t))
}

/// The adapter `lin` applies in forward, if any (on, and not merged into the base).
async fn read_lora(lin: &LoraLinear) -> Result<Option<HostLora>> {
    let Some(l) = lin.lora.as_ref().filter(|_| lin.enabled && !lin.merged) else { return Ok(None) };
    Ok(Some(HostLora {
        // a: [in, r] in burn; b: [r, out]
        a: read_matrix(l.a.val(), true).await?,
        b: read_matrix(l.b.val(), true).await?,
        scaling: l.scaling as f32,
    }))
}

/// Decodes a batch of samples, of one prompt or of several, a token per sample per step.
pub struct HostDecoder {
    base: Arc<HostBase>,
    /// Per layer, the adapter of each of its seven projections.
    adapters: Vec<Vec<Option<HostLora>>>,
    /// Per sample, per layer: the keys (values) of every position so far, `[pos, kv_heads * head_dim]`.
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
    /// How a sample decoded alone is multiplied.
    one: OneRow,
}

impl HostDecoder {
    /// Runs `prompt` once and starts `n` samples from it. Returns the decoder and the logits of
    /// the next token, `[n, vocab]`.
    pub async fn start(model: &Llama, prompt: &[u32], n: usize) -> Result<(Self, Vec<f32>)> {
        let mut decoder = Self::new(model, OneRow::Integers).await?;
        let logits = decoder.add(model, prompt, n).await?;
        Ok((decoder, logits))
    }

    /// A decoder with no samples yet, for `model`'s weights and adapters as they are now.
    pub async fn new(model: &Llama, one: OneRow) -> Result<Self> {
        let base = cache::base_for(model).await?;
        let mut adapters = Vec::with_capacity(model.layers.len());
        for lins in model.linears().chunks_exact(7) {
            let mut per = Vec::with_capacity(7);
            for (_, lin) in lins {
                per.push(read_lora(lin).await?);
            }
            adapters.push(per);
        }
        Ok(Self { base, adapters, keys: Vec::new(), values: Vec::new(), one })
    }

    /// Runs `prompt` once and adds `n` samples of it after those already decoding; returns the
    /// logits of their next token, `[n, vocab]`. `model` is the one the decoder was made for.
    pub async fn add(&mut self, model: &Llama, prompt: &[u32], n: usize) -> Result<Vec<f32>> {
        check_tokens(model, prompt)?;
        let layers = self.base.layers.len();
        let slot = self.keys.len();
        self.keys.push(vec![Vec::new(); layers]);
        self.values.push(vec![Vec::new(); layers]);
        let logits = if prompt.len() <= HOST_PROMPT {
            let positions: Vec<usize> = (0..prompt.len()).collect();
            on_pool(|| {
                let hidden = self.forward(prompt, &positions, &vec![slot; prompt.len()]);
                let d = self.base.hidden();
                self.logits(&hidden[hidden.len() - d..], 1)
            })
        } else {
            // A long prompt is a large matrix product, where burn's gemm is faster: run it on
            // the device and take its keys and values.
            let (cache, logits) = crate::generate::prefill(model, prompt).await?;
            for layer in 0..layers {
                let (k, v) = cache.layer(layer).expect("the prompt filled every layer's cache");
                self.keys[slot][layer] = positions_major(k).await?;
                self.values[slot][layer] = positions_major(v).await?;
            }
            logits
        };
        // Every sample starts from the same prompt: its cache copied.
        let rows: Vec<usize> = (0..slot).chain(std::iter::repeat_n(slot, n)).collect();
        self.keep_rows(&rows);
        Ok(logits.repeat(n))
    }

    /// Keeps only the samples in `rows` (finished ones are dropped).
    pub fn keep_rows(&mut self, rows: &[usize]) {
        // Each kept row's cache is moved, not copied; only a row kept twice is cloned.
        let (mut keys, mut values) = (std::mem::take(&mut self.keys), std::mem::take(&mut self.values));
        let mut left: Vec<usize> = vec![0; keys.len()];
        for &r in rows {
            left[r] += 1;
        }
        for &r in rows {
            left[r] -= 1;
            if left[r] == 0 {
                self.keys.push(std::mem::take(&mut keys[r]));
                self.values.push(std::mem::take(&mut values[r]));
            } else {
                self.keys.push(keys[r].clone());
                self.values.push(values[r].clone());
            }
        }
    }

    /// One step: `tokens[i]` at `positions[i]` for each sample still decoding; returns the logits
    /// of the next token, `[n, vocab]`.
    pub fn step(&mut self, tokens: &[u32], positions: &[usize]) -> Vec<f32> {
        let samples: Vec<usize> = (0..tokens.len()).collect();
        on_pool(|| {
            let hidden = self.forward(tokens, positions, &samples);
            self.logits(&hidden, tokens.len())
        })
    }

    /// `tokens[i]` at `positions[i]` through every layer, extending sample `samples[i]`'s cache;
    /// a row sees its sample's cache up to and including itself (so the rows of one prompt
    /// attend causally). Returns the final-norm hidden states, `[rows, hidden]`.
    fn forward(&mut self, tokens: &[u32], positions: &[usize], samples: &[usize]) -> Vec<f32> {
        let base = Arc::clone(&self.base);
        let n = tokens.len();
        let d = base.hidden();
        let mut x = vec![0.0f32; n * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            base.embed.row_into(t as usize, row);
        }
        let kv = base.num_kv_heads * base.head_dim;
        let mut visible = vec![0usize; n];
        for (l, block) in base.layers.iter().enumerate() {
            let h = block.input_norm.apply(&x);
            let [mut q, mut k, v]: [Vec<f32>; 3] = self.linears(l, [Q, K, V], &h, n);
            self.rotate(&mut q, positions);
            self.rotate(&mut k, positions);
            for (i, &s) in samples.iter().enumerate() {
                self.keys[s][l].extend_from_slice(&k[i * kv..(i + 1) * kv]);
                self.values[s][l].extend_from_slice(&v[i * kv..(i + 1) * kv]);
                visible[i] = self.keys[s][l].len() / kv;
            }
            let att = self.attend(l, &q, samples, &visible);
            let [o] = self.linears(l, [O], &att, n);
            add(&mut x, &o);
            let h = block.post_norm.apply(&x);
            let [gate, mut up]: [Vec<f32>; 2] = self.linears(l, [GATE, UP], &h, n);
            // silu(gate) * up, with the exp the compiler vectorises (the training path's).
            for (u, &g) in up.iter_mut().zip(&gate) {
                *u *= g / (1.0 + exp(-g));
            }
            let [down] = self.linears(l, [DOWN], &up, n);
            add(&mut x, &down);
        }
        base.norm.apply(&x)
    }

    /// The head on `n` final hidden states: `[n, vocab]`.
    fn logits(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let head = self.base.head.as_ref().unwrap_or(&self.base.embed);
        let mut logits = vec![0.0f32; n * head.rows];
        matmul(head, hidden, n, self.one, &mut logits);
        logits
    }

    /// Projections `which` of layer `l` on the same input, each with its adapter.
    fn linears<const N: usize>(&self, l: usize, which: [usize; N], x: &[f32], n: usize) -> [Vec<f32>; N] {
        let base = &self.base.layers[l].linears;
        let mut ys = matmul_many(&which.map(|i| &base[i]), x, n, self.one);
        for (y, i) in ys.iter_mut().zip(which) {
            if let Some(lora) = &self.adapters[l][i] {
                let mut t = vec![0.0f32; n * lora.a.rows];
                matmul(&lora.a, x, n, self.one, &mut t);
                let mut dy = vec![0.0f32; y.len()];
                matmul(&lora.b, &t, n, self.one, &mut dy);
                for (y, dy) in y.iter_mut().zip(dy) {
                    *y += dy * lora.scaling;
                }
            }
        }
        ys.try_into().expect("one output per projection")
    }

    /// Rotary positions on `x: [n, heads * head_dim]`, "rotate half" layout:
    /// `x cos + [-x2, x1] sin`.
    fn rotate(&self, x: &mut [f32], positions: &[usize]) {
        let b = &self.base;
        let hd = b.head_dim;
        let per_row = x.len() / positions.len();
        for (row, &p) in x.chunks_exact_mut(per_row).zip(positions) {
            let (cos, sin) = (&b.cos[p * hd..(p + 1) * hd], &b.sin[p * hd..(p + 1) * hd]);
            for head in row.chunks_exact_mut(hd) {
                let (x1, x2) = head.split_at_mut(hd / 2);
                for j in 0..hd / 2 {
                    let (a, c) = (x1[j], x2[j]);
                    x1[j] = a * cos[j] + -c * sin[j];
                    x2[j] = c * cos[j + hd / 2] + a * sin[j + hd / 2];
                }
            }
        }
    }

    /// Each query head over its key/value head's cache: `softmax(q k^T / sqrt(d)) v`, row `i`
    /// over the first `visible[i]` positions of sample `samples[i]`. One task a row and head,
    /// shared between the cores ([`crew::for_each`]): each sample decoded beside others attends
    /// to its own cache, and the decoder's own work around its products (this within it) took a
    /// fifth of an 8-sample step in the page, on one thread while the other spun.
    fn attend(&self, l: usize, q: &[f32], samples: &[usize], visible: &[usize]) -> Vec<f32> {
        let b = &self.base;
        let (hd, heads, kvh) = (b.head_dim, b.num_heads, b.num_kv_heads);
        let groups = heads / kvh;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let mut out = vec![0.0f32; q.len()];
        // Each task writes its own head's slice; the lock is never contended.
        let heads_out: Vec<std::sync::Mutex<&mut [f32]>> = out.chunks_exact_mut(hd).map(std::sync::Mutex::new).collect();
        crew::for_each(heads_out.len(), |t| {
            let (i, h) = (t / heads, t % heads);
            let (keys, values) = (&self.keys[samples[i]][l], &self.values[samples[i]][l]);
            let (qh, g) = (&q[t * hd..(t + 1) * hd], h / groups);
            let mut scores: Vec<f32> = (0..visible[i]).map(|j| dot(qh, &keys[(j * kvh + g) * hd..][..hd]) * scale).collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            let mut oh = heads_out[t].lock().expect("a head's own output");
            for (j, &s) in scores.iter().enumerate() {
                let p = s / total;
                for (o, &v) in oh.iter_mut().zip(&values[(j * kvh + g) * hd..][..hd]) {
                    *o += p * v;
                }
            }
        });
        drop(heads_out);
        out
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// A cached `[1, kv_heads, seq, head_dim]` tensor as `[seq, kv_heads * head_dim]`.
async fn positions_major(t: Tensor<4>) -> Result<Vec<f32>> {
    let [_, kvh, s, hd] = t.dims();
    let data = read_f32(t).await?;
    let mut out = vec![0.0f32; data.len()];
    for g in 0..kvh {
        for p in 0..s {
            out[(p * kvh + g) * hd..][..hd].copy_from_slice(&data[(g * s + p) * hd..][..hd]);
        }
    }
    Ok(out)
}

/// Every token must name a row of the embedding, whatever tokenizer produced it.
fn check_tokens(model: &Llama, tokens: &[u32]) -> Result<()> {
    let vocab = model.vocab_size();
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&t) => Err(crate::Error::Invalid(crate::model::token_out_of_vocabulary(t, vocab))),
        None => Ok(()),
    }
}

/// The host copy of `model`'s base weights that decoding would use (built if need be): for
/// reports and benchmarks.
pub async fn host_base(model: &Llama) -> Result<Arc<HostBase>> {
    cache::base_for(model).await
}
