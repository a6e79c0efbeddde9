//! The fuzz targets (`fuzz/targets.rs`) in the test command: every committed seed and every input
//! that once crashed a loader (`fuzz/regressions/<target>/`) runs through its target, then a few
//! hundred deterministic mutations of each seed (bit flips, boundary values, huge lengths,
//! truncations). Coverage-guided fuzzing for minutes per target is `scripts/fuzz`.

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

use alignlab::io::Message;
use crate::common::*;

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of the kinds that break parsers: a flipped bit, a boundary byte, a huge or
/// negative length written over 4 or 8 bytes, a cut, a duplicated or deleted span.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    if d.is_empty() {
        return vec![rng.next() as u8; rng.below(16)];
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(d.len());
        match rng.below(6) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = [0u8, 0xff, 0x7f, 0x80, b'{', b'%'][rng.below(6)],
            2 => {
                let v: u64 = [u64::MAX, u32::MAX as u64, 1 << 31, 1 << 40, 0x7fff_ffff_ffff_ffff][rng.below(5)];
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                for (k, b) in v.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(x) = d.get_mut(at + k) {
                        *x = *b;
                    }
                }
            }
            3 => d.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(64)).min(d.len());
                let span = d[at..end].to_vec();
                d.splice(at..at, span);
            }
            _ => {
                let end = (at + 1 + rng.below(64)).min(d.len());
                d.drain(at..end);
            }
        }
        if d.is_empty() {
            break;
        }
    }
    d
}

/// Runs `input` through `target`; a panic fails the test and leaves the input in the target
/// directory for `cargo fuzz run <target> <file>` or a regression file.
fn run(name: &str, target: fn(&[u8]) -> bool, input: &[u8], origin: &str) -> bool {
    std::panic::catch_unwind(|| target(input)).unwrap_or_else(|_| {
        let out = std::env::temp_dir().join(format!("alignlab-fuzz-{name}-crash"));
        std::fs::write(&out, input).unwrap();
        panic!("fuzz target {name} panicked on {origin}; the input is saved at {}", out.display());
    })
}

#[test]
fn every_target_survives_its_seeds_regressions_and_mutations() {
    const MUTATIONS: usize = 1000;
    // Model-shaped seeds are written from the test builders, never committed.
    write_seeds();
    for &(name, target) in targets::TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        let seeds: Vec<PathBuf> = seeds.into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seed-")).collect();
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seed-* files; run scripts/fuzz --seeds");
        let mut rng = Rng(0x9E3779B97F4A7C15 ^ name.len() as u64);
        // A seed the loader refuses would only exercise its error paths.
        for path in &seeds {
            assert!(run(name, target, &std::fs::read(path).unwrap(), "its seed"), "{} is not accepted by its loader", path.display());
        }
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        for path in &regressions {
            run(name, target, &std::fs::read(path).unwrap(), &path.display().to_string());
        }
        let mut accepted = 0;
        for seed in &seeds {
            let input = std::fs::read(seed).unwrap();
            for i in 0..MUTATIONS {
                accepted += run(name, target, &mutate(&input, &mut rng), &format!("mutation {i} of {}", seed.display())) as usize;
            }
        }
        eprintln!(
            "fuzz smoke: {name}: {} seeds, {} regressions, {} mutations ({accepted} accepted), no panic",
            seeds.len(),
            regressions.len(),
            seeds.len() * MUTATIONS
        );
    }
}

/// The seed corpus, written from the same builders the loader tests use (`scripts/fuzz --seeds`).
#[test]
#[ignore = "writes fuzz/corpus; run by scripts/fuzz --seeds"]
fn write_seed_corpus() {
    write_seeds();
}

fn write_seeds() {
    let c = alignlab::model::LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 32,
        tie_word_embeddings: true,
    };
    let w = random_weights(&c, 3);
    let tmp = temp_dir("fuzz-seeds");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let framed = |parts: &[&[u8]]| {
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 < parts.len() {
                out.extend((p.len() as u16).to_le_bytes());
            }
            out.extend(*p);
        }
        out
    };

    let types: Vec<(&str, GgmlType)> = w.keys().filter(|k| w[*k].shape.len() == 2).map(|k| (k.as_str(), GgmlType::F16)).collect();
    write_tiny_gguf(&tmp.join("m.gguf"), &c, &w, &types);
    put("gguf", "tiny-f16.gguf", &std::fs::read(tmp.join("m.gguf")).unwrap());

    write_llama2c(&tmp.join("m.bin"), &tmp.join("tok.bin"), &c, &w);
    put("llama2c", "tiny.bin", &std::fs::read(tmp.join("m.bin")).unwrap());
    let mut tok = (c.vocab_size as u16).to_le_bytes().to_vec();
    tok.extend(std::fs::read(tmp.join("tok.bin")).unwrap());
    put("tokenizer_bin", "tiny", &tok);

    put("tokenizer_json", "wordlevel.json", tiny_tokenizer_json(64).as_bytes());

    std::fs::create_dir_all(tmp.join("hf")).unwrap();
    write_hf(&tmp.join("hf"), &c, &w, &[]);
    let config = std::fs::read(tmp.join("hf/config.json")).unwrap();
    let st = std::fs::read(tmp.join("hf/model.safetensors")).unwrap();
    let index = br#"{"metadata": {}, "weight_map": {"model.norm.weight": "model.safetensors"}}"#;
    put("hf", "tiny", &framed(&[&config, index, &st]));

    let mut model = targets::tiny_model();
    let lora = alignlab::model::LoraConfig { r: 2, lora_alpha: 4.0, target_modules: vec!["q_proj".into(), "down_proj".into()], ..Default::default() };
    model.add_lora(&lora).unwrap();
    let files = alignlab::backend::block_on(alignlab::io::peft::save_adapter(&model, &lora, "tiny")).unwrap();
    put("peft", "tiny", &framed(&[files.config_json.as_bytes(), &files.safetensors]));
    let rm = alignlab::align::reward::RewardModel::new(model, 7);
    let files = alignlab::backend::block_on(alignlab::align::reward::save_reward_model(&rm, &lora, "tiny")).unwrap();
    put("peft", "tiny-reward", &framed(&[files.config_json.as_bytes(), &files.safetensors]));

    // A state as a checkpoint saves it: two steps' moments for the adapter's four matrices.
    let mut tr = targets::lora_trainer();
    assert!(targets::sft_once(&mut tr) && targets::sft_once(&mut tr));
    put("optimizer_state", "two-steps.bpk", &tr.optimizer_state().unwrap());

    put("jsonl", "trl.jsonl", concat!(
        r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}"#, "\n",
        r#"{"prompt": [{"role": "user", "content": "Hey"}], "chosen": [{"role": "assistant", "content": "Hi there"}], "rejected": [{"role": "assistant", "content": "What"}]}"#, "\n",
        r#"{"prompt": "Q", "completion": "A", "label": true}"#, "\n",
        "not json\n",
    ).as_bytes());

    let chatml = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    put("chat_template", "chatml.jinja", chatml.as_bytes());
    let llama3 = "{% set ns = namespace(sys='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.sys = m.content | trim %}{% elif m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}{{ bos_token }}{% if ns.sys %}{{ '<|start_header_id|>system<|end_header_id|>\n\n' + ns.sys + '<|eot_id|>' }}{% endif %}{% for m in messages if m.role != 'system' %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + m.content.strip() + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    put("chat_template", "llama3.jinja", llama3.as_bytes());
    write_lab_seeds(&put);

    // The seeds load: a seed that fails to parse would only fuzz the error paths.
    let ok = alignlab::io::ChatTemplate::new(llama3, "<s>", "</s>").render(&[Message::user("hi")], true).unwrap();
    assert!(ok.contains("assistant"));
}

/// The lab's own files, each behind the byte that picks its reader in `targets::lab_files`: the
/// shipped lessons, probes, facts, documents and class answers, and the starter sets as the app
/// writes them.
fn write_lab_seeds(put: &dyn Fn(&str, &str, &[u8])) {
    use alignlab::lab::{constitution, groups, lesson, prompting};
    let www = root().join("www");
    let seed = |kind: u8, name: &str, bytes: &[u8]| put("lab_files", name, &[&[kind], bytes].concat());
    for name in ["what-is-alignment", "dpo-without-reward-model", "answers-from-documents", "whose-preferences"] {
        seed(0, &format!("{name}.json"), &std::fs::read(www.join(format!("labs/{name}.json"))).unwrap());
    }
    // The built-in preset that sets the most kinds of thing.
    let presets = lesson::built_in().into_iter().flat_map(|l| std::iter::once(l.setup).chain(l.steps.into_iter().map(|s| s.set)));
    let kinds = |p: &lesson::Preset| [p.sampling.is_some(), p.train.is_some(), p.judges.is_some(), p.data.is_some()].iter().filter(|&&k| k).count();
    let set = presets.max_by_key(kinds).expect("the built-in lessons have presets");
    assert!(kinds(&set) >= 2, "no built-in preset sets two kinds of thing: {set:?}");
    seed(1, "preset.json", serde_json::to_string(&set).unwrap().as_bytes());
    seed(2, "class.json", &serde_json::to_vec(&groups::sample_class().0[0]).unwrap());
    let principles = constitution::starter_constitution().principles;
    seed(3, "constitution.json", serde_json::json!({"alignlab_constitution": 1, "principles": principles}).to_string().as_bytes());
    seed(4, "variants.json", &serde_json::to_vec(&prompting::starter_variants()).unwrap());
    seed(5, "probes.json", &std::fs::read(www.join("probes.json")).unwrap());
    seed(6, "facts.json", &std::fs::read(www.join("library/facts.json")).unwrap());
    seed(7, "ferry.md", &std::fs::read(www.join("library/ferry.md")).unwrap());
    seed(8, "answers.json", &std::fs::read(www.join("class/answers.json")).unwrap());
}
