//! The decoder: embeddings, `num_hidden_layers` pre-norm blocks, final RMSNorm, and the LM head
//! (tied to the embeddings or separate).

use burn::module::{Module, Param, ParamId};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use super::{Attention, KvCache, LlamaConfig, LoraLinear, Mlp, RopeAngles, RotaryEmbedding};
use crate::{Error, Result};
use crate::io::{HostTensor, Matrix, Weights};

/// Additive mask value for hidden keys: very negative but finite, so a query with no visible key
/// (a padding row) gets a uniform distribution rather than NaN.
const MASKED: f32 = -1.0e9;

#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeAngles,
        mask: Option<&Tensor<4>>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let attn = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, mask, cache);
        let x = x + attn;
        let ff = self.mlp.forward(self.post_attention_layernorm.forward(x.clone()));
        x + ff
    }
}

#[derive(Module, Debug)]
pub struct Llama {
    pub embed_tokens: Embedding,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    pub rope: RotaryEmbedding,
}

/// One forward pass's inputs, built on the host: token ids, their positions and the additive
/// attention mask (causal and key padding together), `[batch, 1, groups * seq, past + seq]` in the
/// grouped queries' row order of [`super::Attention::forward`].
pub struct Batch {
    pub tokens: Tensor<2, Int>,
    pub positions: Tensor<2, Int>,
    pub mask: Option<Tensor<4>>,
}

impl Batch {
    /// Sequences of different lengths, padded on the right with `pad_id`; positions start at 0.
    /// Returns the batch and each sequence's real length.
    pub fn right_padded(model: &Llama, seqs: &[Vec<u32>], pad_id: u32) -> Result<(Self, Vec<usize>)> {
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let t = lens.iter().copied().max().unwrap_or(0).max(1);
        let valid: Vec<Vec<bool>> = lens.iter().map(|&l| (0..t).map(|j| j < l).collect()).collect();
        let positions: Vec<Vec<usize>> = seqs.iter().map(|_| (0..t).collect()).collect();
        let tokens: Vec<Vec<u32>> = seqs.iter().map(|s| padded(s, t, pad_id)).collect();
        Ok((Self::build(model, &tokens, &positions, &valid, 0)?, lens))
    }

    /// Sequences padded on the left (for decoding them together); positions count real tokens only.
    /// Returns the batch and, per row, the key validity to extend as decoding goes on.
    pub fn left_padded(model: &Llama, seqs: &[Vec<u32>], pad_id: u32) -> Result<(Self, Vec<Vec<bool>>)> {
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut valid = Vec::new();
        for s in seqs {
            let pad = t - s.len();
            tokens.push(std::iter::repeat_n(pad_id, pad).chain(s.iter().copied()).collect());
            positions.push((0..t).map(|j| j.saturating_sub(pad)).collect());
            valid.push((0..t).map(|j| j >= pad).collect());
        }
        Ok((Self::build(model, &tokens, &positions, &valid, 0)?, valid))
    }

    /// A decoding step: one new token per row at `positions`, attending to `valid` keys (the cache
    /// plus this token).
    pub fn step(model: &Llama, tokens: &[u32], positions: &[usize], valid: &[Vec<bool>]) -> Result<Self> {
        let tok: Vec<Vec<u32>> = tokens.iter().map(|&x| vec![x]).collect();
        let pos: Vec<Vec<usize>> = positions.iter().map(|&p| vec![p]).collect();
        let past = valid.first().map_or(1, Vec::len) - 1;
        Self::build(model, &tok, &pos, valid, past)
    }

    /// Rows that hold several sequences sharing a prefix: `tokens[r]` with its `positions[r]`,
    /// where query `i` of row `r` sees key `j` when `sees(r, i, j)`. For example a prompt followed
    /// by two answers, each answer seeing the prompt and itself (see
    /// [`crate::logps::SharedPromptBatch`]). After `past` positions already in a cache (a start
    /// every row shares, run once), which every query sees; `sees` counts keys from the row's
    /// first. Rows are right-padded with `pad_id` at position `past`; every query sees at least
    /// one key.
    pub fn packed(
        model: &Llama,
        past: usize,
        tokens: &[Vec<u32>],
        positions: &[Vec<usize>],
        pad_id: u32,
        sees: impl Fn(usize, usize, usize) -> bool,
    ) -> Result<Self> {
        let t = tokens.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let tok: Vec<Vec<u32>> = tokens.iter().map(|r| padded(r, t, pad_id)).collect();
        let pos: Vec<Vec<usize>> = positions.iter().map(|r| padded(r, t, past)).collect();
        let lens: Vec<usize> = tokens.iter().map(Vec::len).collect();
        // A padding query sees the row's real keys, as in `right_padded`, so no row of the
        // softmax is empty.
        Self::build_with(model, &tok, &pos, past, true, |r, i, j| {
            j < past || (j - past < lens[r] && (i >= lens[r] || sees(r, i, j - past)))
        })
    }

    /// Where tokens enter the model: every id must name a row of the embedding and every position
    /// a row of the rotary table, whatever tokenizer or file produced them (the CPU backends
    /// panic on an index out of range, and WebGPU reads garbage).
    fn build(model: &Llama, tokens: &[Vec<u32>], positions: &[Vec<usize>], valid: &[Vec<bool>], past: usize) -> Result<Self> {
        let t = tokens.first().map_or(0, Vec::len);
        let needs_mask = t > 1 || valid.iter().any(|row| row.iter().any(|v| !v));
        Self::build_with(model, tokens, positions, past, needs_mask, |r, i, j| valid[r][j] && j <= past + i)
    }

    /// [`Self::build`] with the mask given as `sees(row, query, key)`, keys counted from the
    /// cache's first position.
    fn build_with(
        model: &Llama,
        tokens: &[Vec<u32>],
        positions: &[Vec<usize>],
        past: usize,
        needs_mask: bool,
        sees: impl Fn(usize, usize, usize) -> bool,
    ) -> Result<Self> {
        let (vocab, context) = (model.vocab_size(), model.rope.max_positions);
        if let Some(&id) = tokens.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(Error::Invalid(token_out_of_vocabulary(id, vocab)));
        }
        if let Some(&p) = positions.iter().flatten().find(|&&p| p >= context) {
            return Err(Error::Invalid(format!(
                "a sequence reaches position {p} but the model's context is {context} tokens; shorten \
                 the prompt or the completion (max prompt/completion length)"
            )));
        }
        let device = &model.device();
        let b = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        let s = past + t;
        let tok: Vec<i32> = tokens.iter().flatten().map(|&x| x as i32).collect();
        let pos: Vec<i32> = positions.iter().flatten().map(|&x| x as i32).collect();
        // Attention groups each key/value head's query heads as rows `g t + i`, query position i
        // ([`super::Attention::forward`]): the mask comes in that order, once for every layer.
        let groups = model.layers.first().map_or(1, |l| l.self_attn.num_heads / l.self_attn.num_kv_heads);
        let mask = needs_mask.then(|| {
            let mut m = Vec::with_capacity(b * groups * t * s);
            for r in 0..b {
                for _ in 0..groups {
                    for i in 0..t {
                        m.extend((0..s).map(|j| if sees(r, i, j) { 0.0 } else { MASKED }));
                    }
                }
            }
            Tensor::from_data(TensorData::new(m, [b, 1, groups * t, s]), device)
        });
        Ok(Self {
            tokens: Tensor::from_data(TensorData::new(tok, [b, t]), device),
            positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
            mask,
        })
    }
}

/// `row` followed by `fill` up to length `t` (no longer than `t`).
fn padded<T: Copy>(row: &[T], t: usize, fill: T) -> Vec<T> {
    row.iter().copied().chain(std::iter::repeat(fill)).take(t).collect()
}

/// What to say of a token id that names no row of the embedding.
pub fn token_out_of_vocabulary(id: u32, vocab: usize) -> String {
    format!("token id {id} is outside the model's vocabulary of {vocab} tokens: the tokenizer does not belong to this model")
}

impl Llama {
    /// Hidden states after the final norm: `[batch, seq, hidden]`.
    pub fn hidden(&self, batch: &Batch, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        // An f16 embedding (the copy for decoding) gives its rows back up to f32.
        let mut x = self.embed_tokens.forward(batch.tokens.clone()).cast(FloatDType::F32);
        let angles = self.rope.angles(&batch.positions);
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(x, &angles, batch.mask.as_ref(), c);
        }
        self.norm.forward(x)
    }

    /// Projects hidden states to vocabulary logits.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let rows = hidden.reshape([b * t, d]);
        let logits = match &self.lm_head {
            Some(head) => super::linear(rows, head),
            // Tied head: `h Eᵀ` with E [vocab, hidden] as stored (see `matmul_t` for why not a
            // transposed copy of E).
            None => super::matmul_t(rows, self.embed_tokens.weight.val()),
        };
        let v = logits.dims()[1];
        logits.reshape([b, t, v])
    }

    /// Logits for every position: `[batch, seq, vocab]`.
    pub fn forward(&self, batch: &Batch, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.head(self.hidden(batch, cache))
    }

    /// Logits for the last position only, `[batch, vocab]`: what decoding needs, without paying
    /// for the vocabulary projection of the whole prompt.
    pub fn forward_last(&self, batch: &Batch, cache: Option<&mut KvCache>) -> Tensor<2> {
        let h = self.hidden(batch, cache);
        let [b, t, _] = h.dims();
        self.head(h.narrow(1, t - 1, 1)).reshape([b, self.vocab_size()])
    }

    pub fn vocab_size(&self) -> usize {
        // Its shape, not its values: those may not be made yet (`Weights::defer_blocks`).
        self.embed_tokens.weight.lazy_shape()[0]
    }

    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.weight.lazy_shape()[1]
    }

    /// The device the model is on (without making deferred values).
    pub fn device(&self) -> Device {
        self.embed_tokens.weight.lazy_device()
    }

    /// The model for a pass without gradients: a policy in training (on an autodiff device) is
    /// cloned without tracking and without dropout (its tensors are shared, not copied); any
    /// other model is itself.
    pub fn for_inference(&self) -> std::borrow::Cow<'_, Self> {
        if self.device().is_autodiff() {
            std::borrow::Cow::Owned(self.clone().freeze())
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Builds the model from transformers-named weights, checking every shape against `config`.
    pub fn from_weights(config: &LlamaConfig, weights: &mut Weights, device: &Device) -> Result<Self> {
        config.validate()?;
        let (d, f, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let q_out = config.num_attention_heads * config.head_dim;
        let kv_out = config.num_key_value_heads * config.head_dim;

        let linear = |w: &mut Weights, name: &str, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear { weight: matrix(w.take_matrix(&format!("{name}.weight"), [out, inp], true)?, device), bias: None })
        };
        let lin = |w: &mut Weights, name: &str, out: usize, inp: usize| -> Result<LoraLinear> {
            linear(w, name, out, inp).map(LoraLinear::new)
        };
        let norm = |w: &mut Weights, name: &str| -> Result<RmsNorm> {
            let t = w.take(&format!("{name}.weight"), &[d])?;
            Ok(RmsNorm { gamma: param(t, device), epsilon: config.rms_norm_eps })
        };

        let embed = weights.take_matrix("model.embed_tokens.weight", [v, d], false)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                input_layernorm: norm(weights, &format!("{p}.input_layernorm"))?,
                self_attn: Attention {
                    q_proj: lin(weights, &format!("{p}.self_attn.q_proj"), q_out, d)?,
                    k_proj: lin(weights, &format!("{p}.self_attn.k_proj"), kv_out, d)?,
                    v_proj: lin(weights, &format!("{p}.self_attn.v_proj"), kv_out, d)?,
                    o_proj: lin(weights, &format!("{p}.self_attn.o_proj"), d, q_out)?,
                    num_heads: config.num_attention_heads,
                    num_kv_heads: config.num_key_value_heads,
                    head_dim: config.head_dim,
                    qkv: None,
                    o: None,
                },
                post_attention_layernorm: norm(weights, &format!("{p}.post_attention_layernorm"))?,
                mlp: Mlp {
                    gate_proj: lin(weights, &format!("{p}.mlp.gate_proj"), f, d)?,
                    up_proj: lin(weights, &format!("{p}.mlp.up_proj"), f, d)?,
                    down_proj: lin(weights, &format!("{p}.mlp.down_proj"), d, f)?,
                    gate_up: None,
                    down: None,
                },
            });
        }
        let final_norm = norm(weights, "model.norm")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear(weights, "lm_head", v, d)?)
        };
        Ok(Self {
            embed_tokens: Embedding { weight: matrix(embed, device) },
            layers,
            norm: final_norm,
            lm_head,
            rope: RotaryEmbedding::new(config.head_dim, config.max_position_embeddings, config.rope_theta, device),
        })
    }
}

fn param<const D: usize>(t: HostTensor, device: &Device) -> Param<Tensor<D>> {
    let shape: [usize; D] = t.shape.try_into().expect("rank checked by Weights::take");
    Param::from_tensor(Tensor::from_data(TensorData::new(t.data, shape), device))
}

/// A matrix's parameter: its values, or, deferred, a parameter whose f32 values are made by the
/// first pass that reads them (burn's lazy [`Param::uninitialized`]); until then it is the
/// blocks, shared with the CPU decoder.
///
/// A deferred weight starts frozen, and its values are made untracked whatever flag it holds
/// then. Every clone of the model shares its lazy state, and burn changes that state's flag in
/// place when one clone's flag changes (`Param::set_require_grad`): an answer's frozen copy
/// (`for_inference`) or an adapter's frozen base would otherwise decide for every clone. Only a
/// full fine-tune trains base weights; [`Llama::all_trainable`] makes them and tracks them first.
fn matrix(m: Matrix, device: &Device) -> Param<Tensor<2>> {
    match m {
        Matrix::Values(t) => param(t, device),
        Matrix::Deferred(later) => {
            let shape = later.shape();
            let init = move |device: &Device, _: bool| Tensor::from_data(TensorData::new(later.values().data, shape), device);
            Param::uninitialized(ParamId::new(), init, device.clone(), false, shape.into())
        }
    }
}

impl Llama {
    /// The embedding, the head (when not tied) and every linear layer's base weight, in that
    /// order (seven a layer), each with its checkpoint path (without `.weight`) and whether burn
    /// holds it transposed: a linear layer's weight is `[in, out]`, the checkpoint's `[out, in]`.
    /// The one list of them that the decoder's copy, its fingerprint and deferred weights read.
    pub fn named_matrices(&self) -> Vec<(String, &Param<Tensor<2>>, bool)> {
        let mut all = vec![("model.embed_tokens".to_string(), &self.embed_tokens.weight, false)];
        all.extend(self.lm_head.as_ref().map(|h| ("lm_head".to_string(), &h.weight, true)));
        all.extend(self.linears().into_iter().map(|(path, lin)| (path, &lin.base.weight, true)));
        all
    }

    fn matrices(&self) -> impl Iterator<Item = &Param<Tensor<2>>> {
        self.named_matrices().into_iter().map(|(_, p, _)| p)
    }

    /// Weights whose f32 values are not made yet ([`Weights::defer_blocks`]).
    pub fn deferred_weights(&self) -> usize {
        self.matrices().filter(|p| !p.is_initialized()).count()
    }

    /// Makes the f32 values of the next deferred weight; false when none is left. One weight a
    /// call, so that background work can let requests in between.
    pub fn make_next_weight(&self) -> bool {
        self.matrices().find(|p| !p.is_initialized()).map(|p| p.val()).is_some()
    }

    /// The model with every weight made and tracked, for a run that trains them all (a full
    /// fine-tune): deferred weights start frozen (see [`matrix`]).
    pub fn all_trainable(self) -> Self {
        while self.make_next_weight() {}
        self.set_require_grad(true)
    }
}
