//! The page's records kept in IndexedDB: restored on open, saved on every change.

use leptos::prelude::*;
use serde::Serialize;

use super::engine::restore_saved;
use super::{store, Ctx, StorageProblem};

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

/// Loads what the last visit saved, then saves every change.
pub(super) fn persist(ctx: Ctx) {
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
