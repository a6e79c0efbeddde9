//! The page (Leptos, client-side rendered). It owns the user's data and settings and talks to the
//! engine's worker with typed messages; the engine never blocks it.
//!
//! Panels, one file each: lesson (the lesson list and the card that guides a lesson), generate
//! (samples, ranking, ratings), data (table, import/export, auto-labelling), train (methods, knobs,
//! live charts; `pipeline` and `curriculum` inside it), compare (reference vs policy, heatmap,
//! best-of-N), prompting (one question under prompt variants), documents (answers with and without
//! retrieved passages, a fact set), probes (adversarial prompts before and after alignment),
//! constitution (the model judges its own answers), ensemble (reward models that vote), distill (a
//! teacher's answers for a student), class (hand in work; the teacher's view of many students'
//! files), groups (one adapter per rater group).
//!
//! Around them: `state` (the context every panel shares) and `settings` (the knobs kept between
//! visits), `engine` (the worker started and its events read; `client` is the link itself),
//! `persist` (IndexedDB through `store`), `ahead` (the worker told what Train would start, to
//! score its reference early), `links` (what the page's address asks for), `shell` (the
//! badge, the model bar and the banners), `chart` (the SVG line charts). This file builds the
//! context and lays out the tabs.

mod ahead;
mod chart;
mod class;
mod client;
mod compare;
mod constitution;
mod curriculum;
mod data;
mod distill;
mod documents;
mod engine;
mod ensemble;
mod fields;
mod files;
mod generate;
mod groups;
mod lesson;
mod links;
mod persist;
mod pipeline;
mod probes;
mod prompting;
mod samples;
mod settings;
mod shell;
mod state;
mod step_detail;
mod store;
mod train;
mod train_form;
mod unreadable;

use leptos::prelude::*;

use crate::lab::lesson::{Panel, Readings};
use crate::lab::PolicyKind;
use crate::worker::protocol::*;
use engine::start_engine;
use links::{absolute, confirm_foreign, confirm_foreign_lab, foreign_origin, query};
use persist::persist;
use settings::via_value;
use shell::{BackendBadge, Banners, ModelBar};
pub use engine::load_model;
pub use settings::Settings;
pub use state::*;
pub use crate::lab::shown::{fixed, percent};

/// The default model, copied into `dist/models/` by `scripts/build-web` (scripts/setup fetched it).
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A text box's non-blank lines, trimmed: prompts, answers, one per line.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

pub fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
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
    ahead::score_ahead(ctx);
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
