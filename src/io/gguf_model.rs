//! GGUF (`general.architecture = llama`) to a [`Checkpoint`]: config from the `llama.*` keys,
//! tensors renamed to transformers' names, q/k rows un-permuted, tokenizer and chat template from
//! the embedded `tokenizer.*` keys.

use std::collections::BTreeMap;

use super::bytes::to_usize;
use super::gguf::{GgufFile, Value};
use super::spm::SpmTokenizer;
use super::{ChatTemplate, Checkpoint, HostTensor, ModelInfo, Progress, Tokenizer, Weights, check_rotary_heads, rotary_row_sources, unpermute_rotary_rows};
use crate::decode::quant::QMatrix;
use crate::model::LlamaConfig;
use crate::{Error, Result};

pub fn load(bytes: &[u8], progress: &mut Progress) -> Result<Checkpoint> {
    let f = GgufFile::parse(bytes)?;
    let arch = f.get("general.architecture").and_then(Value::as_str).unwrap_or("");
    if arch != "llama" {
        return Err(Error::Unsupported(format!(
            "GGUF architecture '{arch}' is not supported; alignlab runs Llama-family models \
             (general.architecture = llama), e.g. SmolLM2, TinyLlama, Llama 2/3"
        )));
    }
    let config = config(&f)?;
    let tokenizer = tokenizer(&f)?;
    let chat_template = f.get("tokenizer.chat_template").and_then(Value::as_str).map(|src| {
        let name = |key: &str| {
            f.get(key)
                .and_then(Value::as_u64)
                .and_then(|id| tokenizer.as_ref().and_then(|t| t.id_to_token(id as u32)))
                .unwrap_or_default()
        };
        ChatTemplate::new(src, name("tokenizer.ggml.bos_token_id"), name("tokenizer.ggml.eos_token_id"))
    });

    let mut weights = Weights::default();
    let mut tensor_types = BTreeMap::new();
    let total = f.tensors.len();
    for (i, t) in f.tensors.iter().enumerate() {
        let Some(name) = hf_name(&t.name) else { continue };
        *tensor_types.entry(t.type_name()).or_insert(0) += 1;
        let heads = if name.ends_with("q_proj.weight") {
            Some(config.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(config.num_key_value_heads)
        } else {
            None
        };
        let shape = t.shape()?;
        // A matrix of Q4_1 or Q8_0 blocks stays as its blocks (rows un-permuted): the CPU decoder
        // reads them as they are, and the model's f32 copy is dequantized when it is built.
        let blocks = match (f.quantized(t)?, shape.as_slice()) {
            (Some((ty, bytes)), &[rows, cols]) => QMatrix::from_gguf(ty, rows, cols, bytes).map(|q| (q, rows)),
            _ => None,
        };
        if let Some((q, rows)) = blocks {
            let q = match heads {
                Some(h) => {
                    check_rotary_heads(rows, h)?;
                    q.rows_from(&rotary_row_sources(rows, h))
                }
                None => q,
            };
            weights.insert_blocks(name, q);
        } else {
            let mut host = HostTensor::new(shape, f.dequantize(t)?);
            if let Some(heads) = heads {
                host = unpermute_rotary_rows(&host, heads)?;
            }
            weights.insert(name, host);
        }
        progress("dequantize", (i + 1) as f32 / total as f32);
    }
    let mut config = config;
    config.tie_word_embeddings = !weights.contains("lm_head.weight");
    let info = ModelInfo {
        format: format!("GGUF v{}", f.version),
        name: f.get("general.name").and_then(Value::as_str).map(str::to_string),
        tensor_types,
        file_bytes: bytes.len(),
    };
    Ok(Checkpoint { config, weights, tokenizer, chat_template, info })
}

fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let i: usize = i.parse().ok()?;
            let hf = match part {
                "attn_norm.weight" => "input_layernorm.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => return None,
            };
            format!("model.layers.{i}.{hf}")
        }
    })
}

fn config(f: &GgufFile) -> Result<LlamaConfig> {
    let need = |key: &str| -> Result<usize> {
        let v = f.get(key).and_then(Value::as_u64).ok_or_else(|| {
            Error::format(format!("GGUF metadata lacks '{key}' (a non-negative integer), which a llama model must have"))
        })?;
        to_usize(v, key)
    };
    let optional = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| to_usize(v, key)).transpose();
    let hidden_size = need("llama.embedding_length")?;
    let heads = need("llama.attention.head_count")?;
    let kv_heads = need("llama.attention.head_count_kv").unwrap_or(heads);
    let vocab_size = match optional("llama.vocab_size")? {
        Some(v) => v,
        None => to_usize(
            f.tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| Error::format("GGUF file has no token_embd.weight tensor"))?,
            "the vocabulary size",
        )?,
    };
    let head_dim = match optional("llama.attention.key_length")? {
        Some(v) => v,
        None if heads > 0 => hidden_size / heads,
        None => 0,
    };
    let cfg = LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: need("llama.feed_forward_length")?,
        num_hidden_layers: need("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rope_theta: f.get("llama.rope.freq_base").and_then(Value::as_f64).unwrap_or(10_000.0),
        rms_norm_eps: f.get("llama.attention.layer_norm_rms_epsilon").and_then(Value::as_f64).unwrap_or(1e-5),
        max_position_embeddings: need("llama.context_length").unwrap_or(2048),
        tie_word_embeddings: true,
    };
    if let Some(rope_dims) = f.get("llama.rope.dimension_count").and_then(Value::as_u64) {
        if rope_dims != cfg.head_dim as u64 {
            return Err(Error::Unsupported(format!(
                "partial rotary embeddings (rope.dimension_count {rope_dims} < head size {}) are not supported",
                cfg.head_dim
            )));
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

fn strings<'f>(f: &'f GgufFile, key: &str) -> Result<Option<&'f [String]>> {
    let Some(v) = f.get(key) else { return Ok(None) };
    v.as_array()
        .and_then(|a| a.strings())
        .map(Some)
        .ok_or_else(|| Error::format(format!("GGUF '{key}' is not an array of strings")))
}

fn numbers(f: &GgufFile, key: &str) -> Option<Vec<f64>> {
    f.get(key)?.as_array()?.numbers()
}

fn tokenizer(f: &GgufFile) -> Result<Option<Tokenizer>> {
    let Some(tokens) = strings(f, "tokenizer.ggml.tokens")? else { return Ok(None) };
    if tokens.is_empty() {
        return Err(Error::Tokenizer("the GGUF vocabulary (tokenizer.ggml.tokens) is empty".into()));
    }
    // Special ids are only kept when they name a token of the vocabulary.
    let id = |key: &str| -> Result<Option<u32>> {
        match f.get(key).and_then(Value::as_u64) {
            Some(v) if v < tokens.len() as u64 => Ok(Some(v as u32)),
            Some(v) => Err(Error::Tokenizer(format!(
                "GGUF '{key}' = {v} is not a token of its {}-token vocabulary; the file is corrupt",
                tokens.len()
            ))),
            None => Ok(None),
        }
    };
    let (bos, eos) = (id("tokenizer.ggml.bos_token_id")?, id("tokenizer.ggml.eos_token_id")?);
    let types: Vec<i32> = numbers(f, "tokenizer.ggml.token_type")
        .map(|v| v.into_iter().map(|x| x as i32).collect())
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(Error::format(format!(
            "GGUF tokenizer has {} tokens but {} token types",
            tokens.len(),
            types.len()
        )));
    }
    let model = f.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
    let add_bos = f.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool);
    match model {
        "gpt2" => {
            let merges = strings(f, "tokenizer.ggml.merges")?
                .ok_or_else(|| Error::format("GGUF gpt2 tokenizer has no tokenizer.ggml.merges"))?;
            let pre = f.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
            Tokenizer::from_gguf_bpe(tokens, &types, merges, pre, bos, eos, add_bos.unwrap_or(false)).map(Some)
        }
        "llama" => {
            let scores: Vec<f32> = numbers(f, "tokenizer.ggml.scores")
                .ok_or_else(|| Error::format("GGUF llama tokenizer has no tokenizer.ggml.scores"))?
                .into_iter()
                .map(|x| x as f32)
                .collect();
            let control = types.iter().map(|&t| t == 2 || t == 3).collect();
            let mut spm = SpmTokenizer::new(tokens.to_vec(), scores, control, '\u{2581}')?;
            spm.add_dummy_prefix = f.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
            let mut t = Tokenizer::from_spm(spm, bos, eos, "gguf llama SentencePiece");
            t.add_bos = add_bos.unwrap_or(true);
            Ok(Some(t))
        }
        other => Err(Error::Unsupported(format!(
            "GGUF tokenizer model '{other}' is not supported (only 'gpt2' byte-level BPE and 'llama' SentencePiece)"
        ))),
    }
}
