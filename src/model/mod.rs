//! The Llama-family decoder and its parts.

mod attention;
mod cache;
mod config;
mod llama;
pub mod lora;
mod mlp;
mod rope;

pub use attention::Attention;
pub use cache::KvCache;
pub use config::LlamaConfig;
pub use llama::{Batch, Block, Llama, token_out_of_vocabulary};
pub use lora::{LoraAdapter, LoraConfig, LoraLinear};
pub use mlp::Mlp;
pub use rope::{RopeAngles, RotaryEmbedding};
