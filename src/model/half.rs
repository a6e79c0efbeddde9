//! A copy of the model for decoding on a GPU that computes in f16: the weights of its matrix
//! products in half precision, so a decoding step, which reads every weight once, reads half the
//! bytes of f32.
//!
//! Only the products' weights are cast: the projections, the embedding and the head. An active
//! LoRA adapter is merged into its projection's copy, `W + scaling A B`, then cast: a GPU's
//! decoding step is as much its kernel launches as its bytes, and an unmerged adapter costs two
//! small products and an addition per projection per step. The rest stays f32 as training has it:
//! the residual stream, RMSNorm (it squares activations, and f16 overflows above 65504, so at a
//! value of about 256), the attention softmax, the rotary tables, the masks, the key/value cache
//! and the logits sampling reads. A product casts its input down to f16 and its output back up
//! ([`super::matmul`]); the embedding's rows come back up as they are looked up.
//!
//! The copy is made at the start of a generation, one cast per weight on the device, and dropped
//! at its end: it can never be older than the weights or the adapter it copies (a training step,
//! a merge, a full fine-tune), and it takes half the model's size on the device only while a
//! generation runs.

use burn::module::Param;
use burn::tensor::{Device, FloatDType, Tensor};

use super::Llama;
use crate::backend::is_cpu;

impl Llama {
    /// Whether `device` decodes from the f16 copy: a GPU whose adapter computes in f16 (WebGPU's
    /// `shader-f16`, Vulkan's `shaderFloat16`). The CPU backends decode from their own compact
    /// copy ([`crate::decode`]). The copy halves a step's bytes and adds two casts per product
    /// (docs/results.md: faster on lavapipe; 26 % slower on an H200, bound by its product kernel).
    pub fn decodes_in_half(device: &Device) -> bool {
        !is_cpu(device) && device.supports_dtype(FloatDType::F16)
    }

    /// This model with the weights of its products in f16 and its active adapters merged into
    /// them, for decoding (call [`Llama::decodes_in_half`] first). The norms are shared with
    /// `self`, not copied.
    pub fn to_half(&self) -> Self {
        let mut half = self.clone();
        for (_, _, lin) in half.linears_mut() {
            lin.base.weight = Param::from_tensor(lin.effective_weight().cast(FloatDType::F16));
            // Merged above (or disabled, or merged already): nothing left to add.
            lin.lora = None;
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
