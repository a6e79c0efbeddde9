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
