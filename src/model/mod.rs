//! The Llama-family decoder and its parts.

#[cfg(feature = "engine")]
mod attention;
#[cfg(feature = "engine")]
mod cache;
mod config;
#[cfg(feature = "engine")]
mod fused;
#[cfg(feature = "engine")]
mod llama;
pub mod lora;
#[cfg(feature = "engine")]
mod matmul;
#[cfg(feature = "engine")]
mod mlp;
#[cfg(feature = "engine")]
mod rope;
#[cfg(feature = "engine")]
mod rows;

/// What the lib's tests compare tensors with.
#[cfg(all(test, feature = "engine"))]
mod testing {
    use burn::tensor::TensorData;

    /// The largest difference between two tensors' elements, relative to the second's (at least 1).
    pub fn worst_relative(a: TensorData, b: TensorData) -> f32 {
        let (a, b) = (a.try_into_vec_as::<f32>().unwrap(), b.try_into_vec_as::<f32>().unwrap());
        assert_eq!(a.len(), b.len(), "tensors of different sizes");
        a.iter().zip(&b).map(|(p, q)| (p - q).abs() / q.abs().max(1.0)).fold(0f32, f32::max)
    }
}

pub use config::LlamaConfig;
pub use lora::LoraConfig;
#[cfg(feature = "engine")]
pub use {
    attention::Attention,
    fused::{log_softmax, silu, softmax},
    matmul::{matmul, matmul_t},
    cache::KvCache,
    llama::{Batch, Block, Llama, token_out_of_vocabulary},
    lora::{LoraAdapter, LoraLinear, with_dropout_stream},
    mlp::Mlp,
    rope::{RopeAngles, RotaryEmbedding},
};
