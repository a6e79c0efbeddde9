//! Bad input gets a clear error, never a panic: truncated files, wrong magic, unsupported tensor
//! types, shapes that disagree with the config, mismatched tokenizers, corrupt HF files.

use alignlab::backend::BackendKind;
use alignlab::io::{Checkpoint, load_checkpoint, load_model};
use crate::common::*;

fn noop() -> impl FnMut(&str, f32) {
    |_: &str, _: f32| {}
}

fn err_of(r: alignlab::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn tiny_gguf_bytes(name: &str, types: &[(&str, GgmlType)]) -> (TempDir, Vec<u8>) {
    let dir = temp_dir(name);
    let c = tiny_config(false);
    let path = dir.join("m.gguf");
    write_tiny_gguf(&path, &c, &random_weights(&c, 1), types);
    let bytes = std::fs::read(&path).unwrap();
    (dir, bytes)
}

#[test]
fn truncated_gguf_says_so_at_every_cut() {
    let (_dir, bytes) = tiny_gguf_bytes("trunc", &[]);
    // Cut inside the header, the metadata, the tensor directory and the data.
    for cut in [3, 10, 30, 200, 1500, bytes.len() / 2, bytes.len() - 1] {
        let e = err_of(Checkpoint::from_bytes(&bytes[..cut], None, &mut noop()));
        assert!(
            e.contains("truncated") || e.contains("not a GGUF") || e.contains("corrupt"),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let (_dir, bytes) = tiny_gguf_bytes("fuzz", &[]);
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Corrupt the header and directory, where lengths and types live.
            let i = 4 + (state as usize) % 1200.min(b.len() - 4);
            b[i] = (state >> 32) as u8;
        }
        let _ = Checkpoint::from_bytes(&b, None, &mut noop()); // Ok or Err, but no panic
    }
}

#[test]
fn wrong_magic_names_the_formats() {
    let e = err_of(Checkpoint::from_bytes(b"PK\x03\x04 this is a zip file, not a model at all", None, &mut noop()));
    assert!(e.contains("not a model file") || e.contains("not GGUF"), "{e}");
    let e = err_of(Checkpoint::from_bytes(b"GGU", None, &mut noop()));
    assert!(e.contains("truncated"), "{e}");
    let e = err_of(Checkpoint::from_bytes(b"hello", None, &mut noop()));
    assert!(e.contains("not a model file"), "{e}");
}

/// A llama2.c header whose vocabulary is `i32::MIN` (found by `scripts/fuzz`): its absolute value
/// overflowed, a panic where overflow is checked and a header taken as plausible where it is not.
#[test]
fn a_llama2c_vocabulary_of_i32_min_is_refused_at_the_header() {
    let header: Vec<u8> = [64, 128, 2, 4, 4, i32::MIN, 256].iter().flat_map(|v: &i32| v.to_le_bytes()).collect();
    let e = err_of(Checkpoint::from_bytes(&header, None, &mut noop()));
    assert!(e.contains("not a plausible llama2.c header") && e.contains("vocab=-2147483648"), "{e}");
}

/// A `Precompiled` normalizer whose charsmap declares a 4 GiB trie in 8 bytes (found by
/// `scripts/fuzz`): tokenizers' reader allocated the whole trie before reading it, so a 189-byte
/// tokenizer.json asked for 3.7 GB (and a wasm32 worker, which has 4 GiB in all, would abort).
#[test]
fn a_precompiled_charsmap_declaring_a_huge_trie_is_refused_before_it_is_read() {
    let mut json: serde_json::Value = serde_json::from_str(&tiny_tokenizer_json(64)).unwrap();
    // Base64 of ff ff ff ff 00 00 00 00: a u32::MAX-byte trie, then four bytes.
    json["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [{"type": "Precompiled", "precompiled_charsmap": "/////wAAAAA="}]});
    let e = err_of(alignlab::io::tokenizer_from_bytes(json.to_string().as_bytes(), 64));
    assert!(e.contains("declares a 4294967295-byte trie in 4 bytes"), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    let (_dir, mut bytes) = tiny_gguf_bytes("qtype", &[("model.norm.weight", GgmlType::F32)]);
    // Re-tag output_norm.weight as Q4_K (type 12) in the tensor directory.
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 8; // n_dims (u32) + one dim (u64)
    assert_eq!(u32::from_le_bytes(bytes[type_at..type_at + 4].try_into().unwrap()), 0);
    bytes[type_at..type_at + 4].copy_from_slice(&12u32.to_le_bytes());
    let e = err_of(Checkpoint::from_bytes(&bytes, None, &mut noop()));
    assert!(e.contains("Q4_K") && e.contains("output_norm.weight") && e.contains("supported"), "{e}");
}

#[test]
fn shape_disagreeing_with_config_is_reported() {
    let dir = temp_dir("shape");
    let mut c = tiny_config(false);
    let w = random_weights(&c, 3);
    c.intermediate_size = 40; // the config lies about the FFN size
    write_hf(&dir, &c, &w, &[]);
    let e = err_of(load_model(&dir, None, &device(BackendKind::Flex), &mut noop()));
    assert!(e.contains("gate_proj") && e.contains("[48, 32]") && e.contains("[40, 32]"), "{e}");
}

#[test]
fn tokenizer_from_another_model_is_refused() {
    let dir = temp_dir("tokmismatch");
    let c = tiny_config(true);
    let w = random_weights(&c, 5);
    write_llama2c(&dir.join("m.bin"), &dir.join("tok.bin"), &c, &w);
    // A tokenizer.bin for a 100-token vocabulary.
    let mut big = c.clone();
    big.vocab_size = 100;
    let bw = random_weights(&big, 5);
    write_llama2c(&dir.join("big.bin"), &dir.join("bigtok.bin"), &big, &bw);
    let e = err_of(load_model(&dir.join("m.bin"), Some(&dir.join("bigtok.bin")), &device(BackendKind::Flex), &mut noop()));
    assert!(e.contains("do not belong together") || e.contains("larger vocabulary"), "{e}");
    // No tokenizer at all for a llama2.c model.
    let e = err_of(load_model(&dir.join("m.bin"), None, &device(BackendKind::Flex), &mut noop()));
    assert!(e.contains("--tokenizer"), "{e}");
    // An HF tokenizer.json with a different vocabulary size.
    std::fs::write(dir.join("t.json"), tiny_tokenizer_json(500)).unwrap();
    let e = err_of(load_model(&dir.join("m.bin"), Some(&dir.join("t.json")), &device(BackendKind::Flex), &mut noop()));
    assert!(e.contains("do not belong together"), "{e}");
}

#[test]
fn corrupt_hf_directory_is_reported() {
    let dir = temp_dir("hfbad");
    let c = tiny_config(false);
    write_hf(&dir, &c, &random_weights(&c, 2), &[]);
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &st[..st.len() / 3]).unwrap();
    let e = err_of(load_checkpoint(&dir, None, &mut noop()));
    assert!(e.contains("safetensors"), "{e}");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 32}").unwrap();
    let e = err_of(load_checkpoint(&dir, None, &mut noop()));
    assert!(e.contains("config.json"), "{e}");
    let empty = temp_dir("hfempty");
    let e = err_of(load_checkpoint(&empty, None, &mut noop()));
    assert!(e.contains("not an HF checkpoint"), "{e}");
}

/// Overwrites the u32 value of GGUF key `key` in `bytes`.
fn patch_gguf_u32(bytes: &mut [u8], key: &str, value: u32) {
    let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).expect("key present") + key.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 4, "{key} is stored as u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_where_they_enter() {
    // A special id from the file's metadata beyond the vocabulary: refused at load, naming the key
    // (before, the page's warm-up crashed the worker on it).
    let (_dir, mut bytes) = tiny_gguf_bytes("eos-range", &[]);
    patch_gguf_u32(&mut bytes, "tokenizer.ggml.eos_token_id", 9999);
    let e = err_of(Checkpoint::from_bytes(&bytes, None, &mut noop()));
    assert!(e.contains("tokenizer.ggml.eos_token_id") && e.contains("9999"), "{e}");

    // A tokenizer whose ids run past the embedding, though its entry count fits: refused at load.
    let lm_bytes = tiny_gguf_bytes("idrange", &[]).1;
    let mut vocab: Vec<(String, u32)> = tiny_tokens(64).into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
    vocab[63].1 = 200; // 64 entries, largest id 200
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("t0".into())
        .build()
        .unwrap();
    let json = tokenizers::Tokenizer::new(model).to_string(false).unwrap();
    let e = err_of(Checkpoint::from_bytes(&lm_bytes, Some(json.as_bytes()), &mut noop()).and_then(|c| c.into_model(&device(BackendKind::Flex), &mut noop())));
    assert!(e.contains("token id 200") && e.contains("do not belong together"), "{e}");

    // Ids and positions checked where a batch is built: scoring past the context is an error.
    let lm = tiny_checkpoint(true, 1).into_model(&device(BackendKind::Flex), &mut noop()).unwrap();
    let e = err_of(score(&lm, &[(vec![1; 60], vec![2; 10])]));
    assert!(e.contains("context is 64 tokens"), "{e}");
    let e = err_of(score(&lm, &[(vec![1, 2], vec![64])]));
    assert!(e.contains("token id 64") && e.contains("vocabulary of 64"), "{e}");
}

#[test]
fn hostile_hf_index_and_adapter_numbers_are_refused() {
    let dir = temp_dir("hfindex");
    let c = tiny_config(false);
    write_hf(&dir, &c, &random_weights(&c, 2), &[]);
    std::fs::rename(dir.join("model.safetensors"), dir.join("shard.safetensors")).unwrap();
    for name in ["../../etc/passwd.safetensors", "/dev/zero", "sub/dir.safetensors", "..safetensors", "x.bin"] {
        let index = serde_json::json!({"weight_map": {"model.norm.weight": name}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let e = err_of(load_checkpoint(&dir, None, &mut noop()));
        assert!(e.contains("not a plain") && e.contains(name), "{name}: {e}");
    }
    // The same index with a plain name loads.
    let index = serde_json::json!({"weight_map": {"model.norm.weight": "shard.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    load_checkpoint(&dir, None, &mut noop()).unwrap();

    // lora_alpha = 1e308 loaded before, and every output was NaN.
    let config = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 1e308, "target_modules": ["q_proj"]}"#;
    let mut model = tiny_checkpoint(true, 1).into_model(&device(BackendKind::Flex), &mut noop()).unwrap().model;
    let e = err_of(alignlab::io::peft::load_adapter(&mut model, config.as_bytes(), b""));
    assert!(e.contains("lora_alpha"), "{e}");
}

#[test]
fn huge_texts_are_cut_before_tokenizing_with_the_same_ids() {
    use alignlab::align::Encoding;
    let lm = tiny_checkpoint(true, 1).into_model(&device(BackendKind::Flex), &mut noop()).unwrap();
    let words: Vec<String> = (0..200_000).map(|i| format!("t{}", (i * 7) % 64)).collect();
    let text = words.join(" "); // ~700 KB: the whole text would be 200k tokens
    let enc = Encoding { chat: false, system: String::new(), max_prompt_length: 32, max_completion_length: 24 };
    let full = lm.tokenizer.encode(&text, true).unwrap();
    // TRL's rule on the whole text: the prompt keeps its last 32 ids, a completion its first 23
    // plus end-of-turn. Cutting the text first gives the same ids.
    assert_eq!(enc.prompt(&lm, &text).unwrap(), full[full.len() - 32..]);
    let completion = enc.completion(&lm, &text).unwrap();
    assert_eq!(completion[..23], full[..23]);
    assert_eq!(completion.len(), 24);
    // Where nothing may be cut (generation), a text that cannot fit the context is an error.
    let e = err_of(Encoding::untruncated(false, "").prompt(&lm, &text));
    assert!(e.contains("context of 64 tokens"), "{e}");
}
