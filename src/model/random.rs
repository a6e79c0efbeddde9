//! Random weights for a Llama config, for a model that only has to run: the worker's training
//! warm-up trains one, and the tests build their tiny models from them.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::LlamaConfig;
use crate::io::HostTensor;

/// transformers-named random weights for `c`, reproducible from `seed`: matrices uniform in
/// ±1.7/√fan-in, so that a tiny model's logits spread, and norms in 1 ± 0.2.
pub fn random_weights(c: &LlamaConfig, seed: u64) -> BTreeMap<String, HostTensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = BTreeMap::new();
    let mat = |rng: &mut StdRng, rows: usize, cols: usize| {
        let s = 1.0 / (cols as f32).sqrt();
        HostTensor::new(vec![rows, cols], (0..rows * cols).map(|_| rng.random_range(-s..s) * 1.7).collect())
    };
    let norm = |rng: &mut StdRng, n: usize| HostTensor::new(vec![n], (0..n).map(|_| 1.0 + rng.random_range(-0.2..0.2)).collect());
    let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    w.insert("model.embed_tokens.weight".into(), mat(&mut rng, v, d));
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        w.insert(format!("{p}.input_layernorm.weight"), norm(&mut rng, d));
        w.insert(format!("{p}.self_attn.q_proj.weight"), mat(&mut rng, q, d));
        w.insert(format!("{p}.self_attn.k_proj.weight"), mat(&mut rng, kv, d));
        w.insert(format!("{p}.self_attn.v_proj.weight"), mat(&mut rng, kv, d));
        w.insert(format!("{p}.self_attn.o_proj.weight"), mat(&mut rng, d, q));
        w.insert(format!("{p}.post_attention_layernorm.weight"), norm(&mut rng, d));
        w.insert(format!("{p}.mlp.gate_proj.weight"), mat(&mut rng, f, d));
        w.insert(format!("{p}.mlp.up_proj.weight"), mat(&mut rng, f, d));
        w.insert(format!("{p}.mlp.down_proj.weight"), mat(&mut rng, d, f));
    }
    w.insert("model.norm.weight".into(), norm(&mut rng, d));
    if !c.tie_word_embeddings {
        w.insert("lm_head.weight".into(), mat(&mut rng, v, d));
    }
    w
}
