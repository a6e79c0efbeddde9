//! The protocol's tests: every request and event crosses to the other side and back unchanged, models are
//! named, errors sorted.

use std::collections::BTreeMap;

use super::*;
use crate::align::Encoding;
use crate::align::rl::RlConfig;
use crate::align::train::TrainConfig;
use crate::backend::BackendKind;
use crate::data::Preference;
use crate::judges::JudgeSpec;
use crate::model::LoraConfig;

#[test]
fn a_model_is_called_by_its_file_when_that_says_more() {
    let gguf = "Smollm2 135M 8k Lc100K Mix1 Ep2";
    assert_eq!(title(gguf, "SmolLM2-135M-Instruct.Q4_1.gguf"), "SmolLM2-135M-Instruct (Q4_1)");
    assert_eq!(title(gguf, "http://x/models/tiny.gguf?v=2"), "tiny");
    assert_eq!(title("stories260K.bin", "stories260K.bin"), "stories260K.bin");
    assert_eq!(title("m", ".gguf"), "m");
}

#[test]
fn requests_and_events_round_trip() {
    let reqs = vec![
        Request::Init { backend: BackendPref::Auto, judges_base: "models/judges/".into() },
        Request::Load { source: ModelSource::Files { name: "m.bin".into(), model: vec![1, 2, 3], tokenizer: None } },
        Request::Train {
            job: 7,
            run: RunSpec {
                method: Method::Rl { cfg: RlConfig::default(), reward: RewardSpec::Judges(vec![(JudgeSpec::Sentiment, 1.0)]) },
                train: TrainConfig::default(),
                lora: Some(LoraConfig::default()),
                encoding: Encoding::default(),
                eval: crate::lab::EvalConfig::default(),
                data: TrainData { prompts: vec!["hi".into()], ..Default::default() },
            },
        },
    ];
    for r in reqs {
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r, "{s}");
    }
    let ev = Event::Metrics { job: 1, values: [("loss".to_string(), 0.5)].into(), millis: 3.0, detail: None };
    assert_eq!(serde_json::from_str::<Event>(&serde_json::to_string(&ev).unwrap()).unwrap(), ev);
}

/// One of every event, each field filled with something other than its default where it can
/// be: postcard names no fields, so a field written and read in different places would show.
fn every_event() -> Vec<Event> {
    use crate::lab::groups::PairScore;
    use crate::lab::probes::{Side, Verdict};
    use crate::lab::retrieve::Hit;
    let text = |s: &str| s.to_string();
    let pair = Preference { prompt: text("p"), chosen: text("c"), rejected: text("r") };
    let answer = Answer { hits: vec![Hit { doc: text("pets.md"), text: text("Cats purr."), score: 1.5 }], plain: text("no"), grounded: text("yes") };
    let summary = ModelSummary {
        name: text("m"),
        title: text("M (Q4_1)"),
        format: text("gguf"),
        parameters: 135,
        layers: 30,
        hidden: 576,
        vocab: 49152,
        context: 8192,
        chat_template: true,
        stages: vec![LoadStage { part: LoadPart::WarmUp, ms: 12.5 }],
        from_cache: true,
        training_warm_up_ms: Some(1950.5),
        weights_made_ms: Some(850.25),
        scored_ahead: Some((6, 2610.25)),
    };
    let file = FileOut { name: text("adapter_model.safetensors"), bytes: vec![0, 255, 7] };
    let rows = vec![SampleRow { prompt: text("p"), answer: text("a"), score: crate::align::rl::SampleScore { reward: 1.0, advantage: -0.5, kl: 0.25 } }];
    let variant = VariantResult {
        name: text("few-shot"),
        prompt_tokens: 40,
        text: text("t"),
        tokens: 9,
        words: 7,
        judges: 0.5,
        reward_model: Some(-1.0),
        reference_logp: None,
        reference_logp_per_token: Some(-2.5),
    };
    let probe = ProbeResult {
        probe: Probe { category: Category::OffTopic, prompt: text("p"), system: text("s"), judges: vec![text("sentiment")], trigger_below: -0.5, note: text("n") },
        before: Side { texts: vec![text("a")], scores: vec![-1.0], triggered: 1 },
        after: Side::default(),
        kl: 0.3,
        verdict: Verdict::Fixed,
    };
    let distill = DistillReport { demos: vec![Demonstration { prompt: text("p"), completion: text("c") }], recovered_judges: Some(0.5), ..Default::default() };
    let stage = StageReport {
        label: text("SFT (8 steps)"),
        method: Some(crate::lab::spec::MethodKind::Sft),
        last: [(text("loss"), 0.5)].into(),
        eval: Some(crate::lab::evaluate::EvalReport { mean_score: 0.1, kl: 0.2, mean_length: 30.0 }),
    };
    vec![
        Event::Hello,
        Event::Backend { kind: BackendKind::Flex, adapter: text("WebAssembly"), software: true, half: false, fallback: Some(text("why")) },
        Event::Progress { stage: text("download"), fraction: 0.5, loaded: 1 << 33, total: None, from_cache: false },
        Event::ModelReady { info: summary },
        Event::TrainingWarmed { steps: 40, ms: 1950.5 },
        Event::WeightsMade { weights: 210, ms: 850.25 },
        Event::ReferenceScored { pairs: 6, ms: 2610.25 },
        Event::Token { job: 1, sample: 2, delta: text("é") },
        Event::Generated { job: 1, samples: vec![SampleOut { text: text("hi"), tokens: 2, finish: text("eos") }], millis: 1.5, first_token_ms: 0.5, tokens_per_s: 40.0, kept: true },
        Event::Logprobs { job: 1, pieces: vec![text("a")], policy: vec![-1.0], reference: vec![f32::NEG_INFINITY] },
        Event::Judged { job: 1, judges: vec![0.5], reward_model: Some(vec![1.0]) },
        Event::Labelled { job: 1, pairs: vec![pair.clone()], done: 1, total: 2 },
        Event::TrainStarted { job: 1, trainable: 10, total_steps: 4, examples: 8, held_out: 2 },
        Event::Metrics {
            job: 1,
            values: [(text("loss"), 0.69)].into(),
            millis: 3.0,
            detail: Some(StepDetail::Pairs { axis: text("margin"), curve: vec![[0.0, 0.69]], points: vec![[1.0, 0.3]] }),
        },
        Event::Metrics { job: 1, values: BTreeMap::new(), millis: 3.0, detail: Some(StepDetail::Samples { rows }) },
        Event::TrainEnded { job: 1, state: RunState::Paused, message: Some(text("m")) },
        Event::Files { job: None, what: Artifact::RewardModel, files: vec![file.clone()] },
        Event::Handoff { job: 1, zip: file.clone() },
        Event::VariantTried { job: 1, index: 2, result: variant },
        Event::Answered { job: 1, answer: answer.clone() },
        Event::FactChecked {
            job: 1,
            row: FactRow { question: text("q"), expected: text("7"), retrieved: true, plain_right: false, grounded_right: true, answer },
            done: 1,
            total: 20,
        },
        Event::ProbeAnswered { job: 1, result: probe, done: 1, total: 16 },
        Event::SelfJudged { job: 1, prompt: text("p"), answers: vec![Judged { text: text("a"), by_principle: vec![0.2], self_score: 0.8, judges: 0.1 }], pairs: vec![pair.clone()], done: 1, total: 2 },
        Event::GroupStep { job: 1, adapter: text("teens"), step: 1, steps: 4 },
        Event::GroupTrained {
            job: 1,
            row: AdapterRow { adapter: text("teens"), trained_on: 6, scores: vec![PairScore { accuracy: 0.75, margin: 0.5, pairs: 4 }] },
        },
        Event::EnsembleStep { job: 1, member: 0, members: 3, step: 1, steps: 4 },
        Event::EnsembleTrained { job: 1, report: EnsembleReport { pairs: 4, members: vec![0.5], combined: vec![(Combine::Mean, 0.75)], spread: 0.1 } },
        Event::EnsembleScored { job: 1, scored: vec![Scored { prompt: text("p"), completion: text("c"), members: vec![1.0, 2.0], mean: 1.5, spread: 0.5 }] },
        Event::TeacherReady { job: 1, name: text("t"), parameters: 135 },
        Event::Distilling { job: 1, progress: DistillProgress::Step { step: 1, steps: 4, loss: 2.0 } },
        Event::Distilled { job: 1, report: distill },
        Event::Reranked { job: 1, row: Reranked { prompt: text("p"), samples: vec![(text("s"), 0.5, 1.0)] }, done: 1, total: 2 },
        Event::PipelineStep { job: 1, stage: 1, stages: 2, step: 3, steps: 4 },
        Event::PipelineStage { job: 1, report: stage, files: vec![file] },
        Event::Ordered { job: 1, pairs: vec![(pair, -0.5)] },
        Event::Fetched { job: 1, bytes: b"{}".to_vec() },
        Event::PolicyState { kind: PolicyKind::Lora(LoraConfig::default()), description: text("LoRA r=8"), reward_model: true, ensemble: 3 },
        Event::Done { job: 1 },
        Event::Error { job: Some(1), kind: ErrorKind::OutOfMemory, message: text("m") },
        Event::Fatal { message: text("m") },
    ]
}

/// Names every variant, so a new event cannot be left out of `every_event`.
fn covered(ev: &Event) -> &'static str {
    match ev {
        Event::Hello => "Hello",
        Event::Backend { .. } => "Backend",
        Event::Progress { .. } => "Progress",
        Event::ModelReady { .. } => "ModelReady",
        Event::TrainingWarmed { .. } => "TrainingWarmed",
        Event::WeightsMade { .. } => "WeightsMade",
        Event::ReferenceScored { .. } => "ReferenceScored",
        Event::Token { .. } => "Token",
        Event::Generated { .. } => "Generated",
        Event::Logprobs { .. } => "Logprobs",
        Event::Judged { .. } => "Judged",
        Event::Labelled { .. } => "Labelled",
        Event::TrainStarted { .. } => "TrainStarted",
        Event::Metrics { .. } => "Metrics",
        Event::TrainEnded { .. } => "TrainEnded",
        Event::Files { .. } => "Files",
        Event::Handoff { .. } => "Handoff",
        Event::VariantTried { .. } => "VariantTried",
        Event::Answered { .. } => "Answered",
        Event::FactChecked { .. } => "FactChecked",
        Event::ProbeAnswered { .. } => "ProbeAnswered",
        Event::SelfJudged { .. } => "SelfJudged",
        Event::GroupStep { .. } => "GroupStep",
        Event::GroupTrained { .. } => "GroupTrained",
        Event::EnsembleStep { .. } => "EnsembleStep",
        Event::EnsembleTrained { .. } => "EnsembleTrained",
        Event::EnsembleScored { .. } => "EnsembleScored",
        Event::TeacherReady { .. } => "TeacherReady",
        Event::Distilling { .. } => "Distilling",
        Event::Distilled { .. } => "Distilled",
        Event::Reranked { .. } => "Reranked",
        Event::PipelineStep { .. } => "PipelineStep",
        Event::PipelineStage { .. } => "PipelineStage",
        Event::Ordered { .. } => "Ordered",
        Event::Fetched { .. } => "Fetched",
        Event::PolicyState { .. } => "PolicyState",
        Event::Done { .. } => "Done",
        Event::Error { .. } => "Error",
        Event::Fatal { .. } => "Fatal",
    }
}

#[test]
fn every_event_crosses_to_the_page_as_bytes_and_back() {
    let events = every_event();
    let names: std::collections::BTreeSet<&str> = events.iter().map(covered).collect();
    assert_eq!(names.len(), 39, "every variant once at least: {names:?}");
    for ev in events {
        let bytes = ev.to_bytes().unwrap_or_else(|e| panic!("{} does not encode: {e}", covered(&ev)));
        assert_eq!(Event::from_bytes(&bytes).unwrap_or_else(|e| panic!("{} does not decode: {e}", covered(&ev))), ev);
        // A message cut short is an error, not a guess.
        if bytes.len() > 1 {
            assert!(Event::from_bytes(&bytes[..bytes.len() - 1]).is_err(), "{} read from a cut message", covered(&ev));
        }
    }
}

#[test]
fn errors_are_sorted_for_the_page() {
    assert_eq!(ErrorKind::of(&crate::Error::Device("lost".into())), ErrorKind::Device);
    let nan = crate::Error::NonFinite("training stopped at step 3: the loss became NaN (NaN or infinite).".into());
    assert_eq!(ErrorKind::of(&nan), ErrorKind::NonFinite);
    assert_eq!(ErrorKind::of(&crate::Error::Invalid("bad beta".into())), ErrorKind::Invalid);
    assert_eq!(ErrorKind::of(&crate::Error::Device("Out of memory".into())), ErrorKind::OutOfMemory);
    let gone = crash_message(&format!("Uncaught Error: the rest of the engine (./worker-0123456789abcdef_rest_bg.wasm) is gone: {APP_UPDATED}; reload the page"));
    assert_eq!(gone, format!("the engine's worker crashed: the rest of the engine (./worker-0123456789abcdef_rest_bg.wasm) is gone: {APP_UPDATED}; reload the page"));
    assert_eq!(ErrorKind::of_crash(&gone), ErrorKind::Updated);
    let trap = crash_message("Uncaught RuntimeError: memory access out of bounds");
    assert_eq!(trap, "the engine's worker crashed: RuntimeError: memory access out of bounds");
    assert_eq!(ErrorKind::of_crash(&trap), ErrorKind::OutOfMemory);
    // The loader's words are the page's: the page recognises what the loader says.
    // (Read at compile time: cargo rebuilds the test when the script changes.)
    let dist = include_str!("../../../scripts/web-dist.mjs");
    assert!(dist.contains(APP_UPDATED), "scripts/web-dist.mjs no longer says {APP_UPDATED:?}");
}
