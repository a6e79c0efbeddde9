//! The page's frame around the panels: the backend badge, the model bar and the banners.

use leptos::prelude::*;

use super::engine::{load_model, start_engine};
use super::links::absolute;
use super::{files, Banner, Ctx, DEFAULT_MODEL};
use crate::backend::BackendKind;
use crate::worker::protocol::*;

#[component]
pub(super) fn BackendBadge() -> impl IntoView {
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
pub(super) fn ModelBar() -> impl IntoView {
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
pub(super) fn Banners() -> impl IntoView {
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
