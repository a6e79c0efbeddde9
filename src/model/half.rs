//! A copy of the model for decoding on a GPU that computes in f16: the weights of its matrix
//! products in half precision, so a decoding step, which reads every weight once, reads half the
//! bytes of f32.
//!
//! Only the products' weights are cast: the base projections, the embedding and the head. The
//! rest stays f32 as training has it: the residual stream, RMSNorm (it squares activations, and
//! f16 overflows above 65504, so at a value of about 256), the attention softmax, the rotary
//! tables, the masks, the key/value cache, the LoRA adapters (small, and trained in f32) and the
//! logits sampling reads. A product casts its input down to f16 and its output back up
//! ([`super::matmul`]); the embedding's rows come back up as they are looked up.
//!
//! The copy is made at the start of a generation, one cast per weight on the device, and dropped
//! at its end: it can never be older than the weights it copies (a merge, a full fine-tune), and it
//! takes half the model's size on the device only while a generation runs.

use burn::module::Param;
use burn::tensor::{Device, FloatDType, Tensor};

use super::Llama;
use crate::backend::is_cpu;

impl Llama {
    /// Whether decoding in f16 pays on `device`: a GPU whose adapter computes in f16 (WebGPU's
    /// `shader-f16`, Vulkan's `shaderFloat16`). The CPU backends decode from their own compact
    /// copy ([`crate::decode`]).
    pub fn decodes_in_half(device: &Device) -> bool {
        !is_cpu(device) && device.supports_dtype(FloatDType::F16)
    }

    /// This model with the weights of its products in f16, for decoding (call
    /// [`Llama::decodes_in_half`] first). The adapters and norms are shared with `self`, not
    /// copied.
    pub fn to_half(&self) -> Self {
        let mut half = self.clone();
        for (_, _, lin) in half.linears_mut() {
            cast(&mut lin.base.weight);
        }
        cast(&mut half.embed_tokens.weight);
        if let Some(head) = &mut half.lm_head {
            cast(&mut head.weight);
        }
        half
    }
}

fn cast<const D: usize>(p: &mut Param<Tensor<D>>) {
    *p = Param::from_tensor(p.val().cast(FloatDType::F16));
}
