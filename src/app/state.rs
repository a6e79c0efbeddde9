//! What the page's panels share: the context of signals, and the records it holds (the backend,
//! a load's progress, training runs, kept adapters, banners, tabs).

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{class, client, constitution, distill, documents, ensemble, lesson, pipeline, probes, prompting, Settings};
use crate::backend::BackendKind;
use crate::data::{Demonstration, Preference, Unpaired};
use crate::lab::lesson::{Panel, Readings};
use crate::lab::{AdapterFrom, PolicyKind};
use crate::worker::protocol::*;

#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    pub kind: BackendKind,
    pub adapter: String,
    pub software: bool,
    /// Answers are decoded with the products in f16.
    pub half: bool,
    pub fallback: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoadProgress {
    pub stage: String,
    pub fraction: f32,
    pub loaded: u64,
    pub total: Option<u64>,
    pub from_cache: bool,
}

/// A training run as the page keeps it: settings, metrics per step, how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub method: String,
    /// The run's settings as JSON (method, train, lora, encoding), without the data.
    pub config: String,
    pub metrics: Vec<BTreeMap<String, f64>>,
    pub total_steps: usize,
    pub state: String,
    pub examples: usize,
}

/// The adapter the policy had last (or the last reward model, or a full fine-tune's weights as an
/// HF checkpoint), kept so a reload or a lost device does not lose it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedAdapter {
    pub model: String,
    pub config_json: String,
    #[serde(with = "serde_bytes")]
    pub safetensors: Vec<u8>,
}

impl SavedAdapter {
    /// The config and the tensors as the worker sends them (PEFT's `adapter_config.json`, or an
    /// HF checkpoint's `config.json`; its `tokenizer.json` is not needed to restore it).
    pub(super) fn from_files(model: String, files: Vec<FileOut>) -> Option<Self> {
        let file = |suffix: &str| files.iter().find(|f| f.name.ends_with(suffix)).map(|f| f.bytes.clone());
        let config_json = String::from_utf8(file("config.json")?).ok()?;
        Some(Self { model, config_json, safetensors: file(".safetensors")? })
    }

    /// Sends it back to the worker (after a reload, or a restart of the engine).
    pub(super) fn restore(&self, what: Artifact) {
        let (config_json, safetensors) = (self.config_json.clone(), self.safetensors.clone());
        client::send(&Request::Import { what, config_json, safetensors, from: AdapterFrom::Kept });
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Banner {
    pub kind: ErrorKind,
    pub message: String,
    /// The engine stopped: offer to restart it.
    pub fatal: bool,
}

/// What went wrong with the browser's storage, for the banner that says so.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageProblem {
    /// A write to IndexedDB failed (quota, private mode).
    Write(String),
    /// A stored record could not be read; it is kept aside, not overwritten.
    Read(String),
}

impl StorageProblem {
    pub(super) fn title(&self) -> &'static str {
        match self {
            Self::Write(_) => "Saving in this browser failed",
            Self::Read(_) => "A saved record could not be read",
        }
    }

    pub(super) fn message(&self) -> &str {
        match self {
            Self::Write(m) | Self::Read(m) => m,
        }
    }

    pub(super) fn hint(&self) -> &'static str {
        match self {
            Self::Write(_) => "Nothing is lost from this page: export your data (Data tab) and adapter (Train tab) to keep them.",
            Self::Read(_) => "Everything else is restored, and new work is saved as usual. The damaged copy is kept aside: download it from the Data tab.",
        }
    }
}

/// The page's tabs: the lessons, then the panels a lesson's steps point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Lessons,
    Panel(Panel),
}

impl From<Panel> for Tab {
    fn from(p: Panel) -> Self {
        Self::Panel(p)
    }
}

impl Tab {
    pub(super) const ALL: [(Tab, &'static str, &'static str); 12] = [
        (Tab::Lessons, "lessons", "Lessons"),
        (Tab::Panel(Panel::Generate), "generate", "Generate & rank"),
        (Tab::Panel(Panel::Data), "data", "Data"),
        (Tab::Panel(Panel::Train), "train", "Train"),
        (Tab::Panel(Panel::Compare), "compare", "Compare"),
        (Tab::Panel(Panel::Prompting), "prompting", "Prompting"),
        (Tab::Panel(Panel::Documents), "documents", "Documents"),
        (Tab::Panel(Panel::Probes), "probes", "Probes"),
        (Tab::Panel(Panel::Constitution), "constitution", "Constitution"),
        (Tab::Panel(Panel::Ensemble), "ensemble", "Ensemble"),
        (Tab::Panel(Panel::Distill), "distill", "Distill"),
        (Tab::Panel(Panel::Class), "class", "Class"),
    ];
}

/// Everything panels share. Signals are `Copy`; the context is provided once.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub backend: RwSignal<Option<BackendInfo>>,
    pub progress: RwSignal<Option<LoadProgress>>,
    pub model: RwSignal<Option<ModelSummary>>,
    pub model_source: RwSignal<Option<ModelSource>>,
    /// A model is being loaded (the old one, if any, still answers until the new one is ready).
    pub loading: RwSignal<bool>,
    /// The engine's worker died (its banner says why); a restart or a reload starts another.
    pub stopped: RwSignal<bool>,
    /// What the worker's policy is (base, LoRA or a full fine-tune) and its one-line description.
    pub policy: RwSignal<(PolicyKind, String)>,
    pub banner: RwSignal<Option<Banner>>,
    pub notice: RwSignal<Option<String>>,
    pub storage_error: RwSignal<Option<StorageProblem>>,
    pub restored: RwSignal<bool>,
    pub tab: RwSignal<Tab>,
    /// The lesson in progress, if any.
    pub lesson: RwSignal<Option<lesson::LessonState>>,
    /// The numbers the panels last reported (training metrics, judge scores), for lessons.
    pub readings: RwSignal<Readings>,
    /// A lesson step's action, asked of a panel and reported back.
    pub act: RwSignal<lesson::Act>,
    pub pairs: RwSignal<Vec<Preference>>,
    pub unpaired: RwSignal<Vec<Unpaired>>,
    pub demos: RwSignal<Vec<Demonstration>>,
    pub prompts: RwSignal<Vec<String>>,
    pub runs: RwSignal<Vec<RunRecord>>,
    pub adapter: RwSignal<Option<SavedAdapter>>,
    /// A full fine-tune's weights (tiny models), kept as the adapter is; one of the two at most.
    pub weights: RwSignal<Option<SavedAdapter>>,
    pub reward_model: RwSignal<Option<SavedAdapter>>,
    /// The worker holds a reward model (trained, imported or restored).
    pub has_reward_model: RwSignal<bool>,
    /// Members of the worker's reward-model ensemble (0: none yet).
    pub ensemble_members: RwSignal<usize>,
    pub settings: RwSignal<Settings>,
    /// The Prompting tab's variants and reference answer.
    pub prompting: RwSignal<prompting::PromptingState>,
    /// The Documents tab's files and question.
    pub shelf: RwSignal<documents::Shelf>,
    /// The Probes tab's own probes and last results.
    pub probes: RwSignal<probes::ProbesState>,
    /// The Constitution tab's principles and last judgements.
    pub constitution: RwSignal<constitution::ConstitutionState>,
    /// The Ensemble tab's settings, last report and scored answers.
    pub ensemble: RwSignal<ensemble::EnsembleState>,
    /// The Distill tab's teacher, held-out prompts and last results.
    pub distill: RwSignal<distill::DistillState>,
    /// The Train tab's pipeline: its stages, held-out prompts and last table.
    pub pipeline: RwSignal<pipeline::PipelineState>,
    /// The class files the teacher opened, the rater groups and the group adapters' results.
    pub class: RwSignal<class::ClassRoom>,
    pub backend_pref: RwSignal<BackendPref>,
    pub training: RwSignal<bool>,
}
