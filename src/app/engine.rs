//! The engine's worker as the page sees it: started (again after a crash), asked to load a model,
//! and its events turned into the page's state.

use leptos::prelude::*;

use super::links::absolute;
use super::{client, Banner, BackendInfo, Ctx, LoadProgress, SavedAdapter};
use crate::lab::PolicyKind;
use crate::worker::protocol::*;

/// Opens the device and loads the model in a fresh worker (on start, and after a crash).
pub(super) fn start_engine(ctx: Ctx) {
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
        Event::TrainingWarmed { ms, .. } => ctx.model.update(|m| {
            if let Some(m) = m {
                m.training_warm_up_ms = Some(ms);
            }
        }),
        Event::WeightsMade { ms, .. } => ctx.model.update(|m| {
            if let Some(m) = m {
                m.weights_made_ms = Some(ms);
            }
        }),
        Event::ReferenceScored { pairs, ms } => ctx.model.update(|m| {
            if let Some(m) = m {
                m.scored_ahead = Some((pairs, ms));
            }
        }),
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

/// Sends the kept adapter and reward model back to the worker when they were made on `model` and
/// the worker does not hold them yet, and says what came back (the model may be ready before or
/// after the database answers: both paths come here).
pub(super) fn restore_saved(ctx: Ctx, model: &str) {
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
