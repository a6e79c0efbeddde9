//! The `alignlab` binary, driven as a person would from a shell.

use crate::common::*;
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
    write_tiny_gguf(&dir.join("tiny.gguf"), &c, &random_weights(&c, 1), &[("model.embed_tokens.weight", GgmlType::Q8_0)]);
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

/// Prompting as alignment: what the examples say steers the model. A reference answer is likelier
/// after an example that answers the same way than after one that answers otherwise; each variant
/// is scored by the judges and measured the same way as `logprobs` measures it.
#[test]
fn prompt_variants_steer_the_reference_answer() {
    let Some((m, t)) = stories() else { return };
    let dir = temp_dir("variants");
    let reference = "Lily went to the park with her mom.";
    let q = "Who went to the park?";
    let variants = serde_json::json!([
        {"name": "plain"},
        {"name": "agrees", "shots": [{"user": q, "assistant": reference}]},
        {"name": "disagrees", "shots": [{"user": q, "assistant": "Tom ate a big red apple at home."}]},
    ]);
    let file = dir.join("variants.json");
    std::fs::write(&file, variants.to_string()).unwrap();
    let (ok, out, err) = alignlab(&["prompts", "--model", &m, "--tokenizer", &t, "--no-chat", "--question", q, "--variants",
        file.to_str().unwrap(), "--reference", reference, "--judge", "sentiment", "--max-new-tokens", "16", "--seed", "5", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let rows = v["variants"].as_array().unwrap();
    let lp = |i: usize| rows[i]["reference_logp_per_token"].as_f64().unwrap();
    eprintln!("reference answer, nats/token: plain {:.3}, agreeing example {:.3}, disagreeing example {:.3}", lp(0), lp(1), lp(2));
    assert!(lp(1) > lp(2) + 0.2, "the agreeing example makes the reference likelier: {} vs {}", lp(1), lp(2));
    // Examples lengthen the prompt; each answer was judged.
    assert!(rows[1]["prompt_tokens"].as_u64() > rows[0]["prompt_tokens"].as_u64());
    assert!(rows.iter().all(|r| r["judges"].as_f64().is_some_and(f64::is_finite) && r["tokens"].as_u64().unwrap() <= 16));
    // The plain variant's measure is the `logprobs` command's on the same prompt.
    let (ok, out, err) = alignlab(&["logprobs", "--model", &m, "--tokenizer", &t, "--prompt", &format!("Question: {q}\nAnswer:"), "--completion", reference, "--json"]);
    assert!(ok, "{err}");
    let lps: Value = serde_json::from_str(out.trim()).unwrap();
    let per_token = lps["sum"].as_f64().unwrap() / lps["logprobs"].as_array().unwrap().len() as f64;
    assert!((per_token - lp(0)).abs() < 1e-4, "{per_token} vs {}", lp(0));

    // A bad variants file names the field; a prompt past the context is refused, not truncated.
    std::fs::write(&file, r#"[{"name": "x", "shot": []}]"#).unwrap();
    let (ok, _, err) = alignlab(&["prompts", "--model", &m, "--tokenizer", &t, "--question", q, "--variants", file.to_str().unwrap()]);
    assert!(!ok && err.contains("[0]") && err.contains("shot"), "{err}");
    let long = "Once upon a time there was a girl who liked to play. ".repeat(12);
    let shots: Vec<_> = (0..8).map(|_| serde_json::json!({"user": long, "assistant": long})).collect();
    std::fs::write(&file, serde_json::json!([{"name": "too long", "shots": shots}]).to_string()).unwrap();
    let (ok, _, err) = alignlab(&["prompts", "--model", &m, "--tokenizer", &t, "--no-chat", "--question", q, "--variants", file.to_str().unwrap()]);
    assert!(!ok && err.contains("too long: the prompt is") && err.contains("context of 512"), "{err}");
}

/// Retrieval from the shell: BM25 over the sample set and over a student's folder, and the
/// fact set's report with its shares.
#[test]
fn docs_search_ask_and_facts_from_the_shell() {
    let (ok, out, err) = alignlab(&["docs", "search", "When was the lighthouse first lit?", "--k", "2", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["hits"][0]["doc"], "lighthouse.md", "{v}");
    assert!(v["hits"][0]["text"].as_str().unwrap().contains("1887"));
    let dir = temp_dir("docs");
    std::fs::write(dir.join("pets.md"), "# Pets\n\nOur cat Pumpernickel sleeps on the blue sofa.\n\nThe dog is called Rufus.").unwrap();
    std::fs::write(dir.join("notes.txt"), "Shopping: eggs, flour, milk.").unwrap();
    std::fs::write(dir.join("image.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let (ok, out, err) = alignlab(&["docs", "search", "Where does the cat sleep?", "--docs", dir.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["passages"], 3, "a heading with its paragraph, a paragraph, the notes; the PNG is not read: {v}");
    assert!(v["hits"][0]["text"].as_str().unwrap().contains("Pumpernickel"), "{v}");
    std::fs::write(dir.join("bad.md"), [0xff, 0xfe, 0x00]).unwrap();
    let (ok, _, err) = alignlab(&["docs", "search", "cat", "--docs", dir.join("bad.md").to_str().unwrap()]);
    assert!(!ok && err.contains("bad.md is not UTF-8 text"), "{err}");

    let Some((m, t)) = stories() else { return };
    let facts = dir.join("facts.json");
    std::fs::write(&facts, r#"{"alignlab_facts": 1, "facts": [
        {"question": "Where does the cat sleep?", "answers": ["sofa"], "source": "pets.md"},
        {"question": "What is on the shopping list?", "answers": ["flour"], "source": "notes.txt"}]}"#).unwrap();
    let (ok, out, err) = alignlab(&["docs", "facts", "--model", &m, "--tokenizer", &t, "--no-chat", "--docs", dir.join("pets.md").to_str().unwrap(),
        dir.join("notes.txt").to_str().unwrap(), "--facts", facts.to_str().unwrap(), "--max-new-tokens", "8", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["summary"]["questions"], 2);
    assert_eq!(v["summary"]["retrieved"], 1.0, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert!(rows[0]["answer"]["hits"][0]["text"].as_str().unwrap().contains("Pumpernickel"), "{v}");
    assert!(rows.iter().all(|r| r["answer"]["plain"].is_string() && r["answer"]["grounded"].is_string()));
}
