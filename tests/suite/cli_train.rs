//! The training commands driven from a shell on llama2.c's stories260K (../shared/models):
//! each writes TRL-named metrics and a PEFT adapter that the other commands load back.

use std::path::Path;

use crate::common::{TempDir, alignlab, stories260k, temp_dir};
use serde_json::Value;

struct Fixture {
    dir: TempDir,
    model: String,
    tok: String,
}

impl Fixture {
    fn new(name: &str) -> Option<Self> {
        let (model, tok) = stories260k()?;
        let dir = temp_dir(&format!("cli-train-{name}"));
        let mut prefs = String::new();
        let mut kto = String::new();
        let mut prompts = String::new();
        let mut demos = String::new();
        for (i, who) in ["Lily", "Tom", "Ben", "Sue", "Max", "Anna"].iter().enumerate() {
            let p = format!("Once upon a time, {who} went to the park");
            prefs += &serde_json::json!({"prompt": p, "chosen": " and she was very happy.", "rejected": " and it was sad and dark."}).to_string();
            prefs.push('\n');
            kto += &serde_json::json!({"prompt": p, "completion": " and she was very happy.", "label": true}).to_string();
            kto.push('\n');
            kto += &serde_json::json!({"prompt": p, "completion": " and it was sad and dark.", "label": false}).to_string();
            kto.push('\n');
            prompts += &serde_json::json!({"prompt": format!("{who} had a")}).to_string();
            prompts.push('\n');
            demos += &serde_json::json!({"prompt": p, "completion": format!(" and {who} smiled.")}).to_string();
            demos.push('\n');
            let _ = i;
        }
        std::fs::write(dir.join("prefs.jsonl"), prefs).unwrap();
        std::fs::write(dir.join("kto.jsonl"), kto).unwrap();
        std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
        std::fs::write(dir.join("demos.jsonl"), demos).unwrap();
        Some(Self {
            dir,
            model: model.display().to_string(),
            tok: tok.display().to_string(),
        })
    }
    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--model", &self.model, "--tokenizer", &self.tok]);
        alignlab(&full)
    }
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn dpo_writes_metrics_and_an_adapter_that_shifts_logprobs() {
    let Some(f) = Fixture::new("dpo") else { return };
    let out = f.p("dpo");
    let (ok, _, err) = f.run(&["dpo", "--data", &f.p("prefs.jsonl"), "--output-dir", &out, "--max-steps", "8",
        "--learning-rate", "1e-2", "--batch-size", "3", "--lora-r", "4", "--target-modules", "q_proj,v_proj,o_proj",
        "--warmup-ratio", "0", "--lora-dropout", "0", "--handoff"]);
    assert!(ok, "{err}");
    let m = metrics(Path::new(&out));
    assert_eq!(m.len(), 8);
    // --handoff: the same adapter, every pair once (held out as the run said), a script for TRL.
    let trl = f.dir.join("dpo/trl");
    assert_eq!(std::fs::read(trl.join("adapter/adapter_model.safetensors")).unwrap(), std::fs::read(f.dir.join("dpo/adapter_model.safetensors")).unwrap());
    let count = |name: &str| std::fs::read_to_string(trl.join(name)).map(|t| t.lines().count()).unwrap_or(0);
    let held: usize = err.split(" held out").next().and_then(|s| s.rsplit('(').next()).and_then(|n| n.trim().parse().ok()).expect("the run reports its held-out count");
    assert_eq!((count("train.jsonl"), count("eval.jsonl")), (6 - held, held));
    let script = std::fs::read_to_string(trl.join("train_trl.py")).unwrap();
    assert!(script.contains("CONFIG = \"DPOConfig\"") && script.contains("learning_rate=0.01,") && script.contains(&format!("BASE_MODEL = {:?}", f.model)), "{script}");
    for key in ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"] {
        assert!(m[0].get(key).is_some(), "metric {key} missing");
    }
    assert!(m[7]["rewards/margins"].as_f64().unwrap() > m[0]["rewards/margins"].as_f64().unwrap());
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(f.dir.join("dpo/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert!(f.dir.join("dpo/adapter_model.safetensors").exists() && f.dir.join("dpo/run.json").exists());

    // The adapter loads into logprobs and raises the chosen continuation against the rejected one.
    let lp = |extra: &[&str], completion: &str| {
        let mut args = vec!["logprobs", "--prompt", "Once upon a time, Lily went to the park", "--completion", completion, "--json"];
        args.extend(extra);
        let (ok, out, err) = f.run(&args);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()["sum"].as_f64().unwrap()
    };
    let base_gap = lp(&[], " and she was very happy.") - lp(&[], " and it was sad and dark.");
    let tuned_gap = lp(&["--adapter", &out], " and she was very happy.") - lp(&["--adapter", &out], " and it was sad and dark.");
    assert!(tuned_gap > base_gap + 1.0, "chosen-rejected gap {base_gap:.2} -> {tuned_gap:.2}");
}

#[test]
fn kto_sft_reward_and_rl_run_and_save() {
    let Some(f) = Fixture::new("others") else { return };
    let common = ["--max-steps", "3", "--learning-rate", "1e-2", "--batch-size", "4", "--lora-r", "4"];
    for (cmd, data) in [("kto", "kto.jsonl"), ("sft", "demos.jsonl"), ("reward", "prefs.jsonl")] {
        let out = f.p(cmd);
        let mut args = vec![cmd, "--data", &f.dir.join(data).to_str().unwrap().to_string()].iter().map(|s| s.to_string()).collect::<Vec<_>>();
        args.extend(["--output-dir".to_string(), out.clone()]);
        args.extend(common.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = f.run(&args);
        assert!(ok, "{cmd}: {err}");
        assert_eq!(metrics(Path::new(&out)).len(), 3, "{cmd}");
        assert!(Path::new(&out).join("adapter_model.safetensors").exists(), "{cmd}");
    }
    assert!(metrics(Path::new(&f.p("sft")))[0].get("mean_token_accuracy").is_some());
    assert!(metrics(Path::new(&f.p("kto")))[0].get("kl").is_some());
    assert!(metrics(Path::new(&f.p("reward")))[0].get("accuracy").is_some());

    let rl = f.p("rl");
    let (ok, _, err) = f.run(&["rl", "--data", &f.p("prompts.jsonl"), "--output-dir", &rl, "--judge", "include=happy",
        "--judge", "length=8*0.5", "--max-steps", "2", "--num-generations", "3", "--max-new-tokens", "8", "--lora-r", "4"]);
    assert!(ok, "{err}");
    let m = metrics(Path::new(&rl));
    assert_eq!(m.len(), 2);
    for key in ["reward", "reward_std", "kl", "entropy", "clip_ratio", "completions/mean_length"] {
        assert!(m[0].get(key).is_some(), "rl metric {key} missing");
    }

    // The reward model scores best-of-n; judges score eval, which compares with the base model.
    let (ok, out, err) = f.run(&["best-of-n", "--prompt", "Tom had a", "-n", "3", "--reward-model", &f.p("reward"), "--json", "--max-new-tokens", "8"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let scores: Vec<f64> = v["ranked"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted best first: {scores:?}");
    let (ok, out, err) = f.run(&["eval", "--prompts", &f.p("prompts.jsonl"), "--judge", "length=8", "--adapter", &rl, "-n", "2", "--max-new-tokens", "8"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["mean_score"].is_number() && v["base_mean_score"].is_number() && v["kl"].is_number(), "{v}");
}

#[test]
fn pairs_labels_with_judges_and_bad_lines_are_reported() {
    let Some(f) = Fixture::new("pairs") else { return };
    let mut prompts = std::fs::read_to_string(f.dir.join("prompts.jsonl")).unwrap();
    prompts += "{\"prompt\": \"\"}\nnot json\n";
    std::fs::write(f.dir.join("prompts_bad.jsonl"), prompts).unwrap();
    let out = f.p("pairs.jsonl");
    let (ok, _, err) = f.run(&["pairs", "--prompts", &f.p("prompts_bad.jsonl"), "--judge", "length=6", "-n", "4",
        "--max-new-tokens", "12", "--output", &out]);
    assert!(ok, "{err}");
    assert!(err.contains("line 7") && err.contains("line 8"), "bad lines named: {err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let n = text.lines().count();
    assert!(n > 0 && n <= 6, "{n} pairs");
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["chosen"].is_string() && v["rejected"].is_string() && v["chosen"] != v["rejected"]);
    }
    // A file with no usable line is an error that says what fields are needed.
    std::fs::write(f.dir.join("junk.jsonl"), "junk\n{\"question\": 1}\n").unwrap();
    let (ok, _, err) = f.run(&["dpo", "--data", &f.p("junk.jsonl"), "--output-dir", &f.p("x")]);
    assert!(!ok && err.contains("prompt, chosen, rejected"), "{err}");
}

#[test]
fn a_stopped_run_resumes_from_its_adapter_and_step() {
    let Some(f) = Fixture::new("resume") else { return };
    let out = f.p("dpo");
    let args = |steps: &'static str| -> Vec<String> {
        ["dpo", "--data", &f.p("prefs.jsonl"), "--output-dir", &out, "--max-steps", steps, "--learning-rate", "1e-2",
         "--batch-size", "3", "--lora-r", "4", "--lora-dropout", "0"].iter().map(|s| s.to_string()).collect()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (ok, _, err) = f.run(&a);
        assert!(ok, "{err}");
    };
    run(args("3"));
    let mut more = args("6");
    more.extend(["--resume-from".to_string(), out.clone()]);
    run(more);
    let m = metrics(Path::new(&out));
    let steps: Vec<u64> = m.iter().map(|v| v["step"].as_f64().unwrap() as u64).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6], "the log continues where it stopped");
    // Resumed from the trained adapter, not from B = 0: no fresh ln 2 loss at step 4.
    assert!(m[3]["rewards/margins"].as_f64().unwrap().abs() > 1e-4);
}

#[test]
fn full_fine_tuning_saves_an_hf_checkpoint_that_loads_back() {
    let Some(f) = Fixture::new("full") else { return };
    let out = f.p("sft-full");
    let (ok, _, err) = f.run(&["sft", "--data", &f.p("demos.jsonl"), "--output-dir", &out, "--max-steps", "2",
        "--learning-rate", "1e-3", "--batch-size", "2", "--full"]);
    assert!(ok, "{err}");
    let model_dir = format!("{out}/model");
    let (ok, out_json, err) = alignlab(&["logprobs", "--model", &model_dir, "--tokenizer", &f.tok, "--prompt", "Once upon a time",
        "--completion", " there was a girl", "--json"]);
    assert!(ok, "{err}");
    let tuned: Value = serde_json::from_str(out_json.trim()).unwrap();
    let (_, base_json, _) = f.run(&["logprobs", "--prompt", "Once upon a time", "--completion", " there was a girl", "--json"]);
    let base: Value = serde_json::from_str(base_json.trim()).unwrap();
    assert_eq!(tuned["completion_tokens"], base["completion_tokens"]);
    let (t, b) = (tuned["sum"].as_f64().unwrap(), base["sum"].as_f64().unwrap());
    assert!((t - b).abs() > 1e-4, "two full fine-tuning steps must change the weights: {t} vs {b}");
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_end() {
    let Some(f) = Fixture::new("kill") else { return };
    // Dropout on: the resumed run must draw the same masks as the uninterrupted one.
    let args = |out: &str| -> Vec<String> {
        ["dpo", "--data", &f.p("prefs.jsonl"), "--output-dir", out, "--max-steps", "60", "--learning-rate", "5e-3",
         "--batch-size", "2", "--lora-r", "4", "--lora-dropout", "0.1", "--save-steps", "2", "--eval-fraction", "0",
         "--model", &f.model, "--tokenizer", &f.tok].iter().map(|s| s.to_string()).collect()
    };
    let (whole, killed) = (f.p("whole"), f.p("killed"));
    let (ok, _, err) = alignlab(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");

    // The same run, killed (SIGKILL: no chance to save) once its step-4 checkpoint exists.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_alignlab"))
        .args(args(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !Path::new(&killed).join("checkpoint-4").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed().as_secs() < 120, "no checkpoint-4 after 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!Path::new(&killed).join("adapter_model.safetensors").exists(), "killed before its final save");
    let before = metrics(Path::new(&killed)).len();
    assert!(before < 60, "killed mid-way ({before} steps logged)");

    let mut resume = args(&killed);
    resume.extend(["--resume-from".to_string(), killed.clone()]);
    let (ok, _, err) = alignlab(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(err.contains("optimizer state"), "{err}");

    let (a, b) = (metrics(Path::new(&whole)), metrics(Path::new(&killed)));
    let steps: Vec<u64> = b.iter().map(|v| v["step"].as_f64().unwrap() as u64).collect();
    assert_eq!(steps, (1..=60).collect::<Vec<_>>(), "each step logged once, the killed run's extra steps replaced");
    for (x, y) in a.iter().zip(&b) {
        for key in ["loss", "rewards/margins", "grad_norm", "learning_rate"] {
            let (u, v) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "step {}: {key} {u} uninterrupted vs {v} resumed", x["step"]);
        }
    }
    // And the run really moved: the margin grew.
    assert!(a[59]["rewards/margins"].as_f64().unwrap() > a[0]["rewards/margins"].as_f64().unwrap() + 0.05);
}

/// A checkpoint is files a person can mix up: another run's `optimizer.bpk` (and its
/// `trainer_state.json`) copied beside this run's adapter. burn would drop state that names other
/// matrices and panic on moments of another shape; the resume is refused, saying which, and the
/// output directory keeps what it had.
#[test]
fn another_runs_optimizer_state_is_refused_on_resume_and_nothing_is_lost() {
    let Some(f) = Fixture::new("foreign") else { return };
    let args = |out: &str, r: &str, steps: &str| -> Vec<String> {
        ["dpo", "--data", &f.p("prefs.jsonl"), "--output-dir", out, "--max-steps", steps, "--batch-size", "2",
         "--lora-r", r, "--save-steps", "2", "--eval-fraction", "0", "--model", &f.model, "--tokenizer", &f.tok]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let run = |a: Vec<String>| alignlab(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (r4, r8) = (f.p("r4"), f.p("r8"));
    for (out, r) in [(&r4, "4"), (&r8, "8")] {
        let (ok, _, err) = run(args(out, r, "3"));
        assert!(ok, "{err}");
    }
    let (ck4, ck8) = (Path::new(&r4).join("checkpoint-2"), Path::new(&r8).join("checkpoint-2"));
    let kept = |dir: &str| {
        let read = |name: &str| std::fs::read(Path::new(dir).join(name)).unwrap();
        (read("adapter_model.safetensors"), read("run.json"), metrics(Path::new(dir)))
    };
    let before = kept(&r4);
    let resume = || {
        let mut a = args(&r4, "4", "4");
        a.extend(["--resume-from".to_string(), r4.clone()]);
        run(a)
    };

    // The optimizer state alone swapped: it names the other run's matrices.
    std::fs::copy(ck8.join("optimizer.bpk"), ck4.join("optimizer.bpk")).unwrap();
    let (ok, _, err) = resume();
    assert!(!ok && err.contains("another run") && !err.contains("panicked"), "{err}");
    // With its trainer_state.json too the ids fit, and the rank-8 moments meet rank-4 matrices.
    std::fs::copy(ck8.join("trainer_state.json"), ck4.join("trainer_state.json")).unwrap();
    let (ok, _, err) = resume();
    assert!(!ok && err.contains("another rank") && err.contains("of shape [") && !err.contains("panicked"), "{err}");
    assert!(kept(&r4) == before, "the refused resumes changed the output directory's adapter, run.json or log");
}

/// Red-teaming's loop from the shell: a probe finds a behaviour (stories260K says "girl" after
/// "a little"), its answers become pairs against it, DPO on them, and the same probe asked again
/// with a fresh seed triggers far less, with a KL to show what it cost.
#[test]
fn probes_find_a_behaviour_and_their_pairs_train_it_away() {
    let Some(f) = Fixture::new("probes") else { return };
    let probes = serde_json::json!({"alignlab_probes": 1, "probes": [
        {"prompt": "Once upon a time, there was a little", "judges": ["avoid=girl"], "note": "the usual next word"},
        {"prompt": "One day, a little", "judges": ["avoid=girl"], "note": "the same, another opening"},
    ]});
    std::fs::write(f.dir.join("probes.json"), probes.to_string()).unwrap();
    let pairs = f.p("probe_pairs.jsonl");
    let sample = ["--probes", &f.p("probes.json"), "--max-new-tokens", "16", "--temperature", "1", "--json"];
    let (ok, out, err) = f.run(&[&["probes", "-n", "8", "--pairs-out", &pairs, "--pairs-per-probe", "4"], &sample[..]].concat());
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let base_rate = v["summary"]["all"]["rate_before"].as_f64().unwrap();
    assert!(base_rate >= 0.25, "the probe triggers the base model: {base_rate}");
    assert_eq!(v["summary"]["all"]["rate_after"].as_f64(), Some(base_rate), "no adapter: after is before");
    let text = std::fs::read_to_string(&pairs).unwrap();
    assert!(text.lines().count() >= 4, "{text}");
    for l in text.lines() {
        let p: Value = serde_json::from_str(l).unwrap();
        let (c, r) = (p["chosen"].as_str().unwrap().to_lowercase(), p["rejected"].as_str().unwrap().to_lowercase());
        assert!(!c.contains("girl") && r.contains("girl"), "chosen avoids the word, rejected has it: {p}");
    }
    let dpo = f.p("probe_dpo");
    let (ok, _, err) = f.run(&["dpo", "--data", &pairs, "--output-dir", &dpo, "--max-steps", "20", "--learning-rate", "2e-3",
        "--batch-size", "4", "--lora-r", "4", "--target-modules", "q_proj,v_proj,o_proj"]);
    assert!(ok, "{err}");
    let (ok, out, err) = f.run(&[&["probes", "-n", "16", "--seed", "100", "--adapter", &dpo], &sample[..]].concat());
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let s = &v["summary"];
    let (before, after) = (s["all"]["rate_before"].as_f64().unwrap(), s["all"]["rate_after"].as_f64().unwrap());
    eprintln!("answers with the word: {:.0}% before, {:.0}% after DPO on the probes' pairs; KL {:.1}", 100.0 * before, 100.0 * after, s["kl"].as_f64().unwrap());
    assert!(before >= 0.25 && after <= before / 2.0, "{s}");
    assert!(s["all"]["mean_after"].as_f64() > s["all"]["mean_before"].as_f64(), "{s}");
    assert!(s["kl"].as_f64().unwrap() > 0.0, "the adapter moved the model: {s}");
    for p in v["probes"].as_array().unwrap() {
        assert!(["fixed", "better"].contains(&p["verdict"].as_str().unwrap()), "{p}");
    }

    // A bad probe file names the probe and the judge; an unknown category is refused.
    std::fs::write(f.dir.join("bad.json"), r#"{"alignlab_probes": 1, "probes": [{"prompt": "x", "judges": ["kind"]}]}"#).unwrap();
    let (ok, _, err) = f.run(&["probes", "--probes", &f.p("bad.json")]);
    assert!(!ok && err.contains("probes[0]: unknown judge 'kind'"), "{err}");
    let (ok, _, err) = f.run(&["probes", "--category", "mean"]);
    assert!(!ok && err.contains("unknown category 'mean'"), "{err}");
}

/// Whose preferences, from the shell: two groups that judge the same comparisons the opposite way
/// (one wants happy endings, the other gloomy ones). They never agree (rate 0, κ below 0; each
/// agrees with itself, κ 1); each group's adapter wins on its own held-out pairs and loses on the other's.
#[test]
fn group_adapters_each_win_on_their_own_groups_pairs() {
    let Some(f) = Fixture::new("groups") else { return };
    let endings = [
        (" and she was very happy.", " and it was sad and dark."),
        (" and all was bright and warm.", " and then the cold rain came."),
        (" and they played all day.", " and he cried all night."),
    ];
    let (mut happy, mut gloomy) = (String::new(), String::new());
    for (i, who) in ["Lily", "Tom", "Ben", "Sue", "Max", "Anna", "Mia", "Sam", "Zoe", "Leo", "Ava", "Jack"].iter().enumerate() {
        let (up, down) = endings[i % 3];
        let p = format!("Once upon a time, {who} went to the park");
        happy += &format!("{}\n", serde_json::json!({"prompt": p, "chosen": up, "rejected": down}));
        gloomy += &format!("{}\n", serde_json::json!({"prompt": p, "chosen": down, "rejected": up}));
    }
    std::fs::write(f.dir.join("happy.jsonl"), happy).unwrap();
    std::fs::write(f.dir.join("gloomy.jsonl"), gloomy).unwrap();
    let out = f.p("groups");
    let (ok, stdout, err) = f.run(&["groups", "--group", &format!("happy={}", f.p("happy.jsonl")), "--group", &format!("gloomy={}", f.p("gloomy.jsonl")),
        "--eval-fraction", "0.25", "--max-steps", "12", "--learning-rate", "1e-2", "--per-device-train-batch-size", "3", "--lora-r", "4",
        "--target-modules", "q_proj,v_proj,o_proj", "--output-dir", &out, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["groups"], serde_json::json!(["happy", "gloomy"]));
    let agree = |i: usize, j: usize| (v["agreement"][i][j]["rate"].as_f64().unwrap(), v["agreement"][i][j]["kappa"].as_f64().unwrap());
    assert_eq!(agree(0, 0), (1.0, 1.0));
    // The happy group picks the answer that sorts first in 4 of 12 comparisons, the gloomy one in
    // 8: chance agreement p_e = (1/3)(2/3) + (2/3)(1/3) = 4/9, so κ = (0 - 4/9)/(5/9) = -0.8.
    let (rate, kappa) = agree(0, 1);
    assert!(rate == 0.0 && (kappa + 0.8).abs() < 1e-9, "{rate} {kappa}");
    let acc = |row: usize, group: usize| v["adapters"][row]["scores"][group]["accuracy"].as_f64().unwrap();
    let margin = |row: usize, group: usize| v["adapters"][row]["scores"][group]["margin"].as_f64().unwrap();
    eprintln!("held-out accuracy: happy adapter {:.2}/{:.2}, gloomy adapter {:.2}/{:.2}, merged {:.2}/{:.2} (on happy/gloomy pairs)",
        acc(0, 0), acc(0, 1), acc(1, 0), acc(1, 1), acc(2, 0), acc(2, 1));
    assert_eq!(v["adapters"][2]["adapter"], "merged");
    assert_eq!((v["adapters"][0]["trained_on"].as_u64(), v["adapters"][2]["trained_on"].as_u64()), (Some(9), Some(18)));
    assert_eq!(v["adapters"][0]["scores"][0]["pairs"].as_u64(), Some(3));
    assert!(acc(0, 0) > acc(1, 0) && acc(1, 1) > acc(0, 1), "each group's adapter wins on its own pairs: {v}");
    assert!(margin(0, 0) > 0.0 && margin(1, 1) > 0.0 && margin(0, 1) < 0.0 && margin(1, 0) < 0.0, "{v}");
    // The merged data contradicts itself: its adapter cannot side with both groups as strongly.
    assert!(margin(2, 0).abs() < margin(0, 0) && margin(2, 1).abs() < margin(1, 1), "{v}");
    for name in ["happy", "gloomy", "merged"] {
        assert!(f.dir.join("groups").join(name).join("adapter_model.safetensors").exists(), "{name} adapter saved");
    }

    // One group, or a group too small to test, is refused with the reason.
    let (ok, _, err) = f.run(&["groups", "--group", &format!("happy={}", f.p("happy.jsonl"))]);
    assert!(!ok && err.contains("compare 2 to 8 groups"), "{err}");
}

/// Self-alignment from the shell: the base model judges its own answers against a one-question
/// constitution ("Was that sad?"), read as P(yes) from its next token; that figure is the
/// `logprobs` command's Yes and No after the same critique, softmaxed; pairs put the answer judged
/// better first. (Whether DPO on such pairs moves the self-score is measured on SmolLM2 in
/// `scripts/e2e-constitution`: on stories260K the judge's P(yes) is too flat to show it.)
#[test]
fn the_model_judges_its_own_answers_and_pairs_follow_its_judgement() {
    let Some(f) = Fixture::new("constitution") else { return };
    std::fs::write(f.dir.join("c.json"), r#"{"alignlab_constitution": 1, "principles": ["Was that sad?"]}"#).unwrap();
    let prompts = |names: &[&str], opening: &str| names.iter().map(|n| format!("{}\n", serde_json::json!({"prompt": format!("{opening}, {n}")}))).collect::<String>();
    std::fs::write(f.dir.join("train.jsonl"), prompts(&["Lily", "Tom", "Ben", "Sue", "Max", "Anna"], "Once upon a time")).unwrap();
    let pairs = f.p("self_pairs.jsonl");
    let common = ["--constitution", &f.p("c.json"), "-n", "8", "--max-new-tokens", "16", "--temperature", "1", "--json"];
    let run = |extra: &[&str]| {
        let (ok, out, err) = f.run(&[&["constitution"], &common[..], extra].concat());
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let v = run(&["--prompts", &f.p("train.jsonl"), "--judge", "sentiment", "--pairs-out", &pairs, "--pairs-per-prompt", "3"]);
    let first = &v["prompts"][0]["answers"][0];
    let p_yes = first["by_principle"][0].as_f64().unwrap();
    assert!((first["self_score"].as_f64().unwrap() - (1.0 - p_yes)).abs() < 1e-12);
    // The same judgement through `logprobs`: log p(Yes) and log p(No) after the critique.
    let critique = format!("Someone said: \"{}\"\nWas that sad? Answer Yes or No.", first["text"].as_str().unwrap().trim());
    let lp = |c: &str| {
        let (ok, out, err) = f.run(&["logprobs", "--prompt", &critique, "--completion", c, "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()["sum"].as_f64().unwrap()
    };
    let expected = 1.0 / (1.0 + (lp("No") - lp("Yes")).exp());
    assert!((p_yes - expected).abs() < 1e-4, "{p_yes} vs {expected}");
    // Pairs put the answer the model judged better first.
    let by_text: std::collections::HashMap<String, f64> = v["prompts"].as_array().unwrap().iter()
        .flat_map(|p| p["answers"].as_array().unwrap().iter().map(|a| (a["text"].as_str().unwrap().to_string(), a["self_score"].as_f64().unwrap())))
        .collect();
    let lines: Vec<Value> = std::fs::read_to_string(&pairs).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 6, "{} pairs", lines.len());
    assert!(lines.iter().all(|p| by_text[p["chosen"].as_str().unwrap()] > by_text[p["rejected"].as_str().unwrap()]));
}

/// Reward-model ensembles from the shell: three reward models from three seeds on happy-vs-sad
/// story endings; each and every combination ranks the held-out pairs, the members disagree more
/// on texts unlike anything they were trained on than on held-out endings, and the members, saved,
/// serve `best-of-n` as one reward, combined as `--combine` says.
#[test]
fn an_ensembles_members_disagree_more_off_their_training_data() {
    let Some(f) = Fixture::new("ensemble") else { return };
    let endings = [
        (" and she was very happy.", " and it was sad and dark."),
        (" and all was bright and warm.", " and then the cold rain came."),
        (" and they played all day.", " and he cried all night."),
    ];
    let mut prefs = String::new();
    for (i, who) in ["Lily", "Tom", "Ben", "Sue", "Max", "Anna", "Mia", "Sam", "Zoe", "Leo", "Ava", "Jack", "Tim", "Kim", "Pat", "Ned"].iter().enumerate() {
        let (up, down) = endings[i % 3];
        prefs += &format!("{}\n", serde_json::json!({"prompt": format!("Once upon a time, {who} went to the park"), "chosen": up, "rejected": down}));
    }
    std::fs::write(f.dir.join("prefs.jsonl"), prefs).unwrap();
    let odd = ["7 + 12 = 19; 19 * 3 = 57.", "SELECT name FROM users WHERE id = 4;", "Zxq vrb kklm pwwt ghjj.", "}}{{ ## ;; <> ~~ %%"];
    let texts: String = odd.iter().map(|t| format!("{}\n", serde_json::json!({"prompt": "Once upon a time, Ned went to the park", "completion": t}))).collect();
    std::fs::write(f.dir.join("odd.jsonl"), texts).unwrap();
    let out = f.p("members");
    let (ok, stdout, err) = f.run(&["ensemble", "--data", &f.p("prefs.jsonl"), "--members", "3", "--texts", &f.p("odd.jsonl"), "--output-dir", &out,
        "--eval-fraction", "0.25", "--max-steps", "12", "--learning-rate", "1e-2", "--per-device-train-batch-size", "4", "--lora-r", "4", "--seed", "42", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let held = &v["held_out"];
    assert_eq!(held["pairs"].as_u64(), Some(4));
    let members: Vec<f64> = held["members"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
    let combined: Vec<f64> = held["combined"].as_array().unwrap().iter().map(|c| c[1].as_f64().unwrap()).collect();
    let (spread_in, spread_odd) = (held["spread"].as_f64().unwrap(), v["texts_spread"].as_f64().unwrap());
    eprintln!("held-out accuracy: members {members:?}, mean/min/mean-spread {combined:?}; spread held-out {spread_in:.3}, odd texts {spread_odd:.3}");
    assert!(members.iter().chain(&combined).all(|&a| a >= 0.75), "each member and each combination learnt the preference: {v}");
    assert!(spread_odd > spread_in, "the members disagree more on texts unlike their training data: {spread_odd} vs {spread_in}");
    // Each text's spread is its members' sample standard deviation.
    for t in v["texts"].as_array().unwrap() {
        let m: Vec<f64> = t["members"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let mean = m.iter().sum::<f64>() / 3.0;
        let sd = (m.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((t["spread"].as_f64().unwrap() - sd).abs() < 1e-9 && (t["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    }

    // The saved members as one reward: best-of-n's scores are the members' minimum.
    let member = |k: usize| format!("{out}/member-{k}");
    let (m1, m2, m3) = (member(1), member(2), member(3));
    let bon = |extra: &[&str]| {
        let args = [&["best-of-n", "--prompt", "Once upon a time, Ned went to the park", "-n", "4", "--max-new-tokens", "12", "--temperature", "1", "--json"], extra].concat();
        let (ok, out, err) = f.run(&args);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let scores = |v: &Value| -> Vec<(String, f64)> { v["ranked"].as_array().unwrap().iter().map(|r| (r["text"].as_str().unwrap().to_string(), r["score"].as_f64().unwrap())).collect() };
    let min = scores(&bon(&["--reward-model", &m1, "--reward-model", &m2, "--reward-model", &m3, "--combine", "min"]));
    let each: Vec<Vec<(String, f64)>> = [&m1, &m2, &m3].iter().map(|m| scores(&bon(&["--reward-model", m]))).collect();
    for (text, score) in &min {
        let by_member: Vec<f64> = each.iter().map(|e| e.iter().find(|(t, _)| t == text).unwrap().1).collect();
        let lowest = by_member.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((score - lowest).abs() < 1e-4, "{text}: {score} vs members {by_member:?}");
    }
    assert!(min.windows(2).all(|w| w[0].1 >= w[1].1), "ranked best first: {min:?}");
}

/// Distillation from the shell: a teacher made by fully fine-tuning stories260K to end park
/// stories with "smiled", saved as an HF checkpoint, answers the training prompts; the base model
/// learns its answers by SFT (LoRA) and, on held-out names, reads more like the teacher (its
/// log-probability per token rises towards the teacher's own) and says "smiled" more often.
/// Then weak-to-strong: a one-word critic picks among samples, measured by a truth judge.
#[test]
fn a_student_distilled_from_a_teacher_closes_part_of_the_gap() {
    let Some(f) = Fixture::new("distill") else { return };
    let teacher = f.p("teacher");
    let (ok, _, err) = f.run(&["sft", "--data", &f.p("demos.jsonl"), "--output-dir", &teacher, "--full", "--max-steps", "30",
        "--learning-rate", "3e-3", "--batch-size", "3", "--eval-fraction", "0"]);
    assert!(ok, "{err}");
    let prompts = |names: &[&str]| names.iter().map(|n| format!("{}\n", serde_json::json!({"prompt": format!("Once upon a time, {n} went to the park")}))).collect::<String>();
    std::fs::write(f.dir.join("train.jsonl"), prompts(&["Lily", "Tom", "Ben", "Sue", "Max", "Anna", "Mia", "Sam"])).unwrap();
    std::fs::write(f.dir.join("eval.jsonl"), prompts(&["Zoe", "Leo", "Ava", "Jack"])).unwrap();
    let demos = f.p("demos_out.jsonl");
    let (ok, stdout, err) = f.run(&["distill", "--teacher", &format!("{teacher}/model"), "--teacher-tokenizer", &f.tok, "--prompts", &f.p("train.jsonl"),
        "--eval-prompts", &f.p("eval.jsonl"), "--judge", "include=smiled", "--demos-out", &demos, "-n", "4", "--max-new-tokens", "12", "--temperature", "0.7",
        "--max-steps", "16", "--learning-rate", "5e-3", "--batch-size", "4", "--lora-r", "8", "--target-modules", "q_proj,k_proj,v_proj,o_proj", "--eval-fraction", "0", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let s = |who: &str, what: &str| v[who][what].as_f64().unwrap();
    eprintln!("teacher logp/token: student {:.3} -> {:.3}, teacher {:.3}; judge: student {:.2} -> {:.2}, teacher {:.2}; recovered {} / {}",
        s("before", "teacher_logp"), s("after", "teacher_logp"), s("teacher", "teacher_logp"), s("before", "judges"), s("after", "judges"), s("teacher", "judges"),
        v["recovered_teacher"], v["recovered_judges"]);
    assert_eq!(v["demos"].as_u64(), Some(8));
    let lines = std::fs::read_to_string(&demos).unwrap();
    assert_eq!(lines.lines().count(), 8, "the teacher's answers, one line each");
    assert!(s("teacher", "teacher_logp") > s("before", "teacher_logp"), "the teacher reads its own answers as likelier than the student's");
    assert!(s("after", "teacher_logp") > s("before", "teacher_logp"), "after SFT the student's answers read more like the teacher's");
    assert!(s("after", "judges") > s("before", "judges"), "and say 'smiled' more often");
    let rec = v["recovered_teacher"].as_f64().unwrap();
    assert!(rec > 0.0, "{rec}");

    // Weak-to-strong: VADER's sentiment is the truth; the weak critic knows three happy words.
    let pairs = f.p("weak_pairs.jsonl");
    let (ok, stdout, err) = f.run(&["weak-to-strong", "--prompts", &f.p("train.jsonl"), "--judge", "sentiment", "--weak", "include=happy+smiled+fun",
        "-n", "8", "--max-new-tokens", "24", "--temperature", "1", "--pairs-out", &pairs, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let s = &v["summary"];
    let (random, weak, strong) = (s["random"].as_f64().unwrap(), s["weak"].as_f64().unwrap(), s["strong"].as_f64().unwrap());
    eprintln!("weak-to-strong: truth's score of random {random:.3}, weak {weak:.3}, strong {strong:.3}; recovered {}, label accuracy {}", s["recovered"], s["label_accuracy"]);
    // Each figure is the mean over prompts of the truth's score of that prompt's pick.
    let rows = v["prompts"].as_array().unwrap();
    let truth_of = |r: &Value, key: usize| {
        let samples = r["samples"].as_array().unwrap();
        let best = samples.iter().max_by(|a, b| a[key].as_f64().unwrap().total_cmp(&b[key].as_f64().unwrap())).unwrap();
        best[2].as_f64().unwrap()
    };
    let mean = |key: usize| rows.iter().map(|r| truth_of(r, key)).sum::<f64>() / rows.len() as f64;
    assert!((mean(1) - weak).abs() < 1e-12 && (mean(2) - strong).abs() < 1e-12);
    assert!(strong >= weak && strong > random, "the truth's own pick is the ceiling");
    assert!(weak > random, "three happy words are a better critic than none");
    let recovered = s["recovered"].as_f64().unwrap();
    assert!((recovered - (weak - random) / (strong - random)).abs() < 1e-9 && recovered > 0.0 && recovered <= 1.0);
    assert!(std::fs::read_to_string(&pairs).unwrap().lines().count() >= 1, "the weak critic's pairs are written");
}

/// A pipeline from the shell: SFT on demonstrations, a reward model on pairs, then RLHF against
/// that reward model, one after another on one adapter; each stage measured on held-out prompts
/// beside the base model and saved as it ends. Then a curriculum: pairs ordered by the judges'
/// margin, a mislabelled pair last, and DPO taking them in that order.
#[test]
fn a_pipeline_runs_its_stages_in_turn_and_measures_each() {
    let Some(f) = Fixture::new("pipeline") else { return };
    let out = f.p("pipe");
    let held: String = ["Zoe", "Leo", "Ava"].iter().map(|n| format!("{}\n", serde_json::json!({"prompt": format!("Once upon a time, {n} went to the park")}))).collect();
    std::fs::write(f.dir.join("held.jsonl"), held).unwrap();
    let (ok, stdout, err) = f.run(&["pipeline", "--stage", &format!("sft={},steps=16,lr=5e-3", f.p("demos.jsonl")),
        "--stage", &format!("reward={},steps=8,lr=1e-2", f.p("prefs.jsonl")), "--stage", &format!("rl={},steps=2", f.p("prompts.jsonl")),
        "--eval-prompts", &f.p("held.jsonl"), "--judge", "include=smiled", "--eval-samples", "4", "--eval-max-new-tokens", "12",
        "--batch-size", "3", "--lora-r", "8", "--target-modules", "q_proj,k_proj,v_proj,o_proj", "--eval-fraction", "0", "--output-dir", &out, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let stages = v["stages"].as_array().unwrap();
    let labels: Vec<&str> = stages.iter().map(|s| s["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["base model", "SFT (16 steps)", "Reward model (8 steps)", "RLHF (2 steps)"]);
    let e = |i: usize, k: &str| stages[i]["eval"][k].as_f64().unwrap();
    eprintln!("judges: base {:.2}, SFT {:.2}, RLHF {:.2}; KL to base: SFT {:.2}, RLHF {:.2}", e(0, "mean_score"), e(1, "mean_score"), e(3, "mean_score"), e(1, "kl"), e(3, "kl"));
    assert_eq!(e(0, "kl"), 0.0, "the base model against itself");
    assert!(e(1, "mean_score") > e(0, "mean_score"), "SFT on '... smiled.' makes 'smiled' likelier");
    assert!(e(1, "kl") > 0.0 && e(3, "kl") > 0.0);
    assert!(stages[2]["eval"].is_null(), "a reward stage leaves the policy as it was: not measured again");
    assert!(stages[2]["last"]["accuracy"].as_f64().is_some() && stages[1]["last"]["loss"].as_f64().is_some());
    for d in ["stage-1-sft", "stage-2-reward", "stage-3-rl"] {
        assert!(f.dir.join("pipe").join(d).join("adapter_model.safetensors").exists(), "{d} saved");
    }
    assert!(f.dir.join("pipe/pipeline.json").exists());
    // Stages that train the policy share one adapter shape.
    let (ok, _, err) = f.run(&["pipeline", "--stage", &format!("sft={}", f.p("demos.jsonl")), "--stage", &format!("dpo={},lr=x", f.p("prefs.jsonl"))]);
    assert!(!ok && err.contains("'x' is not a number for lr"), "{err}");

    // A curriculum by the judges' margin: the happiest gap first, the mislabelled pair last.
    let pairs = [("Lily", " and she was very happy and glad.", " and it was sad and dark."), ("Tom", " and he was happy.", " and it was a day."),
        ("Ben", " and it was sad.", " and he was happy.")];
    let text: String = pairs.iter().map(|(w, c, r)| format!("{}\n", serde_json::json!({"prompt": format!("Once upon a time, {w} went to the park"), "chosen": c, "rejected": r}))).collect();
    std::fs::write(f.dir.join("mixed.jsonl"), text).unwrap();
    let sorted = f.p("sorted.jsonl");
    let (ok, stdout, err) = f.run(&["curriculum", "--data", &f.p("mixed.jsonl"), "--judge", "sentiment", "--output", &sorted, "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let margins: Vec<f64> = v["pairs"].as_array().unwrap().iter().map(|p| p["margin"].as_f64().unwrap()).collect();
    let order: Vec<&str> = v["pairs"].as_array().unwrap().iter().map(|p| p["prompt"].as_str().unwrap().split(", ").nth(1).unwrap().split(' ').next().unwrap()).collect();
    assert_eq!(order, ["Lily", "Tom", "Ben"], "{margins:?}");
    assert!(margins[0] > margins[1] && margins[1] > 0.0 && margins[2] < 0.0, "{margins:?}");
    let written: Vec<Value> = std::fs::read_to_string(&sorted).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(written.len(), 3);
    assert!(written[2]["prompt"].as_str().unwrap().contains("Ben"));
    let dpo = f.p("dpo-in-order");
    let (ok, _, err) = f.run(&["dpo", "--data", &sorted, "--output-dir", &dpo, "--max-steps", "3", "--batch-size", "1", "--eval-fraction", "0", "--in-order"]);
    assert!(ok, "{err}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(f.dir.join("dpo-in-order/run.json")).unwrap()).unwrap();
    assert_eq!(run["train"]["in_order"], true, "{run}");
}
