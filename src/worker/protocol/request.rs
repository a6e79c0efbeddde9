//! What the page asks of the worker: one [`Request`] per message, most of them starting a job.

use serde::{Deserialize, Serialize};

use super::*;
use crate::align::Encoding;
use crate::data::Preference;
use crate::generate::SamplingConfig;
use crate::judges::JudgeSpec;

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
    /// The run Train would start now: the worker scores its reference on the pairs it lacks while
    /// nothing else runs, quietly, so that the run finds the values kept ([`crate::lab::ReferenceAhead`]).
    /// A newer one, or a new model, stops it.
    ScoreReference { run: RunSpec },
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
