//! Test helpers: a tiny random Llama, and writers that save it as GGUF, HF safetensors and llama2.c
//! files the way llama.cpp, transformers and llama2.c's export.py lay them out, so each loader is
//! checked against the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alignlab::backend::{self, BackendKind};
use alignlab::io::{Checkpoint, HostTensor, Weights};
pub use alignlab::model::random_weights;
use alignlab::model::LlamaConfig;
use burn::tensor::Device;
use half::f16;

pub fn device(kind: BackendKind) -> Device {
    backend::open(kind).unwrap_or_else(|e| panic!("{kind} device: {e} (run scripts/setup --test)")).device
}

pub fn tiny_config(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
    }
}

pub fn tiny_tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

/// Byte-level BPE symbols for a GGUF vocabulary: printable ASCII from '!', plus one merge "!\"".
pub fn gguf_tokens(n: usize) -> Vec<String> {
    let mut t: Vec<String> = (0..n - 1).map(|i| char::from(b'!' + i as u8).to_string()).collect();
    t.push("!\"".into());
    t
}

/// A word-level `tokenizer.json` over `tiny_tokens`.
pub fn tiny_tokenizer_json(n: usize) -> String {
    use tokenizers::models::wordlevel::WordLevel;
    let vocab = tiny_tokens(n).into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab).unk_token("t0".into()).build().unwrap();
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::WhitespaceSplit));
    tk.to_string(false).unwrap()
}

/// A checkpoint built in memory (no file), for engine tests.
pub fn tiny_checkpoint(tied: bool, seed: u64) -> Checkpoint {
    let config = tiny_config(tied);
    let weights: Weights = random_weights(&config, seed).into_iter().collect();
    let tokenizer = alignlab::io::Tokenizer::from_hf_json(
        tiny_tokenizer_json(config.vocab_size).as_bytes(),
        &alignlab::io::HfSpecials { eos_token: Some("t1".into()), ..Default::default() },
    )
    .unwrap();
    Checkpoint {
        config,
        weights,
        tokenizer: Some(tokenizer),
        chat_template: None,
        info: alignlab::io::ModelInfo { format: "memory".into(), name: None, tensor_types: Default::default(), file_bytes: 0 },
    }
}

/// A new empty folder under the system's temporary one for one test: removed when the test
/// passes, kept (and named on stderr) when it fails, for a look at what the test left there.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("alignlab-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// See [`temp_dir`]; reads as the folder's path.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the failed test's files are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- HF -----------------------------------------------------------------------------------------

pub fn write_hf(dir: &Path, c: &LlamaConfig, w: &BTreeMap<String, HostTensor>, bf16_names: &[&str]) {
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": 0, "eos_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in w {
        if bf16_names.contains(&name.as_str()) {
            let bytes = t.data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
            bufs.push((name.clone(), safetensors::Dtype::BF16, t.shape.clone(), bytes));
        } else {
            let bytes = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            bufs.push((name.clone(), safetensors::Dtype::F32, t.shape.clone(), bytes));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json(c.vocab_size)).unwrap();
}

// ---- llama.cpp layout -----------------------------------------------------------------------------

/// llama.cpp's `permute`: rotate-half rows to interleaved pairs.
pub fn permute_rotary(t: &HostTensor, heads: usize) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let hd = rows / heads;
    let mut out = vec![0.0; rows * cols];
    for h in 0..heads {
        for c in 0..2 {
            for j in 0..hd / 2 {
                let src = h * hd + c * hd / 2 + j;
                let dst = h * hd + 2 * j + c;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&t.data[src * cols..(src + 1) * cols]);
            }
        }
    }
    HostTensor::new(t.shape.clone(), out)
}

#[derive(Clone, Copy, PartialEq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
}

/// Rounds `x` through `ty` and back, so a reference model can hold exactly what the file holds.
pub fn roundtrip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => x.to_vec(),
        GgmlType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        GgmlType::Q8_0 => x
            .chunks(32)
            .flat_map(|b| {
                let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = f16::from_f32(amax / 127.0).to_f32();
                b.iter().map(move |&v| if d == 0.0 { 0.0 } else { (v / d).round().clamp(-127.0, 127.0) * d }).collect::<Vec<_>>()
            })
            .collect(),
    }
}

fn encode(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        GgmlType::Q8_0 => x
            .chunks(32)
            .flat_map(|b| {
                let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = f16::from_f32(amax / 127.0);
                let df = d.to_f32();
                let mut out = d.to_le_bytes().to_vec();
                out.extend(b.iter().map(|&v| if df == 0.0 { 0 } else { (v / df).round().clamp(-127.0, 127.0) as i8 as u8 }));
                out
            })
            .collect(),
    }
}

pub enum Kv {
    U32(u32),
    F32(f32),
    Str(String),
    Bool(bool),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// Writes a GGUF v3 file: metadata `kvs`, then `tensors` as (name, row-major shape, type, data).
pub fn write_gguf(path: &Path, kvs: &[(&str, Kv)], tensors: &[(String, Vec<usize>, GgmlType, Vec<f32>)]) {
    fn s(out: &mut Vec<u8>, x: &str) {
        out.extend((x.len() as u64).to_le_bytes());
        out.extend(x.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        s(&mut out, k);
        match v {
            Kv::U32(x) => { out.extend(4u32.to_le_bytes()); out.extend(x.to_le_bytes()); }
            Kv::F32(x) => { out.extend(6u32.to_le_bytes()); out.extend(x.to_le_bytes()); }
            Kv::Bool(x) => { out.extend(7u32.to_le_bytes()); out.push(*x as u8); }
            Kv::Str(x) => { out.extend(8u32.to_le_bytes()); s(&mut out, x); }
            Kv::Strs(xs) => {
                out.extend(9u32.to_le_bytes()); out.extend(8u32.to_le_bytes()); out.extend((xs.len() as u64).to_le_bytes());
                for x in xs { s(&mut out, x); }
            }
            Kv::I32s(xs) => {
                out.extend(9u32.to_le_bytes()); out.extend(5u32.to_le_bytes()); out.extend((xs.len() as u64).to_le_bytes());
                for x in xs { out.extend(x.to_le_bytes()); }
            }
        }
    }
    let mut data = Vec::new();
    for (name, shape, ty, x) in tensors {
        s(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend((*ty as u32).to_le_bytes());
        out.extend((data.len() as u64).to_le_bytes());
        data.extend(encode(*ty, x));
        while data.len() % 32 != 0 {
            data.push(0);
        }
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn gguf_name(hf: &str) -> String {
    let map = [
        ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (i, part) = rest.split_once('.').unwrap();
            let part = part.strip_suffix(".weight").unwrap();
            let g = map.iter().find(|(h, _)| *h == part).unwrap().1;
            format!("blk.{i}.{g}.weight")
        }
    }
}

/// Saves `w` as llama.cpp would (renamed, q/k permuted, `types` per tensor, F32 otherwise) with a
/// gpt2-style vocabulary of `tiny_tokens`. Returns the weights as the file holds them (rounded).
pub fn write_tiny_gguf(path: &Path, c: &LlamaConfig, w: &BTreeMap<String, HostTensor>, types: &[(&str, GgmlType)]) -> BTreeMap<String, HostTensor> {
    let mut tensors = Vec::new();
    let mut held = BTreeMap::new();
    for (name, t) in w {
        let ty = types.iter().find(|(n, _)| *n == name).map_or(GgmlType::F32, |x| x.1);
        let rounded = HostTensor::new(t.shape.clone(), roundtrip(ty, &t.data));
        held.insert(name.clone(), rounded.clone());
        let stored = if name.ends_with("q_proj.weight") {
            permute_rotary(&rounded, c.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            permute_rotary(&rounded, c.num_key_value_heads)
        } else {
            rounded
        };
        tensors.push((gguf_name(name), stored.shape.clone(), ty, stored.data));
    }
    let kvs = vec![
        ("general.architecture", Kv::Str("llama".into())),
        ("general.name", Kv::Str("tiny".into())),
        ("llama.context_length", Kv::U32(c.max_position_embeddings as u32)),
        ("llama.embedding_length", Kv::U32(c.hidden_size as u32)),
        ("llama.block_count", Kv::U32(c.num_hidden_layers as u32)),
        ("llama.feed_forward_length", Kv::U32(c.intermediate_size as u32)),
        ("llama.attention.head_count", Kv::U32(c.num_attention_heads as u32)),
        ("llama.attention.head_count_kv", Kv::U32(c.num_key_value_heads as u32)),
        ("llama.rope.freq_base", Kv::F32(c.rope_theta as f32)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(c.rms_norm_eps as f32)),
        ("llama.rope.dimension_count", Kv::U32(c.head_dim as u32)),
        ("tokenizer.ggml.model", Kv::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Kv::Str("default".into())),
        ("tokenizer.ggml.tokens", Kv::Strs(gguf_tokens(c.vocab_size))),
        ("tokenizer.ggml.token_type", Kv::I32s(vec![1; c.vocab_size])),
        ("tokenizer.ggml.merges", Kv::Strs(vec!["! \"".into()])),
        ("tokenizer.ggml.bos_token_id", Kv::U32(0)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(1)),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(false)),
    ];
    write_gguf(path, &kvs, &tensors);
    held
}

// ---- llama2.c layout ------------------------------------------------------------------------------

pub fn write_llama2c(path: &Path, tok_path: &Path, c: &LlamaConfig, w: &BTreeMap<String, HostTensor>) {
    let vocab = if c.tie_word_embeddings { c.vocab_size as i32 } else { -(c.vocab_size as i32) };
    let header = [c.hidden_size as i32, c.intermediate_size as i32, c.num_hidden_layers as i32,
        c.num_attention_heads as i32, c.num_key_value_heads as i32, vocab, c.max_position_embeddings as i32];
    let mut out: Vec<u8> = header.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut put = |t: &HostTensor| out.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
    put(&w["model.embed_tokens.weight"]);
    let layer = |name: &str, i: usize| w[&format!("model.layers.{i}.{name}.weight")].clone();
    let l = c.num_hidden_layers;
    for i in 0..l { put(&layer("input_layernorm", i)); }
    for i in 0..l { put(&permute_rotary(&layer("self_attn.q_proj", i), c.num_attention_heads)); }
    for i in 0..l { put(&permute_rotary(&layer("self_attn.k_proj", i), c.num_key_value_heads)); }
    for i in 0..l { put(&layer("self_attn.v_proj", i)); }
    for i in 0..l { put(&layer("self_attn.o_proj", i)); }
    for i in 0..l { put(&layer("post_attention_layernorm", i)); }
    for i in 0..l { put(&layer("mlp.gate_proj", i)); }
    for i in 0..l { put(&layer("mlp.down_proj", i)); }
    for i in 0..l { put(&layer("mlp.up_proj", i)); }
    put(&w["model.norm.weight"]);
    if !c.tie_word_embeddings {
        put(&HostTensor::new(vec![c.max_position_embeddings * c.head_dim], vec![0.0; c.max_position_embeddings * c.head_dim]));
        put(&w["lm_head.weight"]);
    }
    std::fs::write(path, out).unwrap();
    // tokenizer.bin: max_len, then (score, len, bytes) per token
    let mut tok: Vec<u8> = 8i32.to_le_bytes().to_vec();
    for (i, t) in tiny_tokens(c.vocab_size).iter().enumerate() {
        tok.extend((-(i as f32)).to_le_bytes());
        tok.extend((t.len() as i32).to_le_bytes());
        tok.extend(t.as_bytes());
    }
    std::fs::write(tok_path, tok).unwrap();
}

// ---- shared fixtures and the binary ---------------------------------------------------------------

/// The checkout under test: the directory `cargo test` runs from, read at run time. A target
/// directory shared between clones (as scripts/test sets up) can run a binary another clone
/// compiled, and the path compiled into it (`env!`) would then be that clone's.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// llama2.c's stories260K (model, tokenizer) from `../shared/models`, or `None` with a SKIPPED
/// line when the shared folder is not beside the checkout.
pub fn stories260k() -> Option<(PathBuf, PathBuf)> {
    let dir = root().join("../shared/models/stories260K");
    let (m, t) = (dir.join("stories260K.bin"), dir.join("tok512.bin"));
    if m.exists() && t.exists() {
        Some((m, t))
    } else {
        eprintln!("SKIPPED: {} not found (the shared models folder sits beside the checkout)", dir.display());
        None
    }
}

/// Runs the `alignlab` binary from the repository root: (success, stdout, stderr).
pub fn alignlab(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alignlab"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

// ---- the tests' blocking edge over the engine's async API ------------------------------------------

/// Reads a tensor to the host, blocking (the tests' edge, as the CLI's).
pub fn read_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> alignlab::Result<Vec<f32>> {
    alignlab::backend::block_on(alignlab::backend::read_f32(t))
}

/// Per-token log-probabilities of `(prompt, completion)` pairs under the loaded model.
pub fn score(lm: &alignlab::LoadedModel, pairs: &[(Vec<u32>, Vec<u32>)]) -> alignlab::Result<Vec<alignlab::logps::CompletionLogps>> {
    alignlab::backend::block_on(alignlab::logps::completion_logps(&lm.model, lm.tokenizer.pad_id(), pairs))
}

/// Samples from the loaded model, blocking.
pub fn generate(
    lm: &alignlab::LoadedModel,
    prompt: &[u32],
    cfg: &alignlab::generate::SamplingConfig,
    on_token: &mut dyn FnMut(alignlab::generate::TokenEvent) -> bool,
) -> alignlab::Result<Vec<alignlab::generate::Sample>> {
    alignlab::backend::block_on(alignlab::generate::generate(&lm.model, &lm.tokenizer, prompt, cfg, on_token))
}

/// For a test that measures the whole process (its resident memory): in one test binary other
/// tests run beside it, so it runs again alone, in a child process of the same binary. Returns
/// true in that child, where the body runs; the parent checks that the child ran it and passed.
pub fn alone(test: &str) -> bool {
    const MARK: &str = "ALIGNLAB_TEST_ALONE";
    if std::env::var_os(MARK).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(MARK, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("1 passed"), "{test} failed in its own process");
    false
}

// ---- comparing numbers ------------------------------------------------------------------------------

/// The largest |a[i] - b[i]| over two slices of one length. Equal values differ by 0 (matching
/// infinities included), and a NaN on either side makes the result NaN, so that every `<`, `>` or
/// `==` on it fails: `fold(0.0, f32::max)` would skip the NaN and pass a model that returns NaN.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "the compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, |m, d| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) })
}

#[test]
fn max_diff_fails_every_comparison_on_a_nan() {
    assert_eq!(max_diff(&[1.0, -2.0, 3.5], &[1.0, -2.5, 3.0]), 0.5);
    assert_eq!(max_diff(&[f32::NEG_INFINITY, 1.0], &[f32::NEG_INFINITY, 1.0]), 0.0, "a masked logit on both sides");
    for (a, b) in [([f32::NAN, 0.0], [1.0, 0.0]), ([0.0, 1.0], [0.0, f32::NAN]), ([f32::NAN, 9.0], [f32::NAN, 0.0])] {
        let d = max_diff(&a, &b);
        assert!(!(d < 1e-3) && !(d > 1e-3) && d != 0.0, "{a:?} vs {b:?} gave {d}");
    }
    assert!(max_diff(&[f32::INFINITY], &[1.0]) > 1e3);
}
