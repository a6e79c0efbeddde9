//! What the worker tells the page: one [`Event`] per message, as postcard's bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::backend::BackendKind;
use crate::data::Preference;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOut {
    pub text: String,
    pub tokens: usize,
    pub finish: String,
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
    /// The background training warm-up ended: `steps` toy steps in `ms` of their own time.
    TrainingWarmed { steps: usize, ms: f64 },
    /// The model's deferred f32 weights were made in the background: `weights` of them, in `ms`
    /// of their own time.
    WeightsMade { weights: usize, ms: f64 },
    /// The reference was scored ahead of a run on `pairs` pairs, in `ms` of their own time.
    ReferenceScored { pairs: usize, ms: f64 },
    Token { job: JobId, sample: usize, delta: String },
    /// `kept`: the reference's answers written before, for the same prompt and settings.
    Generated { job: JobId, samples: Vec<SampleOut>, millis: f64, first_token_ms: f64, tokens_per_s: f64, kept: bool },
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
