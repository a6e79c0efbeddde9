//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz/fuzz_targets/*.rs`, run by
//! `scripts/fuzz`) and the smoke run in the test command (`tests/suite/fuzz_smoke.rs`). Each feeds
//! bytes to one loader and, when the loader accepts them, uses what it built the way the app
//! would (render, tokenize, one forward pass), and says whether the loader accepted them. An
//! error is a pass; a panic, a hang or an allocation out of proportion to the input is a bug.
#![allow(dead_code)]

use alignlab::align::train::{TrainConfig, Trainer};
use alignlab::align::{reward, sft};
use alignlab::backend::{self, BackendKind, block_on};
use alignlab::data::{self, Demonstration, Preference, PromptOnly, Unpaired};
use alignlab::io::{self, ChatTemplate, Checkpoint, Message, hf, llama2c, peft};
use alignlab::lab::{self, class::ClassFile, lesson, retrieve};
use alignlab::logps::completion_logps;
use alignlab::model::{Llama, LlamaConfig, LoraConfig};

/// Every target by name: the directory names under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, fn(&[u8]) -> bool)] = &[
    ("gguf", gguf),
    ("llama2c", llama2c_model),
    ("tokenizer_bin", tokenizer_bin),
    ("tokenizer_json", tokenizer_json),
    ("hf", hf_checkpoint),
    ("peft", peft_adapter),
    ("jsonl", jsonl),
    ("chat_template", chat_template),
    ("lab_files", lab_files),
    ("optimizer_state", optimizer_state),
];

const TEXTS: [&str; 3] = ["Hello, world", "  wörld 123 <|im_end|> <s>", ""];

fn quiet(_: &str, _: f32) {}

fn device() -> burn::tensor::Device {
    backend::open(BackendKind::Flex).expect("the Flex CPU device always opens").device
}

/// Splits `data` into `n` parts, each but the last prefixed by a little-endian u16 length.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for _ in 1..n {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                (u16::from_le_bytes([*a, *b]) as usize).min(rest.len())
            }
            _ => 0,
        };
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out.push(rest);
    out
}

/// What the app does with a model it loaded: render the chat template, tokenize, score.
fn exercise(ckpt: Checkpoint) -> bool {
    let Ok(lm) = ckpt.into_model(&device(), &mut quiet) else { return false };
    for text in TEXTS {
        let prompt = lm.chat_prompt(&[Message::system("Be brief."), Message::user(text)], true).unwrap_or_else(|_| text.to_string());
        let Ok(ids) = lm.tokenizer.encode(&prompt, true) else { continue };
        let _ = lm.tokenizer.decode(&ids);
        if !ids.is_empty() {
            let pairs = [(ids, vec![lm.tokenizer.end_of_turn()])];
            let _ = block_on(completion_logps(&lm.model, lm.tokenizer.pad_id(), &pairs));
        }
    }
    true
}

/// One forward pass of a model built from a checkpoint without a tokenizer.
fn forward(mut ckpt: Checkpoint) -> bool {
    let Ok(model) = Llama::from_weights(&ckpt.config, &mut ckpt.weights, &device()) else { return false };
    let pairs = [(vec![0u32, 1], vec![2u32])];
    block_on(completion_logps(&model, 0, &pairs)).is_ok()
}

pub fn gguf(data: &[u8]) -> bool {
    let Ok(ckpt) = Checkpoint::from_bytes(data, None, &mut quiet) else { return false };
    let _ = ckpt.describe();
    exercise(ckpt)
}

pub fn llama2c_model(data: &[u8]) -> bool {
    let Ok(ckpt) = llama2c::load(data, &mut quiet) else { return false };
    forward(ckpt)
}

/// The first two bytes give the model's vocabulary size, the rest is `tokenizer.bin`.
pub fn tokenizer_bin(data: &[u8]) -> bool {
    let [a, b, file @ ..] = data else { return false };
    let vocab = u16::from_le_bytes([*a, *b]) as usize;
    let Ok(t) = llama2c::load_tokenizer(file, vocab) else { return false };
    tokenize(&t, vocab)
}

/// Encodes and decodes a few texts; true when the tokenizer fits the model's vocabulary.
fn tokenize(t: &io::Tokenizer, vocab: usize) -> bool {
    for text in TEXTS {
        if let Ok(ids) = t.encode(text, true) {
            let _ = t.decode(&ids);
        }
    }
    t.check_fits(vocab).is_ok()
}

/// A `tokenizer.json` paired with a 64-token model.
pub fn tokenizer_json(data: &[u8]) -> bool {
    let Ok(t) = io::tokenizer_from_bytes(data, 64) else { return false };
    tokenize(&t, 64)
}

/// `config.json`, `model.safetensors.index.json` and `model.safetensors`.
pub fn hf_checkpoint(data: &[u8]) -> bool {
    let p = parts(data, 3);
    let _ = hf::parse_config(p[0]);
    let index = hf::shard_names(p[1]).is_ok();
    let parts = hf::HfParts { config_json: p[0], safetensors: vec![p[2]], tokenizer_json: None, tokenizer_config_json: None, chat_template: None };
    let Ok(ckpt) = hf::load(parts, &mut quiet) else { return false };
    forward(ckpt) && index
}

/// A tiny model with every adapter target, built once per call (cheap at this size).
pub fn tiny_model() -> Llama {
    tiny_model_on(&device())
}

fn tiny_model_on(device: &burn::tensor::Device) -> Llama {
    let c = LlamaConfig {
        vocab_size: 16,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 4,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    };
    let mut w = io::Weights::default();
    let mut put = |name: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        w.insert(name, io::HostTensor::new(shape, (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 20.0).collect()));
    };
    put("model.embed_tokens.weight".into(), vec![16, 8]);
    put("model.norm.weight".into(), vec![8]);
    let p = "model.layers.0";
    for (name, shape) in [
        ("input_layernorm", vec![8]),
        ("post_attention_layernorm", vec![8]),
        ("self_attn.q_proj", vec![8, 8]),
        ("self_attn.k_proj", vec![4, 8]),
        ("self_attn.v_proj", vec![4, 8]),
        ("self_attn.o_proj", vec![8, 8]),
        ("mlp.gate_proj", vec![12, 8]),
        ("mlp.up_proj", vec![12, 8]),
        ("mlp.down_proj", vec![8, 12]),
    ] {
        put(format!("{p}.{name}.weight"), shape);
    }
    Llama::from_weights(&c, &mut w, device).expect("the tiny model is consistent")
}

/// A trainer of the tiny model with LoRA on q_proj and v_proj, whose adapter matrices carry fixed
/// ids (as a resumed run's do, from its `trainer_state.json`), so a saved state's seed keeps fitting.
pub fn lora_trainer() -> Trainer<Llama> {
    let mut model = tiny_model_on(&device().autodiff());
    let lora = LoraConfig { r: 2, lora_alpha: 4.0, lora_dropout: 0.0, target_modules: vec!["q_proj".into(), "v_proj".into()], ..Default::default() };
    model.add_lora(&lora).expect("the tiny model has both targets");
    let ids = model.lora_param_ids().into_keys().zip(1000u64..).collect();
    model.set_lora_param_ids(&ids).expect("the ids name this adapter's matrices");
    Trainer::new(model, TrainConfig { learning_rate: 1e-2, max_steps: 8, ..Default::default() }).expect("an autodiff device")
}

/// One SFT step on a two-token answer.
pub fn sft_once(tr: &mut Trainer<Llama>) -> bool {
    let batch = [(vec![0u32, 1], vec![2u32, 3])];
    block_on(tr.step(&mut |p, _| sft::sft_step(p, &batch, 0))).is_ok()
}

/// A checkpoint's `optimizer.bpk`, loaded into [`lora_trainer`]; when it loads, one step runs from it.
pub fn optimizer_state(data: &[u8]) -> bool {
    let mut tr = lora_trainer();
    tr.load_optimizer_state(data).is_ok() && sft_once(&mut tr)
}

/// `adapter_config.json` then `adapter_model.safetensors`, loaded into the tiny model as an adapter
/// and as a reward model (the same layout with a `score` head, `task_type = SEQ_CLS`); true when
/// either loads and then scores.
pub fn peft_adapter(data: &[u8]) -> bool {
    let p = parts(data, 2);
    let pairs = [(vec![0u32, 1], vec![2u32])];
    let mut model = tiny_model();
    let adapter = peft::load_adapter(&mut model, p[0], p[1]).is_ok() && block_on(completion_logps(&model, 0, &pairs)).is_ok();
    let reward = match reward::load_reward_model(tiny_model(), p[0], p[1]) {
        Ok((rm, _)) => block_on(rm.rewards_for(&pairs, 0)).is_ok_and(|r| r.len() == 1),
        Err(_) => false,
    };
    adapter || reward
}

/// TRL JSONL in every record type; what is imported exports and imports back unchanged.
pub fn jsonl(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    fn roundtrip<T: data::Record + PartialEq + std::fmt::Debug>(text: &str) -> bool {
        let got = data::import::<T>(text);
        let again = data::import::<T>(&data::export(&got.records));
        assert_eq!(again.records, got.records, "export then import changed the records");
        assert!(again.errors.is_empty(), "exported records failed to import: {:?}", again.errors);
        !got.records.is_empty()
    }
    // Every record type, each on the whole text.
    let found = [roundtrip::<Preference>(&text), roundtrip::<Unpaired>(&text), roundtrip::<PromptOnly>(&text), roundtrip::<Demonstration>(&text)];
    found.iter().any(|&f| f)
}

/// A chat template from a model file, rendered as the app renders it.
pub fn chat_template(data: &[u8]) -> bool {
    let t = ChatTemplate::new(String::from_utf8_lossy(data), "<s>", "</s>");
    let mut ok = true;
    for text in TEXTS {
        ok &= t.render(&[Message::system("Be brief."), Message::user(text), Message::assistant("Hi")], true).is_ok();
    }
    ok
}

/// The lab's own files, picked by the first byte: a lab file, a settings link, a class file, a
/// constitution, prompt variants, a probe set, a fact set, a document for retrieval, the sample
/// class's answers. What a reader accepts is used as the page uses it, and what the app writes
/// back out reads back the same.
pub fn lab_files(data: &[u8]) -> bool {
    let [kind, file @ ..] = data else { return false };
    match kind % 9 {
        0 => lesson::Lesson::parse(file).is_ok_and(|l| {
            let presets = std::iter::once(&l.setup).chain(l.steps.iter().map(|s| &s.set));
            for p in presets {
                use_preset(p);
            }
            let again = lesson::Lesson::parse(&serde_json::to_vec(&l).expect("a lesson serializes"));
            assert_eq!(again.as_ref().ok(), Some(&l), "a lab file written back did not read back: {again:?}");
            true
        }),
        1 => lesson::Preset::parse(&String::from_utf8_lossy(file)).is_ok_and(|p| {
            use_preset(&p);
            let again = lesson::Preset::parse(&serde_json::to_string(&p).expect("a preset serializes"));
            assert_eq!(again.as_ref().ok(), Some(&p), "a settings link written back did not read back: {again:?}");
            true
        }),
        2 => ClassFile::parse(file).is_ok_and(|f| {
            let files = [f.clone(), f];
            let merged = lab::class::merge(&[&files[0].pairs, &files[1].pairs]);
            let _ = lab::class::agreement(&files[0].pairs, &merged.pairs);
            let groups = lab::groups::groups_of(&files, &Default::default());
            assert_eq!(groups.len(), 1, "two files of one rater are one group");
            assert_eq!(lab::class::raters(&files).len(), 1);
            let again = ClassFile::parse(&serde_json::to_vec(&files[0]).expect("a class file serializes"));
            assert_eq!(again.as_ref().ok(), Some(&files[0]), "a class file written back did not read back: {again:?}");
            true
        }),
        3 => lab::constitution::parse_constitution(file).is_ok_and(|c| {
            c.principles.iter().all(|p| lab::constitution::critique_question(p, " an answer ").ends_with("Answer Yes or No."))
        }),
        4 => lab::prompting::parse_variants(file).is_ok_and(|v| {
            let _: Vec<String> = v.iter().map(|v| v.question("How far is the ferry?")).collect();
            let again = lab::prompting::parse_variants(&serde_json::to_vec(&v).expect("variants serialize"));
            assert_eq!(again.as_ref().ok(), Some(&v), "variants written back did not read back: {again:?}");
            true
        }),
        5 => lab::probes::parse_probes(file).is_ok_and(|p| {
            for probe in &p {
                let _ = probe.judge_specs();
            }
            let again = lab::probes::parse_probes(lab::probes::probes_file(&p).as_bytes());
            assert_eq!(again.as_ref().ok(), Some(&p), "a probe file written back did not read back: {again:?}");
            true
        }),
        6 => retrieve::parse_facts(file).is_ok_and(|facts| {
            facts.iter().all(|f| f.answers.iter().all(|a| a.trim().is_empty() || f.is_answered_by(a)))
        }),
        7 => retrieve::Document::from_bytes("doc.md".into(), file.to_vec()).is_ok_and(|d| {
            let Ok(library) = retrieve::Library::new(std::slice::from_ref(&d)) else { return false };
            for p in library.passages() {
                let n = p.text.chars().count();
                assert!(n > 0 && n <= retrieve::MAX_PASSAGE_CHARS, "a passage of {n} characters");
            }
            let query: String = d.text.chars().take(200).collect();
            let hits = library.search(&query, retrieve::MAX_TOP_K + 1);
            assert!(hits.len() <= retrieve::MAX_TOP_K, "more passages than asked for");
            retrieve::augmented_prompt(&query, &hits).ends_with(&query)
        }),
        _ => lab::groups::sample_class_from(file).is_ok_and(|(files, assign)| {
            lab::groups::groups_of(&files, &assign).iter().all(|g| !g.name.is_empty())
        }),
    }
}

/// What the page does with a preset: the sampling and training settings and the judges it sets,
/// and its examples added to the data (twice adds nothing more).
fn use_preset(p: &lesson::Preset) {
    let _ = p.sampling(&Default::default());
    let _ = p.train(&Default::default());
    let _ = p.judges(&[("sentiment".into(), 1.0, true)]);
    let mut data = lab::TrainData::default();
    p.add_data(&mut data);
    assert_eq!(p.add_data(&mut data), 0, "adding a preset's examples twice added some again");
}
