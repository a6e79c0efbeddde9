//! The page (Leptos, client-side rendered). It owns the user's data and settings and talks to the
//! engine's worker with typed messages; the engine never blocks it.
//!
//! Panels, one file each: lesson (the lesson list and the card that guides a lesson), generate (samples, ranking, ratings), data (table, import/export,
//! auto-labelling), train (methods, knobs, live charts), compare (reference vs policy, heatmap,
//! best-of-N), prompting (one question under prompt variants), documents (answers with and without
//! retrieved passages, a fact set), probes (adversarial prompts before and after alignment), constitution (the model judges its own answers), class (hand in work; the teacher's view of many students' files), groups (one adapter per rater group). `client` is the worker link, `store` IndexedDB, `chart` the SVG line charts.

mod chart;
mod class;
mod client;
mod compare;
mod constitution;
mod curriculum;
mod distill;
mod ensemble;
mod data;
mod documents;
mod fields;
mod files;
mod generate;
mod groups;
mod lesson;
mod probes;
mod pipeline;
mod prompting;
mod samples;
mod step_detail;
mod store;
mod train;
mod train_form;
mod unreadable;

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::align::Encoding;
use crate::backend::BackendKind;
use crate::data::{Demonstration, Preference, Unpaired};
use crate::generate::SamplingConfig;
use crate::lab::lesson::{Panel, Readings};
use crate::lab::{AdapterFrom, PolicyKind, RunSettings};
use crate::worker::protocol::*;

/// The default model, copied into `dist/models/` by `scripts/build-web` (scripts/setup fetched it).
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

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
    fn from_files(model: String, files: Vec<FileOut>) -> Option<Self> {
        let file = |suffix: &str| files.iter().find(|f| f.name.ends_with(suffix)).map(|f| f.bytes.clone());
        let config_json = String::from_utf8(file("config.json")?).ok()?;
        Some(Self { model, config_json, safetensors: file(".safetensors")? })
    }

    /// Sends it back to the worker (after a reload, or a restart of the engine).
    fn restore(&self, what: Artifact) {
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
    fn title(&self) -> &'static str {
        match self {
            Self::Write(_) => "Saving in this browser failed",
            Self::Read(_) => "A saved record could not be read",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Write(m) | Self::Read(m) => m,
        }
    }

    fn hint(&self) -> &'static str {
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
    const ALL: [(Tab, &'static str, &'static str); 12] = [
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

/// Knobs the page remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub system: String,
    pub prompt: String,
    pub chat: bool,
    #[serde(deserialize_with = "or_default")]
    pub sampling: SamplingConfig,
    pub judges: Vec<(String, f64, bool)>,
    #[serde(deserialize_with = "or_default")]
    pub train: RunSettings,
}

/// A part of the saved settings that an older version stored in another shape comes back as its
/// default; the rest of the settings are kept.
fn or_default<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(crate::lab::from_value(v).unwrap_or_default())
}

/// A saved field read through a JSON value, as lab files' settings are: the page's download then
/// holds one reader of the type (run settings are large), not one for each way in.
fn via_value<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    crate::lab::from_value(v).map_err(|e| serde::de::Error::custom(format!("{}: {}", e.path(), e.inner())))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            system: String::new(),
            prompt: "Write a short, friendly note to a neighbour.".into(),
            chat: true,
            // A class compares a few short answers.
            sampling: SamplingConfig { max_new_tokens: 48, temperature: 0.8, top_p: 0.95, seed: 1, num_samples: 4, ..SamplingConfig::default() },
            judges: vec![
                ("sentiment".into(), 1.0, true),
                ("politeness".into(), 1.0, false),
                ("profanity".into(), 1.0, false),
                ("length=30".into(), 1.0, false),
                ("neutral".into(), 1.0, false),
            ],
            train: RunSettings::default(),
        }
    }
}

impl Settings {
    /// How Generate, Compare and the judges turn a prompt into tokens.
    pub fn encoding(&self) -> Encoding {
        Encoding::untruncated(self.chat, &self.system)
    }

    /// The judges switched on, parsed (`sentiment`, `length=30`, `include=a+b`...), with weights.
    pub fn judge_specs(&self) -> Result<Vec<(crate::judges::JudgeSpec, f64)>, String> {
        self.judges
            .iter()
            .filter(|(_, _, on)| *on)
            .map(|(s, w, _)| crate::judges::JudgeSpec::parse_weighted(s).map(|(j, _)| (j, *w)).map_err(|e| e.to_string()))
            .collect()
    }
}

/// A text box's non-blank lines, trimmed: prompts, answers, one per line.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn query(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The origin of `url` when it is not the page's own: a link can name any server's model.
fn foreign_origin(url: &str) -> Option<String> {
    let own = web_sys::window()?.location().origin().ok()?;
    let origin = web_sys::Url::new(url).ok()?.origin();
    (origin != own).then_some(origin)
}

/// Asks before the page contacts another site for a model a link names.
fn confirm_foreign(origin: &str) -> bool {
    let ask = format!(
        "This link asks the lab to download a model from {origin}, a site other than this one.\n\n\
         Load it? (Cancel: nothing is downloaded from that site.)"
    );
    web_sys::window().and_then(|w| w.confirm_with_message(&ask).ok()).unwrap_or(false)
}

/// Asks before the page fetches a lab file from another site.
fn confirm_foreign_lab(origin: &str) -> bool {
    let ask = format!(
        "This link opens a lesson (lab file) from {origin}, a site other than this one. A lab file can change \
         your settings and add examples to your data (nothing is deleted).\n\nOpen it? (Cancel: nothing is downloaded from that site.)"
    );
    web_sys::window().and_then(|w| w.confirm_with_message(&ask).ok()).unwrap_or(false)
}

/// An absolute URL for `path`, relative to the page (the worker resolves against its script).
fn absolute(path: &str) -> String {
    let base = web_sys::window().and_then(|w| w.document()).and_then(|d| d.base_uri().ok().flatten()).unwrap_or_default();
    web_sys::Url::new_with_base(path, &base).map(|u| u.href()).unwrap_or_else(|_| path.to_string())
}

pub fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// Opens the device and loads the model in a fresh worker (on start, and after a crash).
fn start_engine(ctx: Ctx) {
    ctx.backend.set(None);
    ctx.model.set(None);
    ctx.loading.set(false);
    ctx.stopped.set(false);
    let early = match ctx.model_source.get_untracked() {
        Some(ModelSource::Url { model, .. }) => Some(model),
        _ => None,
    };
    client::spawn(ctx.backend_pref.get_untracked(), early, move |ev| on_event(ctx, ev));
    client::send(&Request::Init { backend: ctx.backend_pref.get_untracked(), judges_base: absolute("models/judges/") });
    if let Some(src) = ctx.model_source.get_untracked() {
        load_model(ctx, src);
    }
}

pub fn load_model(ctx: Ctx, source: ModelSource) {
    ctx.loading.set(true);
    ctx.banner.set(None);
    ctx.progress.set(Some(LoadProgress { stage: "starting".into(), fraction: 0.0, loaded: 0, total: None, from_cache: false }));
    ctx.model_source.set(Some(source.clone()));
    client::send(&Request::Load { source });
}

fn on_event(ctx: Ctx, ev: Event) {
    match ev {
        Event::Backend { kind, adapter, software, half, fallback } => {
            ctx.backend.set(Some(BackendInfo { kind, adapter, software, half, fallback }));
        }
        Event::Progress { stage, fraction, loaded, total, from_cache } => {
            ctx.progress.set(Some(LoadProgress { stage, fraction, loaded, total, from_cache }));
        }
        Event::ModelReady { info } => {
            ctx.loading.set(false);
            ctx.model.set(Some(info.clone()));
            // A new model starts from its base weights (the worker says so next).
            ctx.policy.set((PolicyKind::Base, "the base model".into()));
            ctx.has_reward_model.set(false);
            // Bring back the adapter and reward model of the last session, when made on this model.
            restore_saved(ctx, &info.name);
            // www/offline.js keeps the app's files for offline use once the engine has started,
            // so its downloads do not compete with the engine's.
            if let Some(w) = web_sys::window() {
                if let Ok(e) = web_sys::Event::new("alignlab-model-ready") {
                    let _ = w.dispatch_event(&e);
                }
            }
        }
        Event::PolicyState { kind, description, reward_model, ensemble } => {
            ctx.policy.set((kind, description));
            ctx.has_reward_model.set(reward_model);
            ctx.ensemble_members.set(ensemble);
        }
        Event::Files { job: None, what, files } => {
            let model = ctx.model.get_untracked().map(|m| m.name).unwrap_or_default();
            let saved = SavedAdapter::from_files(model, files);
            // The policy is an adapter or a full fine-tune: keep the newer, drop the other.
            match what {
                Artifact::RewardModel => ctx.reward_model.set(saved),
                Artifact::Adapter => {
                    ctx.adapter.set(saved);
                    ctx.weights.set(None);
                }
                Artifact::Merged => {
                    ctx.weights.set(saved);
                    ctx.adapter.set(None);
                }
            }
        }
        Event::Error { kind, message, job } => {
            // A failed load leaves the model that was there (if any) in place.
            if job.is_none() && ctx.loading.get_untracked() {
                ctx.loading.set(false);
            }
            ctx.banner.set(Some(Banner { kind, message, fatal: false }));
        }
        Event::Fatal { message } => {
            let kind = ErrorKind::of_crash(&message);
            ctx.training.set(false);
            // Nothing is loading any more: the badge and the model box say so, not "Starting".
            ctx.loading.set(false);
            ctx.stopped.set(true);
            ctx.banner.set(Some(Banner { kind, message, fatal: true }));
        }
        _ => {}
    }
}

/// Keeps `sig` under `key` in IndexedDB: saves every change once the last visit's data is back,
/// and returns the future that restores it. Only the conversions are written for each `T`; the
/// saving and restoring are [`keep_record`]'s, once.
fn keep<T>(ctx: Ctx, key: &'static str, sig: RwSignal<T>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
where
    T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let track = Box::new(move || sig.track());
    let record = std::rc::Rc::new(move || store::record(&sig.get_untracked()));
    let read = Box::new(move |data| store::data(data).map(|v| sig.set(v)));
    keep_record(ctx, key, track, record, read)
}

fn keep_record(
    ctx: Ctx,
    key: &'static str,
    track: Box<dyn Fn()>,
    record: std::rc::Rc<dyn Fn() -> Result<wasm_bindgen::JsValue, String>>,
    read: Box<dyn Fn(wasm_bindgen::JsValue) -> Result<(), String>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    // One write in flight per record: changes made meanwhile are written once it lands (a run
    // that logs many steps a second must not queue a write for each).
    let busy = std::rc::Rc::new(std::cell::Cell::new(false));
    let dirty = std::rc::Rc::new(std::cell::Cell::new(false));
    Effect::new(move |_| {
        track();
        if !ctx.restored.get() {
            return;
        }
        if busy.replace(true) {
            dirty.set(true);
            return;
        }
        let (busy, dirty, record) = (busy.clone(), dirty.clone(), record.clone());
        leptos::task::spawn_local(async move {
            loop {
                if let Err(e) = async { store::put(key, &record()?).await }.await {
                    ctx.storage_error.set(Some(StorageProblem::Write(e)));
                }
                if !dirty.replace(false) {
                    break;
                }
            }
            busy.set(false);
        });
    });
    Box::pin(async move {
        if let Err(e) = store::get(key, &*read).await {
            ctx.storage_error.set(Some(StorageProblem::Read(e)));
        }
    })
}

/// Sends the kept adapter and reward model back to the worker when they were made on `model` and
/// the worker does not hold them yet, and says what came back (the model may be ready before or
/// after the database answers: both paths come here).
fn restore_saved(ctx: Ctx, model: &str) {
    let untrained = ctx.policy.get_untracked().0 == PolicyKind::Base;
    let adapter = ctx.adapter.get_untracked().filter(|a| a.model == model && untrained);
    let weights = ctx.weights.get_untracked().filter(|w| w.model == model && untrained && adapter.is_none());
    let reward = ctx.reward_model.get_untracked().filter(|r| r.model == model && !ctx.has_reward_model.get_untracked());
    if let Some(a) = &adapter {
        a.restore(Artifact::Adapter);
    }
    if let Some(w) = &weights {
        w.restore(Artifact::Merged);
    }
    if let Some(r) = &reward {
        r.restore(Artifact::RewardModel);
    }
    let policy = if adapter.is_some() { Some("adapter") } else { weights.as_ref().map(|_| "fine-tuned weights") };
    let what = match (policy, reward.is_some()) {
        (Some(p), true) => format!("{p} and reward model"),
        (Some(p), false) => p.to_string(),
        (None, true) => "reward model".into(),
        (None, false) => return,
    };
    ctx.notice.set(Some(format!("Restored your last {what} for this model.")));
}

/// Loads what the last visit saved, then saves every change.
fn persist(ctx: Ctx) {
    let restores = [
        keep(ctx, "pairs", ctx.pairs),
        keep(ctx, "unpaired", ctx.unpaired),
        keep(ctx, "demos", ctx.demos),
        keep(ctx, "prompts", ctx.prompts),
        keep(ctx, "runs", ctx.runs),
        keep(ctx, "settings", ctx.settings),
        keep(ctx, "prompting", ctx.prompting),
        keep(ctx, "documents", ctx.shelf),
        keep(ctx, "probes", ctx.probes),
        keep(ctx, "class", ctx.class),
        keep(ctx, "constitution", ctx.constitution),
        keep(ctx, "ensemble", ctx.ensemble),
        keep(ctx, "distill", ctx.distill),
        keep(ctx, "pipeline", ctx.pipeline),
        keep(ctx, "adapter", ctx.adapter),
        keep(ctx, "weights", ctx.weights),
        keep(ctx, "reward_model", ctx.reward_model),
        keep(ctx, "lesson", ctx.lesson),
        keep(ctx, "readings", ctx.readings),
    ];
    leptos::task::spawn_local(async move {
        for r in restores {
            r.await;
        }
        // The model may have loaded before the database answered.
        if let Some(m) = ctx.model.get_untracked() {
            restore_saved(ctx, &m.name);
        }
        ctx.restored.set(true);
    });
}

#[component]
fn App() -> impl IntoView {
    let pref = query("backend").and_then(|b| BackendPref::parse(&b)).unwrap_or_default();
    let ctx = Ctx {
        backend: RwSignal::new(None),
        progress: RwSignal::new(None),
        model: RwSignal::new(None),
        model_source: RwSignal::new(None),
        loading: RwSignal::new(true),
        stopped: RwSignal::new(false),
        policy: RwSignal::new((PolicyKind::Base, "the base model".into())),
        banner: RwSignal::new(None),
        notice: RwSignal::new(None),
        storage_error: RwSignal::new(None),
        restored: RwSignal::new(false),
        tab: RwSignal::new(Tab::Lessons),
        lesson: RwSignal::new(None),
        readings: RwSignal::new(Readings::new()),
        act: RwSignal::new(lesson::Act::Idle),
        pairs: RwSignal::new(Vec::new()),
        unpaired: RwSignal::new(Vec::new()),
        demos: RwSignal::new(Vec::new()),
        prompts: RwSignal::new(Vec::new()),
        runs: RwSignal::new(Vec::new()),
        adapter: RwSignal::new(None),
        weights: RwSignal::new(None),
        reward_model: RwSignal::new(None),
        has_reward_model: RwSignal::new(false),
        ensemble_members: RwSignal::new(0),
        settings: RwSignal::new(Settings::default()),
        prompting: RwSignal::new(prompting::PromptingState::default()),
        shelf: RwSignal::new(documents::Shelf::default()),
        probes: RwSignal::new(probes::ProbesState::default()),
        class: RwSignal::new(class::ClassRoom::default()),
        constitution: RwSignal::new(constitution::ConstitutionState::default()),
        ensemble: RwSignal::new(ensemble::EnsembleState::default()),
        distill: RwSignal::new(distill::DistillState::default()),
        pipeline: RwSignal::new(pipeline::PipelineState::default()),
        backend_pref: RwSignal::new(pref),
        training: RwSignal::new(false),
    };
    provide_context(ctx);
    persist(ctx);
    let model = absolute(&query("model").unwrap_or_else(|| DEFAULT_MODEL.to_string()));
    let tokenizer = query("tokenizer").map(|t| absolute(&t));
    let foreign = [Some(&model), tokenizer.as_ref()].into_iter().flatten().find_map(|u| foreign_origin(u));
    match foreign {
        // Declining is the user's choice, not a failure: a notice, not an error.
        Some(origin) if !confirm_foreign(&origin) => ctx.notice.set(Some(format!(
            "This link asked to load a model from {origin}, another site; you declined, so nothing was \
             downloaded. Open a model with Change model."
        ))),
        _ => ctx.model_source.set(Some(ModelSource::Url { model, tokenizer })),
    }
    start_engine(ctx);
    if let Some(lab) = query("lab").map(|l| absolute(&l)) {
        match foreign_origin(&lab) {
            Some(origin) if !confirm_foreign_lab(&origin) => ctx.notice.set(Some(format!(
                "This link asked to open a lab file from {origin}, another site; you declined, so nothing was downloaded."
            ))),
            _ => lesson::open_url(ctx, lab),
        }
    }
    if let Some(set) = query("set") {
        lesson::open_settings_link(ctx, set);
    }
    let panel = move |t: Tab| move || ctx.tab.get() != t;
    view! {
        <header>
            <h1>"alignlab"</h1>
            <p class="tagline">"Generate, rank, and watch DPO, reward models, RLHF and LoRA change a real model, in your browser."</p>
            <BackendBadge/>
            <ModelBar/>
        </header>
        <Banners/>
        <nav role="tablist" aria-label="Panels">
            {Tab::ALL.into_iter().map(|(tab, id, label)| view! {
                <button role="tab" id=format!("tab-{id}") aria-selected=move || (ctx.tab.get() == tab).to_string()
                    class:active=move || ctx.tab.get() == tab on:click=move |_| ctx.tab.set(tab)>{label}</button>
            }).collect_view()}
        </nav>
        <lesson::LessonCard/>
        <main>
            <section role="tabpanel" aria-labelledby="tab-lessons" hidden=panel(Tab::Lessons)><lesson::LessonList/></section>
            <section role="tabpanel" aria-labelledby="tab-generate" hidden=panel(Panel::Generate.into())><generate::GeneratePanel/></section>
            <section role="tabpanel" aria-labelledby="tab-data" hidden=panel(Panel::Data.into())><data::DataPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-train" hidden=panel(Panel::Train.into())><train::TrainPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-compare" hidden=panel(Panel::Compare.into())><compare::ComparePanel/></section>
            <section role="tabpanel" aria-labelledby="tab-prompting" hidden=panel(Panel::Prompting.into())><prompting::PromptingPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-documents" hidden=panel(Panel::Documents.into())><documents::DocumentsPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-probes" hidden=panel(Panel::Probes.into())><probes::ProbesPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-constitution" hidden=panel(Panel::Constitution.into())><constitution::ConstitutionPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-ensemble" hidden=panel(Panel::Ensemble.into())><ensemble::EnsemblePanel/></section>
            <section role="tabpanel" aria-labelledby="tab-distill" hidden=panel(Panel::Distill.into())><distill::DistillPanel/></section>
            <section role="tabpanel" aria-labelledby="tab-class" hidden=panel(Panel::Class.into())><class::ClassPanel/></section>
        </main>
        <footer>"Everything runs on this device: the model, the training and your data (kept in this browser)."</footer>
    }
}

#[component]
fn BackendBadge() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let text = move || match ctx.backend.get() {
        // Its banner says why, until dismissed: the badge says only what stays true.
        _ if ctx.stopped.get() => "The engine stopped: reload the page to start it again".to_string(),
        None => "Starting the engine…".to_string(),
        Some(b) if b.kind == BackendKind::Wgpu => format!(
            "WebGPU: {}{} · {}",
            b.adapter,
            if b.software { " (software adapter, slow)" } else { "" },
            if b.half { "decoding in f16" } else { "decoding in f32 (the adapter has no shader-f16)" }
        ),
        // The worker names how it runs: "WebAssembly", or with its threads.
        Some(b) => format!("CPU (Flex, {}){}", b.adapter, b.fallback.map(|r| format!(": {r}")).unwrap_or_default()),
    };
    view! { <p class="badge" role="status" aria-label="Compute backend">{text}</p> }
}

fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

#[component]
fn ModelBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let url = RwSignal::new(String::new());
    let status = move || match (ctx.model.get(), ctx.progress.get().filter(|_| ctx.loading.get())) {
        (Some(m), None) => format!(
            "{} · {} · {:.1} M parameters · {} layers · context {} · loaded in {:.1} s{}",
            if m.title.is_empty() { &m.name } else { &m.title },
            m.format,
            m.parameters as f64 / 1e6,
            m.layers,
            m.context,
            m.load_ms() / 1000.0,
            if m.from_cache { " (from the browser cache)" } else { "" }
        ),
        (_, Some(p)) => format!(
            "Loading: {}{}{}",
            p.stage,
            match (p.loaded, p.total) {
                (0, _) => String::new(),
                (l, Some(t)) => format!(" {} of {}", mb(l), mb(t)),
                (l, None) => format!(" {}", mb(l)),
            },
            if p.from_cache { " (from the browser cache)" } else { "" }
        ),
        (None, None) => "No model loaded.".into(),
    };
    let on_files = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        if picked.is_empty() {
            return;
        }
        leptos::task::spawn_local(async move {
            match files::model_source(&picked).await {
                Ok(source) => load_model(ctx, source),
                Err(message) => ctx.banner.set(Some(Banner { kind: ErrorKind::Invalid, message, fatal: false })),
            }
        });
    };
    view! {
        <div class="modelbar">
            <p class="model-status" aria-live="polite"
                title=move || ctx.model.get().map(|m| m.stages_line()).filter(|l| !l.is_empty()).map(|l| format!("Where the load went: {l}"))>{status}</p>
            <Show when=move || ctx.loading.get() && ctx.progress.get().is_some()>
                <progress aria-label="Model loading" max="1" value=move || ctx.progress.get().map(|p| p.fraction).unwrap_or(0.0)></progress>
            </Show>
            <details>
                <summary>"Change model"</summary>
                <div class="row">
                    <button on:click=move |_| load_model(ctx, ModelSource::Url { model: absolute(DEFAULT_MODEL), tokenizer: None })>
                        "Load SmolLM2-135M-Instruct"</button>
                    <label>"Model file(s) "
                        <input type="file" multiple accept=".gguf,.bin,.json" aria-label="Open model file"
                            title="A GGUF file, or a llama2.c model.bin together with its tokenizer.bin" on:change=on_files/>
                    </label>
                </div>
                <div class="row">
                    <label>"Model URL " <input type="url" placeholder="https://…/model.gguf" prop:value=url
                        on:input=move |ev| url.set(event_target_value(&ev))/></label>
                    <button on:click=move |_| {
                        let u = url.get();
                        if !u.trim().is_empty() {
                            load_model(ctx, ModelSource::Url { model: absolute(u.trim()), tokenizer: None });
                        }
                    }>"Load URL"</button>
                </div>
            </details>
        </div>
    }
}

#[component]
fn Banners() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let restart = move |pref: BackendPref| {
        ctx.banner.set(None);
        ctx.backend_pref.set(pref);
        start_engine(ctx);
        ctx.notice.set(Some("Restarted the engine; your data and last adapter are kept.".into()));
    };
    view! {
        {move || ctx.banner.get().map(|b| {
            let updated = b.kind == ErrorKind::Updated;
            let device = !updated && (b.fatal || matches!(b.kind, ErrorKind::Device | ErrorKind::OutOfMemory));
            let title = match b.kind {
                ErrorKind::NonFinite => "Training stopped: the numbers blew up",
                ErrorKind::Device => "The compute device failed",
                ErrorKind::OutOfMemory => "Out of memory",
                ErrorKind::Network => "Download failed",
                ErrorKind::Invalid => "That did not work",
                ErrorKind::Updated => "The app was updated",
            };
            let hint = match b.kind {
                ErrorKind::NonFinite => "The last good weights are kept. Lower the learning rate or beta and train again.",
                ErrorKind::OutOfMemory => "Your data and the last adapter are kept. Continue on the CPU, or use smaller settings (fewer samples, shorter answers, batch size 1).",
                ErrorKind::Device => "Your data and the last adapter are kept. Restart on WebGPU, or continue on the CPU.",
                ErrorKind::Updated => "Your data and the last adapter are kept. Reload the page to run the new version.",
                _ => "",
            };
            view! {
                <div class="banner error" role="alert">
                    <strong>{title}</strong>
                    <p>{b.message}</p>
                    <p class="hint">{hint}</p>
                    <Show when=move || device>
                        <button on:click=move |_| restart(BackendPref::Cpu)>"Continue on CPU"</button>
                        <button on:click=move |_| restart(BackendPref::Auto)>"Restart on WebGPU"</button>
                    </Show>
                    <Show when=move || updated>
                        <button class="primary" on:click=move |_| { let _ = web_sys::window().map(|w| w.location().reload()); }>"Reload the page"</button>
                    </Show>
                    <button on:click=move |_| ctx.banner.set(None)>"Dismiss"</button>
                </div>
            }
        })}
        {move || ctx.storage_error.get().map(|e| view! {
            <div class="banner warn" role="alert">
                <strong>{e.title()}</strong>
                <p>{e.message().to_string()}</p>
                <p class="hint">{e.hint()}</p>
                <button on:click=move |_| ctx.storage_error.set(None)>"Dismiss"</button>
            </div>
        })}
        {move || ctx.notice.get().map(|n| view! {
            <div class="banner info" role="status"><span>{n}</span>
                <button on:click=move |_| ctx.notice.set(None)>"OK"</button></div>
        })}
    }
}
