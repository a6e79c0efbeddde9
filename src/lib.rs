//! alignlab: an alignment lab engine on burn.
//!
//! The engine is backend-agnostic: every tensor lives on a [`burn::tensor::Device`] chosen at run
//! time (NdArray or Flex on the CPU, wgpu on Vulkan/WebGPU). Nothing here knows about the DOM.
//!
//! - [`model`]: the Llama-family decoder (RMSNorm, RoPE, GQA attention, SwiGLU, KV cache).
//! - [`io`]: checkpoint loaders (GGUF, HF safetensors, llama2.c) and tokenizers, chat templates.
//! - [`generate`]: greedy and sampled decoding with streaming.
//! - [`logps`]: per-token log-probabilities of completions, the primitive alignment builds on.
//! - [`align`]: DPO, KTO, reward models, SFT, RL on one trainer; [`judges`]; [`data`] (TRL JSONL).
//! - [`lab`]: sessions, the policy, reward sources and runs: what the page and the CLI both drive.
//! - [`worker`]: the browser app's worker protocol and router; `app` is the Leptos page.
//!
//! The feature `engine` (on by default) builds the engine. Without it the crate is the lab's
//! settings, file formats and summaries, the worker's protocol and the page: what the page's
//! wasm needs, without burn (`scripts/build-web`).

pub mod align;
#[cfg(all(target_arch = "wasm32", feature = "page"))]
pub mod app;
pub mod backend;
pub mod data;
#[cfg(feature = "engine")]
pub mod decode;
pub mod error;
pub mod generate;
#[cfg(feature = "engine")]
pub mod io;
pub mod judges;
pub mod model;
pub mod lab;
#[cfg(feature = "engine")]
pub mod logps;
pub mod worker;

pub use error::{Error, Result};
#[cfg(feature = "engine")]
pub use io::{LoadedModel, load_model};
