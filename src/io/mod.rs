//! Checkpoint and tokenizer formats. Every loader turns its format into a [`Checkpoint`]
//! (config, transformers-named host tensors, tokenizer, chat template); [`LoadedModel`] puts it on
//! a device.

mod bytes;
mod chat;
mod describe;
pub mod gguf;
mod gguf_model;
pub mod peft;
pub mod hf;
pub mod llama2c;
mod spm;
mod tokenizer;
mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use serde::Serialize;

pub use chat::{ChatTemplate, Message};
pub use spm::SpmTokenizer;
pub use tokenizer::{HfSpecials, Tokenizer};
pub use weights::{Deferred, HostTensor, Matrix, Weights, check_rotary_heads, rotary_row_sources, unpermute_rotary_rows};

use crate::model::{Llama, LlamaConfig};
use crate::{Error, Result};

/// Reports load progress: a stage name ("read", "dequantize", "upload") and its fraction done.
pub type Progress<'a> = dyn FnMut(&str, f32) + 'a;

#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub format: String,
    pub name: Option<String>,
    /// Tensor count per stored type (e.g. Q4_1: 210, F32: 61).
    pub tensor_types: BTreeMap<String, usize>,
    pub file_bytes: usize,
}

/// A checkpoint read into host memory, not yet on a device.
pub struct Checkpoint {
    pub config: LlamaConfig,
    pub weights: Weights,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    pub info: ModelInfo,
}

/// Which loader a file needs, told by its content rather than its name where possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Llama2c,
}

impl ModelFormat {
    pub fn sniff(bytes: &[u8]) -> Self {
        // A cut-off GGUF magic still reads as GGUF, so its error says "truncated".
        let gguf = bytes.starts_with(b"GGUF") || (!bytes.is_empty() && b"GGUF".starts_with(bytes));
        if gguf { Self::Gguf } else { Self::Llama2c }
    }
}

impl Checkpoint {
    /// A single-file model (GGUF or llama2.c `.bin`) from its bytes; a llama2.c model needs its
    /// `tokenizer.bin` bytes too. An external tokenizer replaces a GGUF's embedded one.
    pub fn from_bytes(model: &[u8], tokenizer: Option<&[u8]>, progress: &mut Progress) -> Result<Self> {
        let mut ckpt = match ModelFormat::sniff(model) {
            ModelFormat::Gguf => gguf_model::load(model, progress)?,
            ModelFormat::Llama2c => llama2c::load(model, progress)?,
        };
        if let Some(tok) = tokenizer {
            ckpt.tokenizer = Some(tokenizer_from_bytes(tok, ckpt.config.vocab_size)?);
        }
        Ok(ckpt)
    }

    pub fn into_model(self, device: &Device, progress: &mut Progress) -> Result<LoadedModel> {
        let Checkpoint { config, mut weights, tokenizer, chat_template, info } = self;
        let tokenizer = tokenizer.ok_or_else(|| {
            Error::Tokenizer(
                "this checkpoint carries no tokenizer; pass one with --tokenizer \
                 (tokenizer.bin for llama2.c, tokenizer.json for HF)"
                    .into(),
            )
        })?;
        tokenizer.check_fits(config.vocab_size)?;
        progress("upload", 0.0);
        let cpu = crate::backend::is_cpu(device);
        if cpu {
            weights.defer_blocks();
        }
        let model = Llama::from_weights(&config, &mut weights, device)?;
        // Decoding on the host needs them only on the CPU; kept for a GPU they would only hold memory.
        // A quantized GGUF's blocks, handed to the CPU decoder so it need not find them again.
        crate::decode::prime(&model, if cpu { weights.take_spent_blocks() } else { Default::default() });
        progress("upload", 1.0);
        Ok(LoadedModel { model, tokenizer, chat_template, config, info, device: device.clone() })
    }
}

/// A tokenizer file: HF `tokenizer.json` (starts with `{`) or llama2.c `tokenizer.bin`.
pub fn tokenizer_from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Tokenizer> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Tokenizer::from_hf_json(bytes, &HfSpecials::default())
    } else {
        llama2c::load_tokenizer(bytes, vocab_size)
    }
}

/// A model on a device with everything needed to talk to it.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub config: LlamaConfig,
    pub info: ModelInfo,
    pub device: Device,
}

impl LoadedModel {
    /// Prompt text for `messages` using the checkpoint's chat template.
    pub fn chat_prompt(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let t = self.chat_template.as_ref().ok_or_else(|| {
            Error::Template("this model has no chat template; run without --chat".into())
        })?;
        t.render(messages, add_generation_prompt)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path.display(), e))
}

/// Reads a checkpoint from disk: a `.gguf` file, an HF directory, or a llama2.c `.bin` (then
/// `tokenizer` is required).
pub fn load_checkpoint(path: &Path, tokenizer: Option<&Path>, progress: &mut Progress) -> Result<Checkpoint> {
    if path.is_dir() {
        return load_hf_dir(path, tokenizer, progress);
    }
    let bytes = read(path)?;
    let tok = tokenizer.map(read).transpose()?;
    Checkpoint::from_bytes(&bytes, tok.as_deref(), progress)
}

fn load_hf_dir(dir: &Path, tokenizer: Option<&Path>, progress: &mut Progress) -> Result<Checkpoint> {
    let config = read(&dir.join("config.json")).map_err(|e| {
        Error::format(format!("{} is a directory but not an HF checkpoint: {e}", dir.display()))
    })?;
    let single = dir.join("model.safetensors");
    let shard_files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else {
        let index_path = dir.join("model.safetensors.index.json");
        let index = read(&index_path).map_err(|_| {
            Error::format(format!("{} has no model.safetensors (nor a sharded index)", dir.display()))
        })?;
        let files = hf::shard_names(&index)?;
        files.iter().map(|f| shard_path(dir, f)).collect::<Result<_>>()?
    };
    let shards = shard_files.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
    let tok_path = dir.join("tokenizer.json");
    let tok = tok_path.exists().then(|| read(&tok_path)).transpose()?;
    let tok_cfg_path = dir.join("tokenizer_config.json");
    let tok_cfg = tok_cfg_path.exists().then(|| read(&tok_cfg_path)).transpose()?;
    let template_path = dir.join("chat_template.jinja");
    let chat_template = template_path
        .exists()
        .then(|| std::fs::read_to_string(&template_path).map_err(|e| Error::io(template_path.display(), e)))
        .transpose()?;
    let mut ckpt = hf::load(
        hf::HfParts {
            config_json: &config,
            safetensors: shards.iter().map(Vec::as_slice).collect(),
            tokenizer_json: tok.as_deref(),
            tokenizer_config_json: tok_cfg.as_deref(),
            chat_template,
        },
        progress,
    )?;
    // An external tokenizer replaces the directory's, whatever its format (as for single files).
    if let Some(path) = tokenizer {
        ckpt.tokenizer = Some(tokenizer_from_bytes(&read(path)?, ckpt.config.vocab_size)?);
    }
    Ok(ckpt)
}

/// A shard of the checkpoint in `dir` (its name checked by [`hf::shard_names`]): a regular file,
/// not a device or a pipe (a link is followed: the Hugging Face cache links shards to its blobs).
fn shard_path(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    let meta = std::fs::metadata(&path).map_err(|e| Error::io(path.display(), e))?;
    if !meta.is_file() {
        return Err(Error::format(format!("shard {} is not a regular file", path.display())));
    }
    Ok(path)
}

/// Loads a model from disk onto `device`.
pub fn load_model(path: &Path, tokenizer: Option<&Path>, device: &Device, progress: &mut Progress) -> Result<LoadedModel> {
    load_checkpoint(path, tokenizer, progress)?.into_model(device, progress)
}
