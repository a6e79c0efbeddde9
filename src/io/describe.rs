//! What a checkpoint is, for people and for programs: format, architecture, parameters, tensor
//! types, tokenizer and chat template (`alignlab info`).

use std::fmt::Write;

use serde_json::{Value, json};

use super::Checkpoint;

impl Checkpoint {
    /// A special token's text and id, e.g. `</s> (2)`.
    fn special(&self, id: Option<u32>) -> Option<String> {
        let (tok, id) = (self.tokenizer.as_ref()?, id?);
        tok.id_to_token(id).map(|s| format!("{s} ({id})"))
    }

    pub fn describe_json(&self) -> Value {
        let c = &self.config;
        json!({
            "format": self.info.format, "name": self.info.name, "architecture": "llama",
            "parameters": c.num_parameters(), "config": c, "tensor_types": self.info.tensor_types,
            "file_bytes": self.info.file_bytes,
            "tokenizer": self.tokenizer.as_ref().map(|t| json!({
                "kind": t.kind, "vocab_size": t.vocab_size(), "bos": self.special(t.bos_id), "eos": self.special(t.eos_id),
                "add_bos": t.add_bos, "stop_ids": t.stop_ids, "warnings": t.warnings,
            })),
            "chat_template": self.chat_template.as_ref().map(|t| t.source.clone()),
        })
    }

    pub fn describe(&self) -> String {
        let (c, mut out) = (&self.config, String::new());
        let _ = writeln!(out, "format        {}", self.info.format);
        if let Some(n) = &self.info.name {
            let _ = writeln!(out, "name          {n}");
        }
        let _ = writeln!(out, "architecture  llama: {} layers, hidden {}, ffn {}, heads {} (kv {}), head dim {}",
            c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let _ = writeln!(out, "              rope theta {}, rms eps {:e}, context {}, head {}", c.rope_theta, c.rms_norm_eps,
            c.max_position_embeddings, if c.tie_word_embeddings { "tied" } else { "separate" });
        let _ = writeln!(out, "parameters    {} ({:.1} M)", c.num_parameters(), c.num_parameters() as f64 / 1e6);
        let types: Vec<String> = self.info.tensor_types.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let _ = writeln!(out, "tensors       {} ({:.1} MB file)", types.join(", "), self.info.file_bytes as f64 / 1e6);
        let _ = match &self.tokenizer {
            Some(t) => writeln!(out, "tokenizer     {}, {} tokens, bos {}, eos {}, stops {:?}", t.kind, t.vocab_size(),
                self.special(t.bos_id).unwrap_or("-".into()), self.special(t.eos_id).unwrap_or("-".into()), t.stop_ids),
            None => writeln!(out, "tokenizer     none embedded (pass --tokenizer)"),
        };
        let _ = match &self.chat_template {
            Some(t) => write!(out, "chat template\n{}", t.source),
            None => write!(out, "chat template none"),
        };
        out
    }
}
