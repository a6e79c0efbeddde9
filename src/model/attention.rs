//! Grouped-query self-attention with rotary positions and an optional KV cache.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::{KvCache, LoraLinear, RopeAngles, linear_t, softmax};

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub o_proj: LoraLinear,
    /// In a decoding copy only, stored `[d_out, d_in]` ([`linear_t`]): `[Wq | Wk | Wv | Wq R | Wk R]`,
    /// q, k, v and their rotated halves in one product
    /// ([`Llama::for_decoding`](super::Llama::for_decoding)); then `q_proj`, `k_proj` and
    /// `v_proj` are not read.
    pub qkv: Option<Param<Tensor<2>>>,
    /// In a decoding copy only: `o_proj`'s weight with its adapter merged, stored `[d_out, d_in]`;
    /// then `o_proj` is not read.
    pub o: Option<Param<Tensor<2>>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// `x: [batch, seq, hidden]`; `mask: [batch, 1, groups * seq, past + seq]`, additive (0 or very
    /// negative), its rows in the grouped queries' order ([`Batch`](super::Batch)).
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeAngles,
        mask: Option<&Tensor<4>>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);

        let split_heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let (q, k, v) = match &self.qkv {
            Some(qkv) => {
                let y = linear_t(x, qkv);
                let (qo, kvo) = (h * hd, kvh * hd);
                let part = |at: usize, n: usize| split_heads(y.clone().narrow(2, at, n * hd), n);
                let q = rope.rotate_with(part(0, h), part(qo + 2 * kvo, h));
                let k = rope.rotate_with(part(qo, kvh), part(2 * qo + 2 * kvo, kvh));
                (q, k, part(qo + kvo, kvh))
            }
            None => (
                rope.rotate(split_heads(self.q_proj.forward(x.clone()), h)),
                rope.rotate(split_heads(self.k_proj.forward(x.clone()), kvh)),
                split_heads(self.v_proj.forward(x), kvh),
            ),
        };

        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        // Each key/value head serves `groups` query heads. The query heads are grouped under
        // theirs, `[b, h, t, hd] -> [b, kvh, groups * t, hd]` (a view when t = 1, a decoding step),
        // rather than the keys and values repeated `groups` times (a copy of the whole cache).
        let groups = h / kvh;
        let q = q.reshape([b, kvh, groups * t, hd]);
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, kvh, groups * t, s]
        if let Some(mask) = mask {
            scores = scores + mask.clone();
        }
        let out = softmax(scores).matmul(v).reshape([b, h, t, hd]).swap_dims(1, 2).reshape([b, t, h * hd]);
        match &self.o {
            Some(o) => linear_t(out, o),
            None => self.o_proj.forward(out),
        }
    }
}
