//! The `alignlab` binary, driven as a person would from a shell.

mod common;

use common::*;
use serde_json::Value;

fn stories() -> Option<(String, String)> {
    stories260k().map(|(m, t)| (m.display().to_string(), t.display().to_string()))
}

#[test]
fn generate_json_is_reproducible_and_well_formed() {
    let Some((m, t)) = stories() else { return };
    let args = ["generate", "--model", &m, "--tokenizer", &t, "--prompt", "Once upon a time", "--temperature", "0.8",
        "--seed", "3", "-n", "3", "--max-new-tokens", "20", "--json"];
    let (ok, out, err) = alignlab(&args);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let prompt = v["prompt_tokens"].as_array().unwrap();
    assert_eq!(prompt[0], 1, "llama2.c prompts start with BOS");
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    for s in samples {
        assert!(s["tokens"].as_array().unwrap().len() <= 20);
        assert!(!s["text"].as_str().unwrap().is_empty());
    }
    let (_, again, _) = alignlab(&args);
    assert_eq!(out, again, "same seed, same samples");
    let (_, other, _) = alignlab(&[&args[..10], &["4"], &args[11..]].concat());
    assert_ne!(out, other, "another seed, other samples");
}

#[test]
fn greedy_text_streams_to_stdout() {
    let Some((m, t)) = stories() else { return };
    let (ok, out, err) = alignlab(&["generate", "--model", &m, "--tokenizer", &t, "--prompt", "Once upon a time",
        "--temperature", "0", "--max-new-tokens", "30", "--backend", "ndarray"]);
    assert!(ok, "{err}");
    assert!(out.starts_with(','), "continuation of 'Once upon a time': {out:?}");
    assert!(out.contains("there was a little"), "{out:?}");
}

#[test]
fn logprobs_json_sums_its_tokens() {
    let Some((m, t)) = stories() else { return };
    let (ok, out, err) = alignlab(&["logprobs", "--model", &m, "--tokenizer", &t, "--prompt", "Once upon a time",
        "--completion", "there was a little girl", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let lps: Vec<f64> = v["logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(lps.len(), v["completion_tokens"].as_array().unwrap().len());
    assert!(lps.iter().all(|&x| x < 0.0));
    assert!((lps.iter().sum::<f64>() - v["sum"].as_f64().unwrap()).abs() < 1e-3);
    // A likely continuation scores far above an unlikely one.
    let (_, out2, _) = alignlab(&["logprobs", "--model", &m, "--tokenizer", &t, "--prompt", "Once upon a time",
        "--completion", "quantum chromodynamics", "--json"]);
    let v2: Value = serde_json::from_str(out2.trim()).unwrap();
    assert!(v["sum"].as_f64().unwrap() > v2["sum"].as_f64().unwrap() + 5.0);
}

#[test]
fn info_describes_a_gguf() {
    let dir = temp_dir("cli-info");
    let c = tiny_config(false);
    write_tiny_gguf(&dir.join("tiny.gguf"), &c, &tiny_weights(&c, 1), &[("model.embed_tokens.weight", GgmlType::Q8_0)]);
    let path = dir.join("tiny.gguf").display().to_string();
    let (ok, out, err) = alignlab(&["info", "--model", &path, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["format"], "GGUF v3");
    assert_eq!(v["parameters"].as_u64().unwrap() as usize, c.num_parameters());
    assert_eq!(v["tensor_types"]["Q8_0"], 1);
    assert_eq!(v["config"]["num_key_value_heads"], 2);
    assert_eq!(v["tokenizer"]["vocab_size"], 64);
    let (ok, out, _) = alignlab(&["info", "--model", &path]);
    assert!(ok && out.contains("parameters") && out.contains("Q8_0 x1"), "{out}");
}

#[test]
fn bad_files_fail_with_a_message_not_a_panic() {
    let dir = temp_dir("cli-bad");
    std::fs::write(dir.join("notes.txt"), "these are my notes, not a model").unwrap();
    let (ok, _, err) = alignlab(&["generate", "--model", &dir.join("notes.txt").display().to_string(), "--prompt", "hi"]);
    assert!(!ok);
    assert!(err.starts_with("error: ") && err.contains("not a model file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (ok, _, err) = alignlab(&["generate", "--model", "models/nope.gguf", "--prompt", "hi"]);
    assert!(!ok && err.contains("scripts/setup"), "{err}");
    let (ok, _, err) = alignlab(&["generate", "--prompt", "hi", "--backend", "tpu"]);
    assert!(!ok && err.contains("unknown backend"), "{err}");
}
