//! The lab below both front ends: the same run through the CLI and through the worker's message
//! handling (the router, compiled natively) gives the same numbers, step for step; and the
//! worker keeps, exports and re-imports what training made. On llama2.c's stories260K.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use alignlab::backend::{BackendKind, block_on};
use alignlab::data::{self, Demonstration, Preference, PromptOnly, Unpaired};
use alignlab::lab::{RunSpec, TrainData};
use alignlab::worker::protocol::*;
use alignlab::worker::router::{Host, OpenedDevice, Router};
use burn::tensor::Device;
use crate::common::{self, alignlab, stories260k};

/// Training draws dropout from the backend's one seeded generator: one test at a time, so a run
/// in another thread does not draw from it in between.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The worker's host, natively: events into a list, files from disk, Flex on the CPU. With
/// `tiers_up`, a host like the threaded page's: its code tiers up, and it has a clock and sleeps.
struct TestHost {
    events: Rc<RefCell<Vec<Event>>>,
    tiers_up: bool,
}

static START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

impl Host for TestHost {
    fn post(&self, ev: Event) {
        self.events.borrow_mut().push(ev);
    }
    async fn fetch(&self, url: &str, _stage: Option<&str>) -> alignlab::Result<(Vec<u8>, bool)> {
        std::fs::read(url).map(|b| (b, false)).map_err(|e| alignlab::Error::io(url, e))
    }
    async fn open_device(&self, _pref: BackendPref) -> OpenedDevice {
        OpenedDevice { device: Device::flex(), kind: BackendKind::Flex, adapter: "test".into(), software: true, fallback: None, max_binding: None }
    }
    async fn sleep(&self, ms: u32) {
        if self.tiers_up {
            std::thread::sleep(std::time::Duration::from_millis(ms.into()));
        }
    }
    fn now_ms(&self) -> f64 {
        if self.tiers_up { START.elapsed().as_secs_f64() * 1000.0 } else { 0.0 }
    }
    fn tiers_up(&self) -> bool {
        self.tiers_up
    }
}

struct Worker {
    router: Rc<Router<TestHost>>,
    events: Rc<RefCell<Vec<Event>>>,
}

impl Worker {
    fn new(model: &Path, tok: &Path) -> Self {
        Self::on_host(model, tok, false).0
    }
    /// A worker whose host says its code tiers up (the threaded page), and the load's events.
    fn on_host(model: &Path, tok: &Path, tiers_up: bool) -> (Self, Vec<Event>) {
        let events = Rc::new(RefCell::new(Vec::new()));
        let w = Self { router: Router::new(TestHost { events: events.clone(), tiers_up }), events };
        w.send(Request::Init { backend: BackendPref::Cpu, judges_base: "models/judges/".into() });
        let loaded = w.load(model, tok);
        (w, loaded)
    }
    fn load(&self, model: &Path, tok: &Path) -> Vec<Event> {
        let (model, tokenizer) = (std::fs::read(model).unwrap(), std::fs::read(tok).unwrap());
        self.send(Request::Load { source: ModelSource::Files { name: "stories260K.bin".into(), model, tokenizer: Some(tokenizer.into()) } });
        let events = self.take();
        assert!(events.iter().any(|e| matches!(e, Event::ModelReady { .. })), "the model loads");
        events
    }
    fn send(&self, req: Request) {
        block_on(self.router.clone().handle(req));
    }
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.borrow_mut())
    }
    /// Trains `run` to its end: each step's metrics.
    fn train(&self, run: &RunSpec) -> Vec<BTreeMap<String, f64>> {
        self.send(Request::Train { job: 1, run: run.clone() });
        let events = self.take();
        assert!(errors(&events).is_empty(), "{:?}", errors(&events));
        steps_of(&events)
    }
}

fn errors(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| if let Event::Error { message, .. } = e { Some(message.clone()) } else { None }).collect()
}

/// Per-step metrics without the wall-clock ones.
fn steps_of(events: &[Event]) -> Vec<BTreeMap<String, f64>> {
    events
        .iter()
        .filter_map(|e| if let Event::Metrics { values, .. } = e { Some(values.clone()) } else { None })
        .map(|mut m| {
            m.remove("step_seconds");
            m
        })
        .collect()
}

/// Equal keys and values, step for step; values to the last digit JSON keeps (serde_json's
/// default float parsing may differ in the final bit).
fn same_metrics(page: &[BTreeMap<String, f64>], cli: &[BTreeMap<String, f64>], method: &str) {
    assert_eq!(page.len(), cli.len(), "{method}: as many steps");
    for (i, (p, c)) in page.iter().zip(cli).enumerate() {
        assert_eq!(p.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>(), "{method} step {}: the same metrics", i + 1);
        for (k, v) in p {
            let w = c[k];
            assert!((v - w).abs() <= 1e-12 * v.abs().max(1.0), "{method} step {}: {k} is {v} in the worker, {w} in the CLI", i + 1);
        }
    }
}

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) {
    std::fs::write(path, data::export(rows)).unwrap();
}

#[test]
fn the_cli_and_the_worker_train_the_same_run_to_the_same_numbers() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let dir = common::temp_dir("lab-same-run");
    let who = ["Lily", "Tom", "Ben", "Sue", "Max", "Anna"];
    let prompt = |w: &str| format!("Once upon a time, {w} went to the park");
    let pairs: Vec<Preference> = who.iter().map(|w| Preference { prompt: prompt(w), chosen: " and she was very happy.".into(), rejected: " and it was sad and dark.".into() }).collect();
    let unpaired: Vec<Unpaired> = who
        .iter()
        .flat_map(|w| [(" and she was very happy.", true), (" and it was sad and dark.", false)].map(|(c, label)| Unpaired { prompt: prompt(w), completion: c.into(), label }))
        .collect();
    let demos: Vec<Demonstration> = who.iter().map(|w| Demonstration { prompt: prompt(w), completion: format!(" and {w} smiled.") }).collect();
    let prompts: Vec<PromptOnly> = who.iter().map(|w| PromptOnly { prompt: format!("{w} had a") }).collect();
    write_jsonl(&dir.join("pairs.jsonl"), &pairs);
    write_jsonl(&dir.join("unpaired.jsonl"), &unpaired);
    write_jsonl(&dir.join("demos.jsonl"), &demos);
    write_jsonl(&dir.join("prompts.jsonl"), &prompts);
    let data = TrainData { pairs, unpaired, demos, prompts: prompts.into_iter().map(|p| p.prompt).collect() };

    let worker = Worker::new(&model, &tok);
    let common_args = ["--max-steps", "3", "--learning-rate", "1e-2", "--batch-size", "2", "--lora-r", "4", "--eval-steps", "2"];
    let methods: [(&str, &str, &[&str]); 5] = [
        ("dpo", "pairs.jsonl", &["--beta", "0.2"]),
        ("kto", "unpaired.jsonl", &[]),
        ("sft", "demos.jsonl", &[]),
        ("reward", "pairs.jsonl", &[]),
        ("rl", "prompts.jsonl", &["--judge", "length=4", "--judge", "include=happy+ball", "--num-generations", "3", "--max-new-tokens", "6"]),
    ];
    for (job, (method, file, extra)) in methods.into_iter().enumerate() {
        let out = dir.join(method);
        let data_path = dir.join(file);
        let mut args = vec![method, "--data", data_path.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--model", model.to_str().unwrap(), "--tokenizer", tok.to_str().unwrap()];
        args.extend(common_args);
        args.extend(extra);
        let (ok, _, err) = alignlab(&args);
        assert!(ok, "{method}: {err}");
        let cli: Vec<BTreeMap<String, f64>> =
            std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

        // The spec the CLI ran (run.json has no data), sent with the same data to the worker.
        let spec: RunSpec = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        // The page keeps training the policy it has; the CLI starts from the base: start both there.
        worker.send(Request::ResetAdapter);
        worker.take();
        worker.send(Request::Train { job: job as u32, run: RunSpec { data: data.clone(), ..spec } });
        let events = worker.take();
        assert!(errors(&events).is_empty(), "{method}: {:?}", errors(&events));
        let page = steps_of(&events);
        assert_eq!(cli.len(), 3, "{method}: three steps in the CLI's log");
        same_metrics(&page, &cli, method);
        assert!(cli[0].contains_key("loss") || cli[0].contains_key("reward"), "{method}: {:?}", cli[0]);
        if method != "rl" {
            assert!(cli[1].keys().any(|k| k.starts_with("eval/")), "{method}: held-out metrics at step 2: {:?}", cli[1]);
        }
    }
}

const PARK: &str = "Once upon a time, Lily went to the park";

/// `n` pairs that prefer a happy ending to a sad one, on prompts that differ by a number.
fn park_pairs(n: usize) -> Vec<Preference> {
    (0..n).map(|i| Preference { prompt: format!("{PARK} {i}"), chosen: " and she was very happy.".into(), rejected: " and it was sad and dark.".into() }).collect()
}

#[test]
fn the_worker_keeps_exports_and_reimports_a_reward_model() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let worker = Worker::new(&model, &tok);
    let prompt = PARK;
    let pairs = park_pairs(5);
    let mut settings = alignlab::lab::RunSettings::default();
    settings.method = alignlab::lab::MethodKind::Reward;
    settings.train.max_steps = 6;
    settings.train.learning_rate = 1e-2;
    settings.lora.r = 4;
    let spec = settings.spec(vec![], alignlab::align::Encoding::default(), TrainData { pairs, ..Default::default() });
    worker.send(Request::Train { job: 1, run: spec });
    let events = worker.take();
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let steps = steps_of(&events);
    assert_eq!(steps.len(), 6);
    assert!(steps[5].contains_key("eval/accuracy"), "the held-out accuracy is reported: {:?}", steps[5]);
    // The finished run hands the page its reward model to keep.
    let kept = events.iter().find_map(|e| match e {
        Event::Files { job: None, what: Artifact::RewardModel, files } => Some(files.clone()),
        _ => None,
    });
    let kept = kept.expect("the reward model is sent to the page to keep");
    assert_eq!(kept.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["adapter_config.json", "adapter_model.safetensors"]);
    assert!(events.iter().any(|e| matches!(e, Event::PolicyState { reward_model: true, .. })));

    let judge = |w: &Worker| {
        let texts = vec![" and she was very happy.".to_string(), " and it was sad and dark.".to_string()];
        w.send(Request::Judge { job: 9, prompt: prompt.into(), encoding: Default::default(), completions: texts, judges: vec![] });
        w.take().into_iter().find_map(|e| if let Event::Judged { reward_model, .. } = e { reward_model } else { None })
    };
    let before = judge(&worker).expect("the trained reward model scores");
    assert!(before[0] > before[1], "it prefers the chosen style: {before:?}");

    // A fresh worker (a reload) gets it back from the kept files and scores the same.
    let fresh = Worker::new(&model, &tok);
    assert!(judge(&fresh).is_none(), "a fresh worker has no reward model");
    let file = |n: &str| kept.iter().find(|f| f.name.ends_with(n)).unwrap().bytes.clone();
    fresh.send(Request::Import { what: Artifact::RewardModel, config_json: String::from_utf8(file(".json")).unwrap(), safetensors: file(".safetensors"), from: Default::default() });
    let after = judge(&fresh).expect("the imported reward model scores");
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-5, "{before:?} vs {after:?}");
    }
}

#[test]
fn the_worker_keeps_a_full_fine_tune_and_a_fresh_worker_restores_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let worker = Worker::new(&model, &tok);
    let prompt = PARK;
    let pairs = park_pairs(4);
    let mut settings = alignlab::lab::RunSettings::default();
    settings.method = alignlab::lab::MethodKind::Dpo;
    settings.full_finetune = true;
    settings.train.max_steps = 3;
    settings.train.learning_rate = 1e-3;
    let spec = settings.spec(vec![], alignlab::align::Encoding::default(), TrainData { pairs, ..Default::default() });
    worker.send(Request::Train { job: 1, run: spec });
    let events = worker.take();
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    // Every weight goes to the page to keep, as an HF checkpoint.
    let kept = events.iter().rev().find_map(|e| match e {
        Event::Files { job: None, what: Artifact::Merged, files } => Some(files.clone()),
        _ => None,
    });
    let kept = kept.expect("the fully fine-tuned weights are sent to the page to keep");
    let file = |n: &str| kept.iter().find(|f| f.name == n).unwrap_or_else(|| panic!("{n} kept")).bytes.clone();

    let logprobs = |w: &Worker| {
        w.send(Request::Logprobs { job: 9, prompt: prompt.into(), encoding: Default::default(), completion: " and she was very happy.".into() });
        w.take().into_iter().find_map(|e| if let Event::Logprobs { policy, reference, .. } = e { Some((policy, reference)) } else { None }).unwrap()
    };
    let (trained, base) = logprobs(&worker);
    assert!(common::max_diff(&trained, &base) > 1e-3, "training moved the policy: {trained:?} vs {base:?}");

    // A fresh worker (a reload) gets the same policy back from the kept files.
    let fresh = Worker::new(&model, &tok);
    let config_json = String::from_utf8(file("config.json")).unwrap();
    fresh.send(Request::Import { what: Artifact::Merged, config_json: config_json.clone(), safetensors: file("model.safetensors"), from: AdapterFrom::Kept });
    let restored = fresh.take();
    assert!(errors(&restored).is_empty(), "{:?}", errors(&restored));
    assert!(restored.iter().any(|e| matches!(e, Event::PolicyState { kind: PolicyKind::Full, description, .. } if description.starts_with("fully fine-tuned weights"))), "{restored:?}");
    let (again, base_again) = logprobs(&fresh);
    assert!(common::max_diff(&again, &trained) < 1e-5, "{again:?} vs {trained:?}");
    assert!(common::max_diff(&base_again, &base) < 1e-6, "the reference is still the loaded model");

    // Weights of another shape are refused with a clear error, and the policy stays as it was.
    let mut wrong = file("model.safetensors");
    wrong.truncate(wrong.len() / 2);
    fresh.send(Request::Import { what: Artifact::Merged, config_json, safetensors: wrong, from: AdapterFrom::Kept });
    assert!(!errors(&fresh.take()).is_empty(), "a cut file is an error");
    assert!(common::max_diff(&logprobs(&fresh).0, &trained) < 1e-5, "the restored policy is kept");
}

#[test]
fn the_worker_fetches_a_lab_file_for_the_page_and_refuses_an_oversized_one() {
    let events = Rc::new(RefCell::new(Vec::new()));
    let router = Router::new(TestHost { events: events.clone(), tiers_up: false });
    let dir = common::temp_dir("lab-fetch");
    let (lab, big) = (dir.join("lab.json"), dir.join("big.json"));
    std::fs::write(&lab, include_bytes!("../../www/labs/lora.json")).unwrap();
    std::fs::write(&big, vec![b' '; alignlab::lab::lesson::MAX_LAB_BYTES + 1]).unwrap();
    block_on(router.clone().handle(Request::Fetch { job: 7, url: lab.to_string_lossy().into() }));
    block_on(router.clone().handle(Request::Fetch { job: 8, url: big.to_string_lossy().into() }));
    let got = std::mem::take(&mut *events.borrow_mut());
    match &got[..] {
        [Event::Fetched { job: 7, bytes }, Event::Error { job: Some(8), message, .. }] => {
            assert_eq!(bytes.as_slice(), include_bytes!("../../www/labs/lora.json"));
            assert!(message.contains("more than a lab file may hold (1 MiB)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// A pipeline is one piece of lab code under both front ends: the CLI's stages (its
/// `stages.json`, sent with the same data) run by the worker give the same table, number for number.
#[test]
fn the_cli_and_the_worker_run_the_same_pipeline_to_the_same_numbers() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let dir = common::temp_dir("lab-same-pipeline");
    let who = ["Lily", "Tom", "Ben", "Sue"];
    let prompt = |w: &str| format!("Once upon a time, {w} went to the park");
    let pairs: Vec<Preference> = who.iter().map(|w| Preference { prompt: prompt(w), chosen: " and she was very happy.".into(), rejected: " and it was sad and dark.".into() }).collect();
    let demos: Vec<Demonstration> = who.iter().map(|w| Demonstration { prompt: prompt(w), completion: format!(" and {w} smiled.") }).collect();
    let held: Vec<PromptOnly> = ["Zoe", "Leo"].iter().map(|w| PromptOnly { prompt: prompt(w) }).collect();
    write_jsonl(&dir.join("pairs.jsonl"), &pairs);
    write_jsonl(&dir.join("demos.jsonl"), &demos);
    write_jsonl(&dir.join("held.jsonl"), &held);
    let out = dir.join("pipe");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (sft, dpo) = (format!("sft={},steps=3,lr=1e-2", p("demos.jsonl")), format!("dpo={},steps=2,beta=0.2", p("pairs.jsonl")));
    let (ok, stdout, err) = alignlab(&["pipeline", "--stage", &sft, "--stage", &dpo, "--eval-prompts", &p("held.jsonl"), "--judge", "include=happy+smiled",
        "--eval-samples", "2", "--eval-max-new-tokens", "6", "--lora-r", "4", "--eval-fraction", "0", "--output-dir", out.to_str().unwrap(),
        "--model", model.to_str().unwrap(), "--tokenizer", tok.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let cli: Vec<alignlab::lab::pipeline::StageReport> = serde_json::from_value(serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()["stages"].clone()).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("stages.json")).unwrap()).unwrap();
    let specs: Vec<RunSpec> = serde_json::from_value(saved["stages"].clone()).unwrap();
    let sampling = serde_json::from_value(saved["sampling"].clone()).unwrap();
    let data = TrainData { pairs, demos, ..Default::default() };

    let worker = Worker::new(&model, &tok);
    let stages = specs.into_iter().map(|s| RunSpec { data: data.clone(), ..s }).collect();
    worker.send(Request::Pipeline {
        job: 1,
        stages,
        eval_prompts: held.into_iter().map(|h| h.prompt).collect(),
        encoding: alignlab::align::Encoding::default(),
        sampling,
        judges: vec![alignlab::judges::JudgeSpec::parse_weighted("include=happy+smiled").unwrap()],
    });
    let events = worker.take();
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let page: Vec<_> = events.iter().filter_map(|e| if let Event::PipelineStage { report, .. } = e { Some(report.clone()) } else { None }).collect();
    assert_eq!(page.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["base model", "SFT (3 steps)", "DPO (2 steps)"]);
    assert_eq!(page.len(), cli.len());
    for (w, c) in page.iter().zip(&cli) {
        assert_eq!(w.label, c.label);
        let (we, ce) = (w.eval.as_ref().unwrap(), c.eval.as_ref().unwrap());
        for (name, a, b) in [("score", we.mean_score, ce.mean_score), ("kl", we.kl, ce.kl), ("length", we.mean_length, ce.mean_length)] {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{}: {name} is {a} in the worker, {b} in the CLI", w.label);
        }
        same_metrics(std::slice::from_ref(&w.last), std::slice::from_ref(&c.last), &w.label);
    }
    assert!(cli[1].eval.as_ref().unwrap().kl > 0.0, "SFT moved the policy");
    let snapshots = events.iter().filter(|e| matches!(e, Event::PipelineStage { files, .. } if files.iter().any(|f| f.name == "adapter_model.safetensors"))).count();
    assert_eq!(snapshots, 2, "each stage's adapter reaches the page");
}

/// After Save ranking the page tells the worker what Train would start (`ScoreReference`); in the
/// idle time before Train the worker scores the reference on the pairs the session lacks. The run
/// then gives the numbers of a run in a worker that scored nothing ahead, bit for bit, and so does
/// a second run, whose kept values include the first run's first step's own.
#[test]
fn the_reference_scored_ahead_gives_the_runs_they_would_have_had() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let scored = |events: &[Event]| events.iter().find_map(|e| if let Event::ReferenceScored { pairs, .. } = e { Some(*pairs) } else { None });
    let mut settings = alignlab::lab::RunSettings::default();
    settings.train.max_steps = 6;
    let first = settings.spec(vec![], alignlab::align::Encoding::default(), TrainData { pairs: park_pairs(7), ..Default::default() });
    settings.dpo.beta = 0.3;
    let second = settings.spec(vec![], alignlab::align::Encoding::default(), TrainData { pairs: park_pairs(7), ..Default::default() });

    // A worker with a clock (the page's): the scoring waits for a quiet second.
    let (ahead, _) = Worker::on_host(&model, &tok, true);
    ahead.send(Request::ScoreReference { run: first.clone() });
    let events = ahead.take();
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    assert_eq!(scored(&events), Some(7), "every pair, the held-out one too: {events:?}");
    ahead.send(Request::ScoreReference { run: first.clone() });
    assert_eq!(scored(&ahead.take()), None, "nothing is scored twice");

    let plain = Worker::new(&model, &tok);
    for (run, which) in [(first, "the first run"), (second, "a second run")] {
        let [a, b] = [&plain, &ahead].map(|w| w.train(&run));
        assert_eq!(a.len(), 6);
        assert!(a[5]["loss"] < a[0]["loss"], "{which} learns: {a:?}");
        assert!(a[5].contains_key("eval/loss"), "the held-out pair is scored: {:?}", a[5]);
        same_metrics(&b, &a, which);
    }
}

/// On the CPU a quantized model is ready before its f32 weights are made (they wait as the file's
/// blocks): the worker makes them in the background once the model is ready, and says so. An
/// answer and a training step then work as they always did.
#[test]
fn a_quantized_models_f32_weights_are_made_in_the_background_once_it_is_ready() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::temp_dir("lab-deferred");
    let c = common::tiny_config(true);
    let quantized: Vec<String> = (0..c.num_hidden_layers)
        .flat_map(|i| ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj"].map(|n| format!("model.layers.{i}.{n}.weight")))
        .chain(["model.embed_tokens.weight".to_string()])
        .collect();
    let types: Vec<(&str, common::GgmlType)> = quantized.iter().map(|n| (n.as_str(), common::GgmlType::Q8_0)).collect();
    let path = dir.join("tiny.gguf");
    common::write_tiny_gguf(&path, &c, &common::random_weights(&c, 4), &types);

    let events = Rc::new(RefCell::new(Vec::new()));
    let w = Worker { router: Router::new(TestHost { events: events.clone(), tiers_up: false }), events };
    w.send(Request::Init { backend: BackendPref::Cpu, judges_base: "models/judges/".into() });
    w.send(Request::Load { source: ModelSource::Files { name: "tiny.gguf".into(), model: std::fs::read(&path).unwrap(), tokenizer: None } });
    let loaded = w.take();
    assert!(errors(&loaded).is_empty(), "{:?}", errors(&loaded));
    let ready = loaded.iter().position(|e| matches!(e, Event::ModelReady { .. })).expect("the model loads");
    let made = loaded.iter().position(|e| matches!(e, Event::WeightsMade { .. })).expect("the weights are made and it says so");
    assert!(ready < made, "the model is ready first");
    assert!(matches!(loaded[made], Event::WeightsMade { weights: 13, .. }), "the embedding, and q, k, v, o, gate and up of both layers: {:?}", loaded[made]);

    w.send(Request::Generate { job: 1, prompt: "t3 t5".into(), encoding: Default::default(), sampling: alignlab::generate::SamplingConfig::greedy(6), which: Which::Policy });
    let answered = w.take();
    assert!(answered.iter().any(|e| matches!(e, Event::Generated { .. })), "{:?}", errors(&answered));
    let mut settings = alignlab::lab::RunSettings::default();
    settings.train.max_steps = 3;
    let pairs = vec![Preference { prompt: "t3 t5".into(), chosen: " t7 t9".into(), rejected: " t2 t2".into() }];
    let data = TrainData { pairs, ..Default::default() };
    let steps = w.train(&settings.spec(vec![], alignlab::align::Encoding::default(), data.clone()));
    assert_eq!(steps.len(), 3);
    assert!(steps[2]["loss"] < steps[0]["loss"], "the run learns: {steps:?}");
    // A full fine-tune trains the weights that waited: frozen while they waited (answers froze
    // copies of them), tracked for this run.
    w.send(Request::ResetAdapter);
    let full = alignlab::lab::RunSpec { lora: None, ..settings.spec(vec![], alignlab::align::Encoding::default(), data) };
    let steps = w.train(&full);
    assert_eq!(steps.len(), 3);
    assert!(steps[2]["loss"] < steps[0]["loss"] - 0.01, "every weight learns: {steps:?}");
}

/// Where V8 optimizes wasm only once it has run hot (the threaded page), the worker trains a toy of
/// the loaded model in the background after the load, once per worker. The student's model is
/// untouched: the same run trains to the same numbers as in a worker that never warmed up.
#[test]
fn the_training_warm_up_trains_a_toy_and_leaves_the_students_model_alone() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((model, tok)) = stories260k() else { return };
    let warmed_steps = |events: &[Event]| events.iter().find_map(|e| if let Event::TrainingWarmed { steps, .. } = e { Some(*steps) } else { None });
    let (plain, loaded) = Worker::on_host(&model, &tok, false);
    assert_eq!(warmed_steps(&loaded), None, "no warm-up where the code does not tier up");
    let (warmed, loaded) = Worker::on_host(&model, &tok, true);
    assert!(errors(&loaded).is_empty(), "{:?}", errors(&loaded));
    let ready = loaded.iter().position(|e| matches!(e, Event::ModelReady { .. })).unwrap();
    let done = loaded.iter().position(|e| matches!(e, Event::TrainingWarmed { .. })).expect("the warm-up ends and says so");
    assert!(ready < done, "the model is ready before the warm-up starts");
    assert!(warmed_steps(&loaded).unwrap() >= 20, "{:?}", warmed_steps(&loaded));
    assert_eq!(warmed_steps(&warmed.load(&model, &tok)), None, "once per worker");

    let mut settings = alignlab::lab::RunSettings::default();
    settings.train.max_steps = 4;
    let spec = settings.spec(vec![], alignlab::align::Encoding::default(), TrainData { pairs: park_pairs(6), ..Default::default() });
    let [a, b] = [&plain, &warmed].map(|w| w.train(&spec));
    assert_eq!(a.len(), 4);
    assert!(a[3]["loss"] < a[0]["loss"], "the run learns: {a:?}");
    same_metrics(&b, &a, "after the warm-up");
}
