//! llama2.c checkpoints (the "legacy" `.bin` of run.c) and their `tokenizer.bin`.
//! Format: 7 little-endian i32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
//! seq_len; negative vocab means an untied classifier at the end), then f32 tensors in a fixed
//! order, each layer-stacked. Weights are in Meta's interleaved rotary layout.

use std::collections::BTreeMap;

use super::bytes::{ByteReader, product};
use super::spm::SpmTokenizer;
use super::{Checkpoint, HostTensor, ModelInfo, Progress, Tokenizer, Weights, unpermute_rotary_rows};
use crate::model::LlamaConfig;
use crate::{Error, Result};

pub fn load(bytes: &[u8], progress: &mut Progress) -> Result<Checkpoint> {
    if bytes.len() < 28 {
        return Err(Error::format(format!(
            "not a model file: {} bytes is too short for any supported format (GGUF, llama2.c .bin, \
             or an HF directory)",
            bytes.len()
        )));
    }
    let h: Vec<i32> = bytes[..28].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    let (dim, hidden, layers, heads, kv_heads, vocab, seq_len) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    let sane = |x: i32, max: i32| x > 0 && x <= max;
    if !(sane(dim, 1 << 16) && sane(hidden, 1 << 18) && sane(layers, 512) && sane(heads, 1024)
        && sane(kv_heads, 1024) && vocab != 0 && vocab.unsigned_abs() <= 1 << 20 && sane(seq_len, 1 << 20))
    {
        return Err(Error::format(format!(
            "not a model file: not GGUF, not an HF directory, and its first bytes are not a \
             plausible llama2.c header (read dim={dim} hidden={hidden} layers={layers} heads={heads} \
             kv_heads={kv_heads} vocab={vocab} seq_len={seq_len})"
        )));
    }
    let (d, f, l, nh, nkv, v, s) =
        (dim as usize, hidden as usize, layers as usize, heads as usize, kv_heads as usize, vocab.unsigned_abs() as usize, seq_len as usize);
    let shared = vocab > 0;
    let config = LlamaConfig {
        vocab_size: v,
        hidden_size: d,
        intermediate_size: f,
        num_hidden_layers: l,
        num_attention_heads: nh,
        num_key_value_heads: nkv,
        head_dim: d / nh,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: s,
        tie_word_embeddings: shared,
    };
    config.validate()?;
    let hs = config.head_dim;
    let kv = nkv * hs;

    // The exact size the header implies, counted in u64 before anything is read or allocated.
    let (du, fu, lu, vu, su, kvu) = (d as u64, f as u64, l as u64, v as u64, s as u64, kv as u64);
    let per_layer = product(&[du, du], "q/o")?
        .checked_mul(2)
        .and_then(|x| x.checked_add(product(&[kvu, du], "k/v").ok()?.checked_mul(2)?))
        .and_then(|x| x.checked_add(product(&[fu, du], "ffn").ok()?.checked_mul(3)?))
        .and_then(|x| x.checked_add(2 * du));
    let classifier = if shared { Some(0) } else { product(&[su, hs as u64], "freq_cis")?.checked_add(product(&[vu, du], "wcls")?) };
    let floats_needed = per_layer
        .and_then(|p| p.checked_mul(lu))
        .and_then(|x| x.checked_add(product(&[vu, du], "tok_embeddings").ok()?))
        .and_then(|x| x.checked_add(du))
        .and_then(|x| x.checked_add(classifier?))
        .ok_or_else(|| Error::format("llama2.c header describes a model too large to exist; the file is corrupt"))?;
    let have = (bytes.len() as u64 - 28) / 4;
    if floats_needed > have {
        return Err(Error::format(format!(
            "llama2.c checkpoint is truncated: its header (dim={dim}, layers={layers}, vocab={vocab}) \
             needs {} bytes but the file has {}; the download is probably incomplete",
            floats_needed as u128 * 4 + 28,
            bytes.len()
        )));
    }
    // From here every size below fits in the file, hence in usize.
    let mut r = ByteReader::new(&bytes[28..], "llama2.c checkpoint");
    let mut next = |n: usize, what: &str| -> Result<Vec<f32>> {
        let chunk = r.take(n as u64 * 4, what)?;
        Ok(chunk.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    };

    let mut w = Weights::default();
    w.insert("model.embed_tokens.weight", HostTensor::new(vec![v, d], next(v * d, "tok_embeddings")?));
    // Layer-stacked tensors: split [L, ...] into one per layer under HF names.
    let mut stacked = |w: &mut Weights, name: &str, rows: usize, cols: usize, heads_for_rope: Option<usize>| -> Result<()> {
        let all = next(l * rows * cols, name)?;
        for (i, chunk) in all.chunks_exact(rows * cols).enumerate() {
            let shape = if cols == 1 { vec![rows] } else { vec![rows, cols] };
            let mut t = HostTensor::new(shape, chunk.to_vec());
            if let Some(n) = heads_for_rope {
                t = unpermute_rotary_rows(&t, n)?;
            }
            w.insert(format!("model.layers.{i}.{name}.weight"), t);
        }
        Ok(())
    };
    stacked(&mut w, "input_layernorm", d, 1, None)?;
    stacked(&mut w, "self_attn.q_proj", d, d, Some(nh))?;
    stacked(&mut w, "self_attn.k_proj", kv, d, Some(nkv))?;
    stacked(&mut w, "self_attn.v_proj", kv, d, None)?;
    stacked(&mut w, "self_attn.o_proj", d, d, None)?;
    progress("read", 0.5);
    stacked(&mut w, "post_attention_layernorm", d, 1, None)?;
    stacked(&mut w, "mlp.gate_proj", f, d, None)?;
    stacked(&mut w, "mlp.down_proj", d, f, None)?;
    stacked(&mut w, "mlp.up_proj", f, d, None)?;
    w.insert("model.norm.weight", HostTensor::new(vec![d], next(d, "rms_final")?));
    if !shared {
        next(s * hs, "freq_cis")?; // RoPE tables, recomputed at load
        w.insert("lm_head.weight", HostTensor::new(vec![v, d], next(v * d, "wcls")?));
    }
    progress("read", 1.0);

    let mut tensor_types = BTreeMap::new();
    tensor_types.insert("F32".to_string(), w.len());
    let info = ModelInfo { format: "llama2.c".into(), name: None, tensor_types, file_bytes: bytes.len() };
    Ok(Checkpoint { config, weights: w, tokenizer: None, chat_template: None, info })
}

/// llama2.c `tokenizer.bin`: i32 max_token_length, then per token f32 score, i32 length, bytes.
pub fn load_tokenizer(bytes: &[u8], vocab_size: usize) -> Result<Tokenizer> {
    let bad = |m: String| Error::Tokenizer(format!("llama2.c tokenizer file is invalid: {m}"));
    let mut r = ByteReader::new(bytes, "llama2.c tokenizer");
    r.take(4, "max_token_length")?;
    // Each token takes at least 8 bytes; a vocabulary the file cannot hold is refused unallocated.
    let vocab = r.check_count(vocab_size as u64, 8, "the model's vocabulary").map_err(|_| {
        bad(format!(
            "it is {} bytes, too short for the model's {vocab_size} tokens; tokenizer and model do not belong together",
            bytes.len()
        ))
    })?;
    let mut pieces = Vec::with_capacity(vocab);
    let mut scores = Vec::with_capacity(vocab);
    for i in 0..vocab {
        let score = r.f32("a token score")?;
        let len = r.i32("a token length")?;
        let len = u64::try_from(len).map_err(|_| bad(format!("token {i} has negative length {len}")))?;
        let piece = r.take(len, "a token").map_err(|_| bad(format!("token {i} runs past the end")))?;
        pieces.push(String::from_utf8_lossy(piece).into_owned());
        scores.push(score);
    }
    if !r.is_empty() {
        return Err(bad(format!(
            "{} bytes are left after {vocab_size} tokens; it was made for a model with a larger vocabulary",
            r.remaining()
        )));
    }
    let control = (0..vocab).map(|i| i < 3).collect();
    let spm = SpmTokenizer::new(pieces, scores, control, ' ')?;
    let special = |id: u32| (id < vocab as u32).then_some(id);
    Ok(Tokenizer::from_spm(spm, special(1), special(2), "llama2.c tokenizer.bin"))
}
