//! Bad input gets a clear error, never a panic: truncated files, wrong magic, unsupported tensor
//! types, shapes that disagree with the config, mismatched tokenizers, corrupt HF files.

mod common;

use alignlab::backend::BackendKind;
use alignlab::io::{Checkpoint, load_checkpoint, load_model};
use common::*;

fn noop() -> impl FnMut(&str, f32) {
    |_: &str, _: f32| {}
}

fn err_of(r: alignlab::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn tiny_gguf_bytes(name: &str, types: &[(&str, GgmlType)]) -> (std::path::PathBuf, Vec<u8>) {
    let dir = temp_dir(name);
    let c = tiny_config(false);
    let path = dir.join("m.gguf");
    write_tiny_gguf(&path, &c, &tiny_weights(&c, 1), types);
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
    let w = tiny_weights(&c, 3);
    c.intermediate_size = 40; // the config lies about the FFN size
    write_hf(&dir, &c, &w, &[]);
    let e = err_of(load_model(&dir, None, &device(BackendKind::Flex), &mut noop()));
    assert!(e.contains("gate_proj") && e.contains("[48, 32]") && e.contains("[40, 32]"), "{e}");
}

#[test]
fn tokenizer_from_another_model_is_refused() {
    let dir = temp_dir("tokmismatch");
    let c = tiny_config(true);
    let w = tiny_weights(&c, 5);
    write_llama2c(&dir.join("m.bin"), &dir.join("tok.bin"), &c, &w);
    // A tokenizer.bin for a 100-token vocabulary.
    let mut big = c.clone();
    big.vocab_size = 100;
    let bw = tiny_weights(&big, 5);
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
    write_hf(&dir, &c, &tiny_weights(&c, 2), &[]);
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
