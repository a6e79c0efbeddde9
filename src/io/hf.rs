//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or sharded with an index) +
//! `tokenizer.json` (+ `tokenizer_config.json` for special tokens and the chat template).

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::{ChatTemplate, Checkpoint, HfSpecials, HostTensor, ModelInfo, Progress, Tokenizer, Weights};
use crate::model::LlamaConfig;
use crate::{Error, Result};

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ctx() -> usize {
    2048
}

/// The parts of an HF checkpoint, as bytes (the browser gets them from fetch or a file drop).
pub struct HfParts<'a> {
    pub config_json: &'a [u8],
    pub safetensors: Vec<&'a [u8]>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub tokenizer_config_json: Option<&'a [u8]>,
    pub chat_template: Option<String>,
}

pub fn parse_config(config_json: &[u8]) -> Result<(LlamaConfig, Option<u32>, Option<u32>)> {
    let c: HfConfig = serde_json::from_slice(config_json)
        .map_err(|e| Error::format(format!("config.json is not a valid Llama config: {e}")))?;
    if let Some(t) = &c.model_type {
        if !matches!(t.as_str(), "llama" | "mistral") {
            return Err(Error::Unsupported(format!(
                "model_type '{t}' is not supported; alignlab runs Llama-family models"
            )));
        }
    }
    if c.attention_bias || c.mlp_bias {
        return Err(Error::Unsupported("Llama variants with bias terms are not supported".into()));
    }
    let first_id = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    };
    let cfg = LlamaConfig {
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads.max(1)),
        rope_theta: c.rope_theta,
        rms_norm_eps: c.rms_norm_eps,
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
    };
    cfg.validate()?;
    Ok((cfg, first_id(&c.bos_token_id), first_id(&c.eos_token_id)))
}

/// The shard files `model.safetensors.index.json` names, sorted and once each. Each must be a
/// plain `.safetensors` file name (no directory, no `..`, no absolute path), so a hostile index
/// cannot point the loader outside the checkpoint's directory.
pub fn shard_names(index_json: &[u8]) -> Result<Vec<String>> {
    let index: serde_json::Value = serde_json::from_slice(index_json)
        .map_err(|e| Error::format(format!("model.safetensors.index.json is invalid: {e}")))?;
    let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
        Error::format("model.safetensors.index.json has no weight_map object; the index is corrupt")
    })?;
    let mut files = Vec::new();
    for v in map.values() {
        let name = v.as_str().ok_or_else(|| Error::format("model.safetensors.index.json maps a tensor to a non-string"))?;
        let plain = !name.is_empty()
            && !name.contains(['/', '\\', ':', '\0'])
            && !name.starts_with('.')
            && name.ends_with(".safetensors");
        if !plain {
            return Err(Error::format(format!(
                "model.safetensors.index.json names the shard '{name}', which is not a plain \
                 .safetensors file name in the checkpoint's directory; the index is corrupt or hostile"
            )));
        }
        files.push(name.to_string());
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::format("model.safetensors.index.json names no shards"));
    }
    Ok(files)
}

pub fn load(parts: HfParts, progress: &mut Progress) -> Result<Checkpoint> {
    let (mut config, bos_id, eos_id) = parse_config(parts.config_json)?;
    let mut weights = Weights::default();
    let mut tensor_types = BTreeMap::new();
    let file_bytes = parts.safetensors.iter().map(|b| b.len()).sum();
    let n_files = parts.safetensors.len();
    for (fi, bytes) in parts.safetensors.into_iter().enumerate() {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format(format!("model.safetensors is not a valid safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F16 => view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                other => {
                    return Err(Error::Unsupported(format!(
                        "tensor '{name}' has dtype {other:?}; supported are F32, F16 and BF16"
                    )));
                }
            };
            *tensor_types.entry(format!("{:?}", view.dtype())).or_insert(0) += 1;
            weights.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        progress("read", (fi + 1) as f32 / n_files as f32);
    }
    // Some exports omit lm_head when it is tied, without saying so in config.json.
    if !weights.contains("lm_head.weight") {
        config.tie_word_embeddings = true;
    }

    let tok_cfg: Option<serde_json::Value> = match parts.tokenizer_config_json {
        Some(b) => Some(
            serde_json::from_slice(b).map_err(|e| Error::format(format!("tokenizer_config.json is invalid JSON: {e}")))?,
        ),
        None => None,
    };
    let special = |key: &str| -> Option<String> {
        match tok_cfg.as_ref()?.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v.get("content")?.as_str().map(str::to_string),
        }
    };
    let tokenizer = match parts.tokenizer_json {
        Some(json) => {
            let specials = HfSpecials {
                bos_token: special("bos_token"),
                eos_token: special("eos_token"),
                bos_id,
                eos_id,
                add_bos: tok_cfg.as_ref().and_then(|c| c.get("add_bos_token")?.as_bool()).unwrap_or(false),
            };
            Some(Tokenizer::from_hf_json(json, &specials)?)
        }
        None => None,
    };
    let template_src = parts.chat_template.or_else(|| {
        tok_cfg.as_ref()?.get("chat_template")?.as_str().map(str::to_string)
    });
    let chat_template = template_src.map(|src| {
        let name = |id: Option<u32>| {
            id.and_then(|i| tokenizer.as_ref()?.id_to_token(i)).unwrap_or_default()
        };
        ChatTemplate::new(
            src,
            special("bos_token").unwrap_or_else(|| name(tokenizer.as_ref().and_then(|t| t.bos_id))),
            special("eos_token").unwrap_or_else(|| name(tokenizer.as_ref().and_then(|t| t.eos_id))),
        )
    });
    let info = ModelInfo { format: "HF safetensors".into(), name: None, tensor_types, file_bytes };
    Ok(Checkpoint { config, weights, tokenizer, chat_template, info })
}

/// A model as the files of an HF checkpoint (`config.json` + `model.safetensors`, f32,
/// transformers' names; plus `tokenizer.json` when the tokenizer is an HF one): how a fully
/// fine-tuned model, or a policy with its adapter merged in, leaves the lab. Active adapters are
/// merged into the weights written.
pub async fn save_hf(model: &crate::model::Llama, config: &LlamaConfig, tokenizer: &Tokenizer) -> Result<Vec<(String, Vec<u8>)>> {
    use crate::backend::read_f32;
    use burn::tensor::Tensor;
    /// A tensor's shape and little-endian f32 bytes, whatever its rank.
    async fn host<const D: usize>(t: Tensor<D>) -> Result<(Vec<usize>, Vec<u8>)> {
        let shape = t.dims().to_vec();
        Ok((shape, read_f32(t).await?.iter().flat_map(|x| x.to_le_bytes()).collect()))
    }
    let mut tensors: Vec<(String, (Vec<usize>, Vec<u8>))> = Vec::new();
    tensors.push(("model.embed_tokens.weight".into(), host(model.embed_tokens.weight.val()).await?));
    for (path, lin) in model.linears() {
        tensors.push((format!("{path}.weight"), host(lin.effective_weight().transpose()).await?));
    }
    for (i, b) in model.layers.iter().enumerate() {
        tensors.push((format!("model.layers.{i}.input_layernorm.weight"), host(b.input_layernorm.gamma.val()).await?));
        tensors.push((format!("model.layers.{i}.post_attention_layernorm.weight"), host(b.post_attention_layernorm.gamma.val()).await?));
    }
    tensors.push(("model.norm.weight".into(), host(model.norm.gamma.val()).await?));
    if let Some(head) = &model.lm_head {
        tensors.push(("lm_head.weight".into(), host(head.weight.val().transpose()).await?));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (shape, b))| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| Error::format(e.to_string()))?))
        })
        .collect::<Result<_>>()?;
    let weights = safetensors::serialize(views, None).map_err(|e| Error::format(e.to_string()))?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim, "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings, "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "torch_dtype": "float32",
    });
    let mut files = vec![("model.safetensors".to_string(), weights), ("config.json".into(), serde_json::to_vec_pretty(&cfg).unwrap())];
    if let Some(json) = tokenizer.to_hf_json() {
        files.push(("tokenizer.json".into(), json.into_bytes()));
    }
    Ok(files)
}
