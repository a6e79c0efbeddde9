//! Grouped-query self-attention with rotary positions and an optional KV cache.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{KvCache, LoraLinear, RopeAngles, softmax};

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: LoraLinear,
    pub k_proj: LoraLinear,
    pub v_proj: LoraLinear,
    pub o_proj: LoraLinear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// `x: [batch, seq, hidden]`; `mask: [batch, 1, seq, past + seq]`, additive (0 or very negative).
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
        let q = rope.rotate(split_heads(self.q_proj.forward(x.clone()), h));
        let k = rope.rotate(split_heads(self.k_proj.forward(x.clone()), kvh));
        let v = split_heads(self.v_proj.forward(x), kvh);

        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let k = repeat_kv(k, h / kvh);
        let v = repeat_kv(v, h / kvh);

        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
        if let Some(mask) = mask {
            scores = scores + mask.clone();
        }
        let out = softmax(scores).matmul(v); // [b, h, t, hd]
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, t, h * hd]))
    }
}

/// Shares each key/value head among `groups` query heads: `[b, kv, s, d] -> [b, kv*groups, s, d]`.
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2).repeat_dim(2, groups).reshape([b, kv * groups, s, d])
}
