//! The typed messages between the page and the engine's Web Worker, plain serde types tested
//! natively. Requests cross `postMessage` as structured clones (bytes as `Uint8Array`); events
//! as postcard's bytes ([`Event::to_bytes`]).
//!
//! [`Request`]s go to the worker, [`Event`]s come back; both name their job. Beside them: the
//! model's summary (`model`), how errors are sorted (`errors`), and the small shared types here.

mod errors;
mod event;
mod model;
mod request;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::data::Demonstration;
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
pub use errors::{APP_UPDATED, ErrorKind, crash_message};
pub use event::{Event, RunState, SampleOut};
pub use model::{LoadPart, LoadStage, ModelSummary, title};
pub use request::Request;

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

impl ModelSource {
    /// The model file's name: the URL's last segment, or the picked file's name.
    pub fn file_name(&self) -> String {
        match self {
            Self::Url { model, .. } => model.split(['?', '#']).next().unwrap_or("").rsplit('/').next().unwrap_or("").to_string(),
            Self::Files { name, .. } => name.clone(),
        }
    }
}

/// What the page can export (and keep in the browser).
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

