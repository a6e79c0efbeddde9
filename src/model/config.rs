use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hyper-parameters of a Llama-family decoder, named as in transformers' `LlamaConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head size; `hidden_size / num_attention_heads` unless the checkpoint says otherwise.
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Checks the relations the architecture relies on, so a bad header fails here with a clear
    /// message rather than as a shape panic deep inside a matmul.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::format(format!("model config is inconsistent: {m}")));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad(format!(
                "vocab_size={}, hidden_size={}, num_hidden_layers={} must all be positive",
                self.vocab_size, self.hidden_size, self.num_hidden_layers
            ));
        }
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("attention head counts must be positive".into());
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "num_key_value_heads ({}) must divide num_attention_heads ({})",
                self.num_key_value_heads, self.num_attention_heads
            ));
        }
        if self.head_dim == 0 || self.head_dim % 2 != 0 {
            return bad(format!("head_dim ({}) must be even and positive", self.head_dim));
        }
        if self.max_position_embeddings == 0 {
            return bad("max_position_embeddings must be positive".into());
        }
        // Bounds far above any model this lab can run, so sizes computed from them cannot overflow
        // and a corrupt header fails here, before a table or tensor is sized from it.
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 11),
        ];
        if let Some((name, v, max)) = limits.iter().find(|(_, v, max)| v > max) {
            return bad(format!("{name} = {v} is larger than any supported model ({max} at most)"));
        }
        if self.intermediate_size == 0 {
            return bad("intermediate_size must be positive".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(format!("rope_theta = {} must be a finite number above 1", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return bad(format!("rms_norm_eps = {} must be in (0, 1)", self.rms_norm_eps));
        }
        Ok(())
    }

    /// Number of parameters in the decoder (a tied head counts once). Fits in usize for a
    /// validated config on a 64-bit host; see [`Self::largest_weight_bytes`] for 32-bit checks.
    pub fn num_parameters(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let per_layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.num_hidden_layers * per_layer + d + head
    }

    /// Bytes of the largest weight at f32 (the embedding or a feed-forward matrix): what one GPU
    /// buffer must hold. Counted in u64, so a hostile header cannot wrap it on 32-bit wasm.
    pub fn largest_weight_bytes(&self) -> u64 {
        let rows = (self.vocab_size as u64).max(self.intermediate_size as u64);
        rows.saturating_mul(self.hidden_size as u64).saturating_mul(4)
    }
}
