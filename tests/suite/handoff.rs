//! "Take this run further": the TRL hand-off of each method is checked from the outside. Python
//! (not alignlab) reads the script's settings, compiles the script and opens the zip; the data
//! must be the run's own examples, split as the run split them, in the form TRL expects.
//! (`scripts/interop-trl` runs the scripts in TRL itself.)

use std::path::Path;
use std::process::Command;

use alignlab::align::Encoding;
use alignlab::align::dpo::DpoConfig;
use alignlab::align::kto::KtoConfig;
use alignlab::align::reward::RewardConfig;
use alignlab::align::rl::RlConfig;
use alignlab::data::{Demonstration, Preference, Unpaired, import};
use alignlab::io::peft::AdapterFiles;
use alignlab::judges::{JudgeData, JudgeSpec};
use alignlab::lab::handoff::{Handoff, zip};
use alignlab::lab::run::split_indices;
use alignlab::lab::{EvalConfig, Method, MethodKind, RewardSpec, RunSpec, TrainData};
use alignlab::model::LoraConfig;
use serde_json::Value;

fn data() -> TrainData {
    let mut d = TrainData::default();
    for i in 0..10 {
        let prompt = format!("Question {i}: how do I say \"thanks\" nicely?\nAsk twice.");
        d.pairs.push(Preference { prompt: prompt.clone(), chosen: format!("Thank you kindly, {i}."), rejected: format!("Whatever {i}.") });
        d.unpaired.push(Unpaired { prompt: prompt.clone(), completion: format!("Answer {i}"), label: i % 2 == 0 });
        d.demos.push(Demonstration { prompt: prompt.clone(), completion: format!("Demo {i}") });
        d.prompts.push(prompt);
    }
    d
}

fn spec(method: Method, chat: bool) -> RunSpec {
    let mut train = alignlab::align::train::TrainConfig { learning_rate: 3e-4, max_steps: 7, seed: 5, ..Default::default() };
    if method.kind() == MethodKind::Kto {
        train.per_device_train_batch_size = 4;
    }
    RunSpec {
        method,
        train,
        lora: Some(LoraConfig { r: 4, lora_alpha: 8.0, target_modules: vec!["q_proj".into(), "o_proj".into()], ..Default::default() }),
        encoding: Encoding { chat, system: "Be brief.".into(), max_prompt_length: 64, max_completion_length: 32 },
        eval: EvalConfig { eval_fraction: 0.3, eval_steps: 3 },
        data: data(),
    }
}

fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3").arg("-c").arg(code).args(args).output().expect("python3 runs (the test command needs it)");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The script's settings, read by Python from the script's own head (everything before its body).
fn settings(script: &str) -> Value {
    let head = script.split("# ---- Below:").next().unwrap();
    let code = "import json,sys\nns={}\nexec(open(sys.argv[1]).read(), ns)\n\
                print(json.dumps({k: ns[k] for k in ['METHOD','BASE_MODEL','CHAT','CONFIG','ARGS','LORA','REWARD','EVAL_STEPS']}))";
    // Tests run in parallel: one file per call.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("alignlab-handoff-head-{}-{n}.py", std::process::id()));
    std::fs::write(&path, head).unwrap();
    let out = python(code, &[path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&out).unwrap()
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    files.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
}

fn rows(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn each_method_hands_off_its_split_data_and_settings_under_trl_names() {
    let judge_data = JudgeData::default();
    let adapter = AdapterFiles { config_json: "{\"peft_type\": \"LORA\"}".into(), safetensors: vec![1, 2, 3] };
    let methods = [
        Method::Dpo(DpoConfig { beta: 0.25, ..Default::default() }),
        Method::Kto(KtoConfig { beta: 0.3, desirable_weight: 1.5, ..Default::default() }),
        Method::Reward(RewardConfig { margin: 0.5, ..Default::default() }),
        Method::Sft,
        Method::Rl {
            cfg: RlConfig { prompts_per_step: 2, num_generations: 3, num_iterations: 2, beta: 0.07, ..Default::default() },
            reward: RewardSpec::Judges(vec![(JudgeSpec::Politeness, 2.0), (JudgeSpec::Length { target_words: 5 }, 0.5)]),
        },
    ];
    for method in methods {
        let kind = method.kind();
        let spec = spec(method, true);
        let h = Handoff {
            spec: &spec,
            base_model: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
            adapter: Some(adapter.clone()),
            reward_model: None,
            judge_data: &judge_data,
            has_chat_template: true,
        };
        let files = h.files().unwrap();
        let s = settings(std::str::from_utf8(file(&files, "train_trl.py").unwrap()).unwrap());
        assert_eq!(s["METHOD"], kind.id());
        assert_eq!(s["CHAT"], true);
        assert_eq!(s["EVAL_STEPS"], 3);
        let args = &s["ARGS"];
        assert_eq!(args["learning_rate"], 3e-4, "{kind:?}");
        assert_eq!(args["seed"], 5);
        assert_eq!(s["LORA"]["r"], 4);
        assert_eq!(s["LORA"]["target_modules"], serde_json::json!(["q_proj", "o_proj"]));
        assert_eq!(file(&files, "adapter/adapter_model.safetensors"), Some(&[1u8, 2, 3][..]));

        // The data: every example once, held out exactly as the run holds out.
        let train = rows(file(&files, "train.jsonl").unwrap());
        let eval = file(&files, "eval.jsonl").map(rows).unwrap_or_default();
        let min = if kind == MethodKind::Kto { 2 } else { 1 };
        let (want_train, want_eval) = split_indices(10, &spec, min);
        assert_eq!((train.len(), eval.len()), (want_train.len(), want_eval.len()), "{kind:?}");
        let prompt_of = |row: &Value| row["prompt"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
        for (row, &i) in eval.iter().zip(&want_eval) {
            assert_eq!(prompt_of(row), spec.data.prompts[i], "{kind:?}: held-out row {i}");
            assert_eq!(row["prompt"][0], serde_json::json!({"role": "system", "content": "Be brief."}));
        }
        for (row, &i) in train.iter().zip(&want_train) {
            assert_eq!(prompt_of(row), spec.data.prompts[i]);
        }
        match kind {
            MethodKind::Dpo => {
                assert_eq!(args["beta"], 0.25);
                assert_eq!(args["loss_type"], "sigmoid");
                assert_eq!(args["max_length"], 96);
                assert_eq!(s["CONFIG"], "DPOConfig");
                assert_eq!(train[0]["chosen"][0]["role"], "assistant");
            }
            MethodKind::Kto => {
                assert_eq!((args["beta"].as_f64(), args["desirable_weight"].as_f64()), (Some(0.3), Some(1.5)));
                assert_eq!(s["CONFIG"], "KTOConfig");
                let i = want_train[0];
                assert_eq!(train[0]["label"], i % 2 == 0);
            }
            MethodKind::Reward => {
                assert_eq!(s["CONFIG"], "RewardConfig");
                assert!(train.iter().all(|r| r["margin"] == 0.5), "TRL's per-row margin column");
            }
            MethodKind::Sft => {
                assert_eq!(s["CONFIG"], "SFTConfig");
                assert_eq!(args["completion_only_loss"], true);
            }
            MethodKind::Rl => {
                assert_eq!(s["CONFIG"], "GRPOConfig");
                assert!(eval.is_empty(), "RLHF trains on every prompt");
                // A round is 2 prompts × 3 samples, each reused twice: TRL counts completions and optimizer steps.
                assert_eq!((args["per_device_train_batch_size"].as_u64(), args["max_steps"].as_u64()), (Some(6), Some(14)));
                assert_eq!((args["num_generations"].as_u64(), args["beta"].as_f64()), (Some(3), Some(0.07)));
                assert_eq!(s["REWARD"], serde_json::json!([[{"kind": "politeness"}, 2.0], [{"kind": "length", "target_words": 5}, 0.5]]));
                let check = rows(file(&files, "judges_check.jsonl").unwrap());
                let polite = check.iter().find(|r| r["text"].as_str().unwrap().starts_with("Could you please")).unwrap();
                assert_eq!(polite["scores"][0], 1.0, "three politeness markers score the cap");
            }
        }
    }
}

#[test]
fn plain_text_runs_hand_off_plain_text_and_the_script_and_zip_read_in_python() {
    let judge_data = JudgeData::default();
    let spec = spec(Method::Dpo(DpoConfig::default()), true);
    // A model without a chat template: the run used plain text, and so must TRL.
    let h = Handoff { spec: &spec, base_model: "stories.gguf".into(), adapter: None, reward_model: None, judge_data: &judge_data, has_chat_template: false };
    let files = h.files().unwrap();
    let train = rows(file(&files, "train.jsonl").unwrap());
    assert!(train[0]["prompt"].is_string() && train[0]["chosen"].is_string());
    assert!(file(&files, "adapter/adapter_config.json").is_none());
    assert_eq!(import::<Preference>(std::str::from_utf8(file(&files, "train.jsonl").unwrap()).unwrap()).errors.len(), 0);
    let readme = std::str::from_utf8(file(&files, "README.md").unwrap()).unwrap();
    assert!(readme.contains("python train_trl.py --model stories.gguf") && readme.contains("accelerate launch"));

    // Python's own zip reader gets every file back, byte for byte; the script compiles.
    let dir = crate::common::temp_dir("handoff-zip");
    let archive = dir.join("run.zip");
    std::fs::write(&archive, zip(&files).unwrap()).unwrap();
    let listed = python(
        "import sys,zipfile,hashlib,py_compile\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\n\
         for n in z.namelist(): print(n, hashlib.sha256(z.read(n)).hexdigest())\n\
         z.extract('train_trl.py', sys.argv[2]); py_compile.compile(sys.argv[2]+'/train_trl.py', doraise=True)",
        &[archive.to_str().unwrap(), dir.to_str().unwrap()],
    );
    let got: Vec<(String, String)> = listed.lines().map(|l| l.split_once(' ').map(|(a, b)| (a.into(), b.into())).unwrap()).collect();
    assert_eq!(got.len(), files.len());
    for ((name, bytes), (zname, zhash)) in files.iter().zip(&got) {
        assert_eq!(name, zname);
        assert_eq!(*zhash, sha256_hex(bytes, &dir), "{name}");
    }
    assert!(Path::new(&dir.join("train_trl.py")).exists());
}

#[test]
fn a_run_with_a_reward_model_reward_needs_the_reward_model() {
    let judge_data = JudgeData::default();
    let spec = spec(Method::Rl { cfg: RlConfig::default(), reward: RewardSpec::RewardModel }, true);
    let h = Handoff { spec: &spec, base_model: "m".into(), adapter: None, reward_model: None, judge_data: &judge_data, has_chat_template: true };
    let err = h.files().err().expect("no reward model: an error").to_string();
    assert!(err.contains("reward model"), "{err}");
    let rm = AdapterFiles { config_json: "{}".into(), safetensors: vec![9] };
    let h = Handoff { reward_model: Some(rm), ..h };
    let files = h.files().unwrap();
    assert_eq!(file(&files, "reward_model/adapter_model.safetensors"), Some(&[9u8][..]));
    assert_eq!(settings(std::str::from_utf8(file(&files, "train_trl.py").unwrap()).unwrap())["REWARD"], "reward_model");
}

/// SHA-256 by Python's hashlib too, so the comparison does not trust our own zip on both sides.
fn sha256_hex(bytes: &[u8], dir: &Path) -> String {
    let p = dir.join("blob");
    std::fs::write(&p, bytes).unwrap();
    python("import sys,hashlib;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())", &[p.to_str().unwrap()]).trim().to_string()
}
