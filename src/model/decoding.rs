//! The decoding copy: the model as a GPU decodes from it, made at the start of a generation and
//! dropped at its end, so it can never be older than the weights or the adapter it copies (a
//! training step, a merge, a full fine-tune).
//!
//! A decoding step on a GPU has one row per sample. On an H200 its time went to kernel launches
//! (about a thousand a step, some 30 µs of the host's time each) and to burn's product kernel,
//! which gives one row a few output tiles (docs/results.md). The copy:
//! - merges every active LoRA adapter into its projection, `W + scaling A B`: no two small
//!   products and an addition per projection per step;
//! - puts q, k, v and the rotated q and k side by side, `[Wq | Wk | Wv | Wq R | Wk R]`, so a
//!   layer's attention inputs are one product. `R` is RoPE's `rotate_half` as a signed permutation
//!   of each head's columns, `[y1, y2] R = [-y2, y1]`, so `x (W R) = rotate_half(x W)` and the
//!   rotation needs no slicing and concatenation per step ([`super::RopeAngles::rotate_with`]);
//! - puts gate and up side by side, `[Wg | Wu]`: one product for both;
//! - keeps the products' weights by outputs, `[d_out, d_in]`, so that a step's few rows are a
//!   product and a sum spread over the whole GPU, each output reading its weights side by side
//!   ([`super::linear_t`]);
//! - in f16 on a GPU that computes in f16, keeps those weights, the embedding and the head in half
//!   precision: half the bytes a step reads. The rest stays f32 as training has it: the residual
//!   stream, RMSNorm (it squares activations, and f16 overflows above 65504, so at a value of about
//!   256), the attention softmax, the rotary tables, the masks, the key/value cache and the logits
//!   sampling reads. A step's sum reads the weights up to f32; a prompt's product casts its input
//!   down to f16 and its output back up ([`super::matmul`]); the embedding's rows come back up as
//!   they are looked up.
//!
//! The copy's own q, k, v, o, gate, up and down projections are the model's, shared and not read.

use burn::module::Param;
use burn::tensor::{Device, FloatDType, Tensor};

use super::Llama;
use super::rope::rotate_half;
use crate::backend::is_cpu;

impl Llama {
    /// Whether `device` can decode from an f16 copy: a GPU whose adapter computes in f16
    /// (WebGPU's `shader-f16`, Vulkan's `shaderFloat16`). The CPU backends decode from their own
    /// compact copy ([`crate::decode`]).
    pub fn decodes_in_half(device: &Device) -> bool {
        !is_cpu(device) && device.supports_dtype(FloatDType::F16)
    }

    /// The decoding copy, its products' weights in `dtype` (f16 only where
    /// [`Llama::decodes_in_half`]). The norms and the unfused projections' tensors are shared with
    /// `self`, not copied.
    pub fn for_decoding(&self, dtype: FloatDType) -> Self {
        let mut copy = self.clone();
        let stored = |w: Tensor<2>| Some(Param::from_tensor(by_outputs(w).cast(dtype)));
        for layer in &mut copy.layers {
            let a = &mut layer.self_attn;
            let hd = a.head_dim;
            let (q, k) = (a.q_proj.effective_weight(), a.k_proj.effective_weight());
            let v = a.v_proj.effective_weight();
            let (q_rot, k_rot) = (rotate_half_columns(q.clone(), hd), rotate_half_columns(k.clone(), hd));
            a.qkv = stored(Tensor::cat(vec![q, k, v, q_rot, k_rot], 1));
            a.o = stored(a.o_proj.effective_weight());
            let m = &mut layer.mlp;
            m.gate_up = stored(Tensor::cat(vec![m.gate_proj.effective_weight(), m.up_proj.effective_weight()], 1));
            m.down = stored(m.down_proj.effective_weight());
        }
        for (_, _, lin) in copy.linears_mut() {
            // Merged above, and not read: nothing left to add.
            lin.lora = None;
        }
        let weight = &mut copy.embed_tokens.weight;
        *weight = Param::from_tensor(weight.val().cast(dtype));
        if let Some(head) = &mut copy.lm_head {
            head.weight = Param::from_tensor(head.weight.val().cast(dtype));
        }
        copy
    }
}

/// `W [d_in, d_out]` laid out by outputs, `[d_out, d_in]` with each output's weights side by side
/// in memory ([`super::linear_t`] reads them so). The flattening cannot be a view of the
/// transpose, so it copies.
fn by_outputs(w: Tensor<2>) -> Tensor<2> {
    let [d_in, d_out] = w.dims();
    w.transpose().reshape([d_in * d_out]).reshape([d_out, d_in])
}

/// `W R` for `W [in, heads * head_dim]`: within each head, the columns `[w1, w2]` become
/// `[-w2, w1]`, so that `x (W R) = rotate_half(x W)`.
fn rotate_half_columns(w: Tensor<2>, head_dim: usize) -> Tensor<2> {
    let [d_in, d_out] = w.dims();
    rotate_half(w.reshape([1, d_in, d_out / head_dim, head_dim])).reshape([d_in, d_out])
}
