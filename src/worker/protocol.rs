//! The typed messages between the page and the engine's Web Worker, plain serde types tested
//! natively. Requests cross `postMessage` as structured clones (bytes as `Uint8Array`); events
//! as postcard's bytes ([`Event::to_bytes`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::align::Encoding;
use crate::backend::BackendKind;
use crate::data::{Demonstration, Preference};
use crate::generate::SamplingConfig;
use crate::judges::JudgeSpec;
pub use crate::lab::constitution::{Constitution, Judged};
pub use crate::lab::distill::{Progress as DistillProgress, Report as DistillReport, RerankSummary, Reranked};
pub use crate::lab::ensemble::{Combine, Report as EnsembleReport, Resample, Scored};
pub use crate::lab::curriculum::Order;
pub use crate::lab::detail::{SampleRow, StepDetail};
pub use crate::lab::pipeline::StageReport;
pub use crate::lab::groups::{AdapterRow, Group, PairScore};
pub use crate::lab::probes::{Category, Probe, ProbeResult};
pub use crate::lab::prompting::{Shot, Variant, VariantResult};
pub use crate::lab::retrieve::{Answer, Document, Fact, FactRow, Hit};
pub use crate::lab::{AdapterFrom, Method, PolicyKind, RewardSpec, RunSpec, TrainData, Which};

/// Names one request's job, so its streamed events find their way back to the right panel.
pub type JobId = u32;

/// The largest file the page downloads: wasm32 has a 4 GiB address space, and the model is
/// dequantized beside its bytes. The worker enforces it; the page hands it to the worker's loader
/// (`&max=`), which starts a download early only when it is known to fit.
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// Which device the worker should open (`?backend=` on the page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendPref {
    /// WebGPU when the browser gives an adapter, else the CPU.
    #[default]
    Auto,
    /// WebAssembly on the CPU (burn's Flex backend).
    Cpu,
    /// WebGPU or an error saying why not.
    Webgpu,
}

impl BackendPref {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            // NdArray is native only (burn deprecates it; Flex is faster): the browser's CPU is Flex.
            "cpu" | "flex" | "wasm" | "ndarray" => Some(Self::Cpu),
            "webgpu" | "gpu" | "wgpu" => Some(Self::Webgpu),
            _ => None,
        }
    }
}

/// Where the model comes from: a URL (fetched once, then served from the browser's cache) or
/// files the user dropped on the page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModelSource {
    Url { model: String, tokenizer: Option<String> },
    Files {
        name: String,
        #[serde(with = "serde_bytes")]
        model: Vec<u8>,
        tokenizer: Option<serde_bytes::ByteBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunControl {
    Pause,
    Resume,
    Stop,
}

/// Files as they cross to the page (an adapter, a reward model, a checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileOut {
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// What the page can export (and keep in the browser).
impl ModelSource {
    /// The model file's name: the URL's last segment, or the picked file's name.
    pub fn file_name(&self) -> String {
        match self {
            Self::Url { model, .. } => model.split(['?', '#']).next().unwrap_or("").rsplit('/').next().unwrap_or("").to_string(),
            Self::Files { name, .. } => name.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Artifact {
    /// The policy's LoRA adapter, PEFT layout.
    Adapter,
    /// The reward model, PEFT layout (SEQ_CLS with its score head).
    RewardModel,
    /// The policy with its adapter merged in, or a full fine-tune's weights, as an HF checkpoint.
    /// Imported back only as the page's kept copy of a full fine-tune.
    Merged,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Init { backend: BackendPref, judges_base: String },
    Load { source: ModelSource },
    Generate { job: JobId, prompt: String, encoding: Encoding, sampling: SamplingConfig, which: Which },
    /// Per-token log-probabilities of `completion` under the policy and the reference (the heatmap).
    Logprobs { job: JobId, prompt: String, encoding: Encoding, completion: String },
    /// Scores completions with judges and, when there is one, the reward model.
    Judge { job: JobId, prompt: String, encoding: Encoding, completions: Vec<String>, judges: Vec<(JudgeSpec, f64)> },
    /// Generates N samples per prompt and pairs best vs worst by the reward source.
    AutoLabel { job: JobId, prompts: Vec<String>, encoding: Encoding, sampling: SamplingConfig, reward: RewardSpec },
    Train { job: JobId, run: RunSpec },
    Control { job: JobId, action: RunControl },
    Cancel { job: JobId },
    Export { job: JobId, what: Artifact },
    /// The run `run` with the policy (or reward model) as trained, handed off to TRL as one zip;
    /// `base_model` is what the script loads by default.
    Handoff { job: JobId, run: RunSpec, base_model: String },
    /// Brings back an adapter or a reward model (PEFT files).
    Import {
        what: Artifact,
        config_json: String,
        #[serde(with = "serde_bytes")]
        safetensors: Vec<u8>,
        #[serde(default)]
        from: AdapterFrom,
    },
    ResetAdapter,
    /// One question under each prompt variant (same seed), each scored; a `VariantTried` each.
    Variants {
        job: JobId,
        question: String,
        encoding: Encoding,
        sampling: SamplingConfig,
        variants: Vec<Variant>,
        reference: Option<String>,
        judges: Vec<(JudgeSpec, f64)>,
    },
    /// A question answered without `docs` and with the `k` passages BM25 finds in them.
    Ask { job: JobId, question: String, encoding: Encoding, sampling: SamplingConfig, docs: Vec<Document>, k: usize },
    /// A fact set run with and without `docs`: a `FactChecked` per question, then `Done`.
    CheckFacts { job: JobId, facts: Vec<Fact>, encoding: Encoding, sampling: SamplingConfig, docs: Vec<Document>, k: usize },
    /// Each probe answered by the reference and the policy (same seed), judged: a `ProbeAnswered`
    /// each, then `Done`.
    Probes { job: JobId, probes: Vec<Probe>, encoding: Encoding, sampling: SamplingConfig },
    /// Self-alignment as a labeller: for each prompt, the policy's answers judged by the base model
    /// against `constitution` (and by `judges`), best-vs-worst pairs by self-score: a
    /// `SelfJudged` per prompt, then `Done`.
    SelfLabel {
        job: JobId,
        constitution: Constitution,
        prompts: Vec<String>,
        encoding: Encoding,
        sampling: SamplingConfig,
        judges: Vec<(JudgeSpec, f64)>,
        pairs_per_prompt: usize,
    },
    /// One DPO adapter per rater group and one merged (`run`'s settings, from the base model),
    /// each scored on every group's held-out pairs: `GroupStep`s, a `GroupTrained` per adapter, `Done`.
    Groups { job: JobId, groups: Vec<Group>, run: RunSpec },
    /// `members` reward models from `run` (the reward-model method, with its pairs), differing by
    /// seed or bootstrap resample, become the session's ensemble: `EnsembleStep`s, `EnsembleTrained`.
    Ensemble { job: JobId, run: RunSpec, members: usize, resample: Resample },
    /// `completions` to `prompt` scored by every member of the ensemble: `EnsembleScored`.
    EnsembleScore { job: JobId, prompt: String, encoding: Encoding, completions: Vec<String> },
    /// A second model to teach from (distillation): `TeacherReady`.
    LoadTeacher { job: JobId, source: ModelSource },
    /// SFT on a teacher's answers, measured on held-out prompts: `Distilling`s, then `Distilled`.
    Distill {
        job: JobId,
        teacher: TeacherChoice,
        judges: Vec<(JudgeSpec, f64)>,
        run: RunSpec,
        prompts: Vec<String>,
        eval_prompts: Vec<String>,
        sampling: SamplingConfig,
    },
    /// A weak critic (judges) picks among the policy's samples; the judges `truth` score the
    /// picks: a `Reranked` per prompt, then `Done`.
    WeakToStrong { job: JobId, prompts: Vec<String>, encoding: Encoding, sampling: SamplingConfig, weak: Vec<(JudgeSpec, f64)>, truth: Vec<(JudgeSpec, f64)> },
    /// Stages one after another on the policy, each measured on `eval_prompts` by `judges`:
    /// `PipelineStep`s, a `PipelineStage` per stage (the base model first), then `Done`.
    Pipeline {
        job: JobId,
        stages: Vec<RunSpec>,
        eval_prompts: Vec<String>,
        encoding: Encoding,
        sampling: SamplingConfig,
        judges: Vec<(JudgeSpec, f64)>,
    },
    /// `pairs` with their margins under `reward`, sorted as `order` says: `Ordered`.
    OrderPairs { job: JobId, pairs: Vec<Preference>, encoding: Encoding, reward: RewardSpec, order: Order },
    /// A small file a link names (a lab file): the worker may fetch from other sites, the page
    /// may not (its Content-Security-Policy), and the page asked the user first.
    Fetch { job: JobId, url: String },
}

/// The teacher a distillation learns from, as the page names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TeacherChoice {
    /// The student's best of `n` samples under the judges.
    BestOfN { n: usize },
    /// The second model loaded with `LoadTeacher`.
    Model,
    /// Answers written down (the Data tab's ideal answers).
    Answers(Vec<Demonstration>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model's own name (a GGUF's `general.name`), else its file's: what saved adapters are
    /// matched by.
    pub name: String,
    /// The name shown: the file's, when it names the model better than its metadata does.
    #[serde(default)]
    pub title: String,
    pub format: String,
    pub parameters: usize,
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub context: usize,
    pub chat_template: bool,
    /// Each part of the load and its wall time, in order: what a slow load is waiting on.
    #[serde(default)]
    pub stages: Vec<LoadStage>,
    /// The file came from the browser's cache, not the network.
    pub from_cache: bool,
}

/// One part of a model's load and its wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadPart {
    /// Fetching the file (network or the browser's cache), or reading the one picked.
    Download,
    /// Waiting for the compute device to open once the file was in.
    Device,
    /// Parsing the file: header, tokenizer, weights as stored.
    Parse,
    /// The weights onto the device, as the model trains them.
    Weights,
    /// The judges' word lists, fetched once.
    Judges,
    /// One token through the model (on WebGPU it compiles the kernels).
    WarmUp,
}

impl LoadPart {
    pub fn label(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Device => "device",
            Self::Parse => "parse",
            Self::Weights => "weights",
            Self::Judges => "judges",
            Self::WarmUp => "warm-up",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadStage {
    pub part: LoadPart,
    pub ms: f64,
}

impl ModelSummary {
    /// The whole load, in ms: its parts' sum.
    pub fn load_ms(&self) -> f64 {
        self.stages.iter().map(|s| s.ms).sum()
    }

    /// "download 0.62 s · device 0.00 s · parse 0.31 s · …", in order.
    pub fn stages_line(&self) -> String {
        self.stages.iter().map(|s| format!("{} {:.2} s", s.part.label(), s.ms / 1000.0)).collect::<Vec<_>>().join(" · ")
    }
}

#[cfg(feature = "engine")]
impl ModelSummary {
    pub fn of(lm: &crate::io::LoadedModel, name: String, file: &str, stages: Vec<LoadStage>, from_cache: bool) -> Self {
        let c = &lm.config;
        Self {
            title: title(&name, file),
            name,
            format: lm.info.format.clone(),
            parameters: c.num_parameters(),
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            vocab: c.vocab_size,
            context: c.max_position_embeddings,
            chat_template: lm.chat_template.is_some(),
            stages,
            from_cache,
        }
    }
}

/// What to call a model: a GGUF file's name says it as its makers wrote it
/// ("SmolLM2-135M-Instruct.Q4_1.gguf" → "SmolLM2-135M-Instruct (Q4_1)"), where the metadata's
/// `general.name` is often machine-made ("Smollm2 135M 8k Lc100K Mix1 Ep2").
pub fn title(name: &str, file: &str) -> String {
    let file = file.rsplit('/').next().unwrap_or(file).split(['?', '#']).next().unwrap_or(file);
    let Some(stem) = file.strip_suffix(".gguf").filter(|s| !s.is_empty()) else { return name.to_string() };
    match stem.rsplit_once('.') {
        Some((model, quant)) if quant.len() <= 8 && quant.starts_with(['Q', 'q', 'F', 'f', 'I', 'B']) && !model.is_empty() => format!("{model} ({quant})"),
        _ => stem.to_string(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOut {
    pub text: String,
    pub tokens: usize,
    pub finish: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad input: a file that is not a model, a tokenizer that does not fit, bad settings.
    Invalid,
    /// NaN or infinity in training (the last good weights were kept).
    NonFinite,
    /// The GPU device was lost or a read failed.
    Device,
    /// Out of memory (GPU or wasm).
    OutOfMemory,
    Network,
    /// A deploy since the page opened took its engine's files away: only a reload helps.
    Updated,
}

/// What the engine's loader says when a deploy took its files away (scripts/web-dist.mjs writes the
/// same words): the page then offers a reload, not a restart of the same engine.
pub const APP_UPDATED: &str = "the app was updated since this page opened";

/// What the page says of a worker that died with an error: the browser's "Uncaught Error: " (it
/// says only that nothing caught what the engine threw) taken off the engine's own words. A trap
/// keeps its kind ("RuntimeError: memory access out of bounds").
pub fn crash_message(browser: &str) -> String {
    let said = browser.strip_prefix("Uncaught ").unwrap_or(browser);
    let said = said.strip_prefix("Error: ").unwrap_or(said);
    format!("the engine's worker crashed: {said}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Finished,
    Paused,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The worker's wasm is running; requests sent before this would have been lost.
    Hello,
    /// The device the worker opened. `half`: answers are decoded with the products in f16 (a GPU
    /// whose adapter has `shader-f16`; see [`crate::generate::DecodePath`]).
    Backend { kind: BackendKind, adapter: String, software: bool, half: bool, fallback: Option<String> },
    Progress { stage: String, fraction: f32, loaded: u64, total: Option<u64>, from_cache: bool },
    ModelReady { info: ModelSummary },
    Token { job: JobId, sample: usize, delta: String },
    Generated { job: JobId, samples: Vec<SampleOut>, millis: f64, first_token_ms: f64, tokens_per_s: f64 },
    Logprobs { job: JobId, pieces: Vec<String>, policy: Vec<f32>, reference: Vec<f32> },
    Judged { job: JobId, judges: Vec<f64>, reward_model: Option<Vec<f64>> },
    Labelled { job: JobId, pairs: Vec<Preference>, done: usize, total: usize },
    TrainStarted { job: JobId, trainable: usize, total_steps: usize, examples: usize, held_out: usize },
    /// One step's metrics, and the step example by example where the method has a picture of it.
    Metrics { job: JobId, values: BTreeMap<String, f64>, millis: f64, detail: Option<StepDetail> },
    TrainEnded { job: JobId, state: RunState, message: Option<String> },
    /// Exported files. `job: None`: sent unasked after training, for the page to keep.
    Files { job: Option<JobId>, what: Artifact, files: Vec<FileOut> },
    /// A run handed off to TRL: data, adapter and script, one zip (`lab::handoff`).
    Handoff { job: JobId, zip: FileOut },
    VariantTried { job: JobId, index: usize, result: VariantResult },
    Answered { job: JobId, answer: Answer },
    FactChecked { job: JobId, row: FactRow, done: usize, total: usize },
    ProbeAnswered { job: JobId, result: ProbeResult, done: usize, total: usize },
    SelfJudged { job: JobId, prompt: String, answers: Vec<Judged>, pairs: Vec<Preference>, done: usize, total: usize },
    GroupStep { job: JobId, adapter: String, step: usize, steps: usize },
    GroupTrained { job: JobId, row: AdapterRow },
    EnsembleStep { job: JobId, member: usize, members: usize, step: usize, steps: usize },
    EnsembleTrained { job: JobId, report: EnsembleReport },
    EnsembleScored { job: JobId, scored: Vec<Scored> },
    TeacherReady { job: JobId, name: String, parameters: usize },
    Distilling { job: JobId, progress: DistillProgress },
    Distilled { job: JobId, report: DistillReport },
    Reranked { job: JobId, row: Reranked, done: usize, total: usize },
    PipelineStep { job: JobId, stage: usize, stages: usize, step: usize, steps: usize },
    /// A stage ended (or, first, the base model measured): its report, and what it trained to
    /// download (the adapter, or the reward model; none for the base model).
    PipelineStage { job: JobId, report: StageReport, files: Vec<FileOut> },
    Ordered { job: JobId, pairs: Vec<(Preference, f64)> },
    Fetched {
        job: JobId,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// What the policy is now: "base model", "LoRA r=8 on q,v (DPO, 10 steps)", ...
    PolicyState {
        kind: PolicyKind,
        description: String,
        reward_model: bool,
        /// Members in the session's reward-model ensemble (0: none).
        #[serde(default)]
        ensemble: usize,
    },
    Done { job: JobId },
    Error { job: Option<JobId>, kind: ErrorKind, message: String },
    /// The worker cannot go on (a panic, a lost device): the page restarts it.
    Fatal { message: String },
}

impl Request {
    /// The job a request starts, if it starts one (its events and errors carry this id).
    pub fn job(&self) -> Option<JobId> {
        match self {
            Self::Generate { job, .. }
            | Self::Logprobs { job, .. }
            | Self::Judge { job, .. }
            | Self::AutoLabel { job, .. }
            | Self::Train { job, .. }
            | Self::Export { job, .. }
            | Self::Handoff { job, .. }
            | Self::Variants { job, .. }
            | Self::Ask { job, .. }
            | Self::CheckFacts { job, .. }
            | Self::Probes { job, .. }
            | Self::Groups { job, .. }
            | Self::SelfLabel { job, .. }
            | Self::Ensemble { job, .. }
            | Self::EnsembleScore { job, .. }
            | Self::LoadTeacher { job, .. }
            | Self::Distill { job, .. }
            | Self::WeakToStrong { job, .. }
            | Self::Pipeline { job, .. }
            | Self::OrderPairs { job, .. }
            | Self::Fetch { job, .. } => Some(*job),
            _ => None,
        }
    }
}

impl Event {
    /// The job an event belongs to; `None` for events about the worker, device or model.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Self::Token { job, .. }
            | Self::Generated { job, .. }
            | Self::Logprobs { job, .. }
            | Self::Judged { job, .. }
            | Self::Labelled { job, .. }
            | Self::TrainStarted { job, .. }
            | Self::Metrics { job, .. }
            | Self::TrainEnded { job, .. }
            | Self::Handoff { job, .. }
            | Self::Fetched { job, .. }
            | Self::VariantTried { job, .. }
            | Self::Answered { job, .. }
            | Self::FactChecked { job, .. }
            | Self::ProbeAnswered { job, .. }
            | Self::SelfJudged { job, .. }
            | Self::GroupStep { job, .. }
            | Self::GroupTrained { job, .. }
            | Self::EnsembleStep { job, .. }
            | Self::EnsembleTrained { job, .. }
            | Self::EnsembleScored { job, .. }
            | Self::TeacherReady { job, .. }
            | Self::Distilling { job, .. }
            | Self::Distilled { job, .. }
            | Self::Reranked { job, .. }
            | Self::PipelineStep { job, .. }
            | Self::PipelineStage { job, .. }
            | Self::Ordered { job, .. }
            | Self::Done { job } => Some(*job),
            Self::Files { job, .. } | Self::Error { job, .. } => *job,
            _ => None,
        }
    }

    /// The event as it crosses to the page: postcard's bytes. The format names no fields (both
    /// ends are built from these types together), so the page's reader of every event is a
    /// fraction of the code a reader of JS objects takes: the page is the first download. (The
    /// worker writes the same bytes straight into a JS array: `worker::web::js_bytes`.)
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl ErrorKind {
    /// Sorts an engine error for the page: what happened decides what it offers.
    pub fn of(e: &crate::Error) -> Self {
        match e {
            crate::Error::NonFinite(_) => Self::NonFinite,
            crate::Error::Network(_) => Self::Network,
            crate::Error::Device(m) => Self::of_crash(m),
            _ => Self::Invalid,
        }
    }

    /// Sorts a device failure or a crashed worker by its message: wgpu and wasm report an exhausted
    /// GPU or heap as a device error or a trap, and only the text tells them apart (as it does a
    /// loader that found its engine's files gone).
    pub fn of_crash(message: &str) -> Self {
        if message.contains(APP_UPDATED) {
            return Self::Updated;
        }
        let m = message.to_lowercase().replace(' ', "");
        if m.contains("outofmemory") || m.contains("memoryaccessoutofbounds") || m.contains("allocationfailed") {
            Self::OutOfMemory
        } else {
            Self::Device
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::rl::RlConfig;
    use crate::align::train::TrainConfig;
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
            Event::Token { job: 1, sample: 2, delta: text("é") },
            Event::Generated { job: 1, samples: vec![SampleOut { text: text("hi"), tokens: 2, finish: text("eos") }], millis: 1.5, first_token_ms: 0.5, tokens_per_s: 40.0 },
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
        assert_eq!(names.len(), 36, "every variant once at least: {names:?}");
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
        let dist = include_str!("../../scripts/web-dist.mjs");
        assert!(dist.contains(APP_UPDATED), "scripts/web-dist.mjs no longer says {APP_UPDATED:?}");
    }
}
