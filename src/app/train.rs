//! Train in place: start, pause, resume or stop a run of the form's method, and watch TRL's
//! metrics as live charts, with the held-out numbers beside them. After every step the policy
//! that Generate and Compare use is the updated one. Adapters, reward models and merged models
//! go out as files and come back in.

use std::collections::BTreeMap;

use leptos::prelude::*;

use super::chart::MetricChart;
use super::step_detail::StepPicture;
use super::train_form::TrainForm;
use super::{Ctx, RunRecord, client, files, fixed, lesson};
use crate::lab::lesson::{Action, record_run};
use crate::align::Encoding;
use crate::lab::{AdapterFrom, MethodKind, PolicyKind, RunSpec, TrainData};
use crate::worker::protocol::*;

fn csv(metrics: &[BTreeMap<String, f64>]) -> String {
    let mut keys: Vec<&String> = metrics.iter().flat_map(|m| m.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
    out.push('\n');
    for m in metrics {
        out.push_str(&keys.iter().map(|k| m.get(*k).map(|v| v.to_string()).unwrap_or_default()).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// The run the form describes, on `data`, encoded as Generate encodes.
pub(super) fn spec(ctx: Ctx, data: TrainData) -> Result<RunSpec, String> {
    let st = ctx.settings.get_untracked();
    let judges = st.judge_specs()?;
    let encoding = Encoding { chat: st.chat, system: st.system.clone(), ..Encoding::default() };
    let spec = st.train.spec(judges, encoding, data);
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The newest value of each held-out metric, for the line under the controls.
fn held_out_line(metrics: &[BTreeMap<String, f64>]) -> Option<String> {
    let last = metrics.iter().rev().find(|m| m.keys().any(|k| k.starts_with("eval/")))?;
    let parts: Vec<String> = last
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("eval/").map(|k| format!("{} {}", k.replace("rewards/", ""), fixed(*v, 3))))
        .collect();
    Some(format!("Held-out (step {}): {}", last.get("step").copied().unwrap_or(0.0), parts.join(" · ")))
}

#[component]
pub fn TrainPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // The form is part of the saved settings: restored once they are read, saved on every change.
    let form = RwSignal::new(ctx.settings.get_untracked().train);
    // A lesson (or the restore) changes the saved settings: the form follows.
    Effect::new(move |_| {
        if ctx.restored.get() {
            let saved = ctx.settings.with(|s| s.train.clone());
            if form.get_untracked() != saved {
                form.set(saved);
            }
        }
    });
    Effect::new(move |_| {
        let f = form.get();
        if ctx.restored.get_untracked() && ctx.settings.get_untracked().train != f {
            ctx.settings.update(|s| s.train = f);
        }
    });
    let job = RwSignal::new(None::<JobId>);
    let state = RwSignal::new(String::from("idle"));
    let metrics = RwSignal::new(Vec::<BTreeMap<String, f64>>::new());
    let detail = RwSignal::new(None::<StepDetail>);
    let total = RwSignal::new(0usize);
    let elapsed_ms = RwSignal::new(0.0f64);
    let message = RwSignal::new(None::<String>);
    let run_id = RwSignal::new(0u64);
    // When the running run's record was last written (ms since the epoch).
    let recorded_at = StoredValue::new(0.0f64);
    let method = RwSignal::new(MethodKind::Dpo);

    let record = move |st: &str| {
        let (id, m, st) = (run_id.get_untracked(), metrics.get_untracked(), st.to_string());
        let config = serde_json::to_string(&ctx.settings.get_untracked().train).unwrap_or_default();
        ctx.runs.update(|runs| {
            let rec = RunRecord { id, method: method.get_untracked().id().into(), config, metrics: m, total_steps: total.get_untracked(), state: st, examples: 0 };
            match runs.iter_mut().find(|r| r.id == id) {
                Some(r) => *r = rec,
                None => runs.push(rec),
            }
        });
    };
    let on_event = move |ev: Event| match ev {
        Event::TrainStarted { total_steps, trainable, examples, held_out, .. } => {
            total.set(total_steps);
            state.set("running".into());
            ctx.training.set(true);
            let held = if held_out > 0 { format!(" ({held_out} more held out)") } else { String::new() };
            let plural = if examples == 1 { "" } else { "s" };
            message.set(Some(format!("Training {trainable} parameters on {examples} example{plural}{held}.")));
        }
        Event::Metrics { values, millis, detail: d, .. } => {
            metrics.update(|m| m.push(values));
            detail.set(d);
            metrics.with_untracked(|m| lesson::note(ctx, |r| record_run(r, m)));
            elapsed_ms.set(millis);
            // The run's record (kept in IndexedDB) follows a running run once a second: writing
            // every step's whole history at every step kept the page from answering.
            let now = js_sys::Date::now();
            if now - recorded_at.get_value() >= 1000.0 {
                recorded_at.set_value(now);
                record("running");
            }
        }
        Event::TrainEnded { state: s, message: m, .. } => {
            let st = match s {
                RunState::Finished => "finished",
                RunState::Paused => "paused",
                RunState::Stopped => "stopped",
                RunState::Failed => "failed",
            };
            state.set(st.into());
            if s != RunState::Paused {
                job.set(None);
            }
            ctx.training.set(false);
            if let Some(m) = m {
                message.set(Some(m));
            }
            record(st);
            lesson::finished(ctx, Action::Train);
        }
        Event::Error { .. } if state.get_untracked() != "running" => {
            job.set(None);
            state.set("idle".into());
            lesson::finished(ctx, Action::Train);
        }
        _ => {}
    };
    let start = move || {
        let spec = match spec(ctx, lesson::data_for(ctx, Action::Train)) {
            Ok(s) => s,
            Err(e) => {
                message.set(Some(e));
                return lesson::finished(ctx, Action::Train);
            }
        };
        message.set(None);
        metrics.set(Vec::new());
        detail.set(None);
        elapsed_ms.set(0.0);
        run_id.set(js_sys::Date::now() as u64);
        method.set(spec.method.kind());
        let id = client::job(on_event);
        job.set(Some(id));
        state.set("starting".into());
        client::send(&Request::Train { job: id, run: spec });
    };
    lesson::on_asked(ctx, Action::Train, start);
    let control = move |action: RunControl| {
        if let Some(j) = job.get_untracked() {
            if action == RunControl::Resume {
                state.set("running".into());
                ctx.training.set(true);
            }
            client::send(&Request::Control { job: j, action });
        }
    };

    let eta = move || {
        let (n, t) = (metrics.with(Vec::len), total.get());
        if n == 0 || t == 0 {
            return String::new();
        }
        let per = elapsed_ms.get() / n as f64 / 1000.0;
        let last = metrics.with(|m| m.last().and_then(|m| m.get("loss").copied()));
        format!(
            "step {n} of {t} · {per:.2} s/step · about {:.0} s left{}",
            per * (t.saturating_sub(n)) as f64,
            last.map(|l| format!(" · loss {}", fixed(l, 4))).unwrap_or_default()
        )
    };
    let running = move || matches!(state.get().as_str(), "running" | "starting");

    view! {
        <div class="panel train">
            <div class="form">
                <TrainForm form=form/>
                <div class="row">
                    <button class="primary" disabled=move || ctx.model.get().is_none() || job.get().is_some() on:click=move |_| start()>"Train"</button>
                    <button disabled=move || state.get() != "running" on:click=move |_| control(RunControl::Pause)>"Pause"</button>
                    <button disabled=move || state.get() != "paused" on:click=move |_| control(RunControl::Resume)>"Resume"</button>
                    <button disabled=move || job.get().is_none() on:click=move |_| control(RunControl::Stop)>"Stop"</button>
                    <span class="status" role="status" aria-label="Training status">{move || format!("{} {}", state.get(), eta())}</span>
                </div>
                <Show when=move || { running() && total.get() > 0 }>
                    <progress aria-label="Training progress" max=move || total.get() value=move || metrics.with(Vec::len)></progress>
                </Show>
                <p class="notice" aria-live="polite">{move || message.get()}</p>
                <p class="held-out" aria-label="Held-out metrics">{move || metrics.with(|m| held_out_line(m))}</p>
            </div>
            <Charts metrics=metrics.into() detail=detail.into()/>
            <super::pipeline::PipelineSection/>
            <Artifacts busy=Signal::derive(move || job.get().is_some()) message=message/>
            <RunsTable/>
        </div>
    }
}

/// Drops the policy's adapter (or fine-tuned weights) in the worker and in the page's keeping, so
/// the next run starts from the base model (the worker takes requests in order).
pub(super) fn reset_to_base(ctx: Ctx) {
    client::send(&Request::ResetAdapter);
    ctx.adapter.set(None);
    ctx.weights.set(None);
}

/// TRL's metrics as live charts, held-out ones beside the training ones, and the last step
/// example by example.
#[component]
fn Charts(metrics: Signal<Vec<BTreeMap<String, f64>>>, detail: Signal<Option<StepDetail>>) -> impl IntoView {
    let step = Signal::derive(move || metrics.with(Vec::len));
    view! {
        <div class="charts">
            <MetricChart title="loss" unit="loss" metrics=metrics series=vec!["loss", "eval/loss"]
                about="What the optimizer lowers. Dashed: the same on held-out examples it never trains on."/>
            <MetricChart title="rewards" unit="β·log-ratio" metrics=metrics series=vec!["rewards/chosen", "rewards/rejected"]
                about="Implicit rewards: how much more (above 0) or less likely than the reference the policy makes chosen and rejected answers."/>
            <MetricChart title="log-probs" unit="log p" metrics=metrics series=vec!["logps/chosen", "logps/rejected"]
                about="Log-probability of whole answers. Both can fall while the gap grows: DPO only needs rejected to fall faster."/>
            <MetricChart title="margins" unit="margin" metrics=metrics series=vec!["rewards/margins", "margin", "eval/rewards/margins", "eval/margin"]
                about="Chosen minus rejected reward: the gap the method widens."/>
            <MetricChart title="accuracy" unit="share" metrics=metrics series=vec!["rewards/accuracies", "accuracy", "mean_token_accuracy", "eval/rewards/accuracies", "eval/accuracy"]
                about="Share of pairs ranked the right way (SFT: tokens predicted right). 1 on easy pairs comes fast; held-out accuracy is the honest one."/>
            <MetricChart title="KL" unit="KL (nats)" metrics=metrics series=vec!["kl"]
                about="How far the policy has moved from the reference: the leash. Growing KL with little reward gain is a warning."/>
            <MetricChart title="reward" unit="reward" metrics=metrics series=vec!["reward"]
                about="Mean reward of this round's samples, from the judges or the reward model."/>
            <StepPicture detail step/>
        </div>
    }
}

/// One line of the runs table.
struct RunRow {
    id: u64,
    method: String,
    steps: usize,
    total_steps: usize,
    /// First and last loss.
    losses: Option<(f64, f64)>,
    state: String,
}

impl RunRow {
    fn of(r: &RunRecord) -> Self {
        let loss = |m: Option<&BTreeMap<String, f64>>| m.and_then(|m| m.get("loss").copied());
        let losses = loss(r.metrics.first()).zip(loss(r.metrics.last()));
        RunRow { id: r.id, method: r.method.clone(), steps: r.metrics.len(), total_steps: r.total_steps, losses, state: r.state.clone() }
    }
}

/// Every run of this browser, newest first, with its metrics as CSV.
#[component]
fn RunsTable() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <h2>"Runs"</h2>
        <table aria-label="Runs">
            <thead><tr><th>"Method"</th><th>"Steps"</th><th>"First → last loss"</th><th>"State"</th><th></th></tr></thead>
            <tbody>{move || ctx.runs.with(|runs| runs.iter().rev().map(RunRow::of).collect::<Vec<_>>()).into_iter().map(|r| {
                let RunRow { id, method, steps, total_steps, losses, state } = r;
                // The metrics are read when asked for, not copied into every row at every step.
                let name = format!("{method}-{id}.csv");
                let export = move |_| {
                    let body = ctx.runs.with_untracked(|runs| runs.iter().find(|r| r.id == id).map(|r| csv(&r.metrics)));
                    if let Some(body) = body {
                        let _ = files::download(&name, "text/csv", body.as_bytes());
                    }
                };
                view! { <tr>
                    <td>{method.to_uppercase()}</td><td>{format!("{steps} / {total_steps}")}</td>
                    <td>{match losses { Some((a, b)) => format!("{} → {}", fixed(a, 4), fixed(b, 4)), None => "–".into() }}</td>
                    <td>{state}</td>
                    <td><button class="small" on:click=export>"Export metrics (CSV)"</button></td>
                </tr> }
            }).collect_view()}</tbody>
        </table>
    }
}

/// What training made, in and out: the adapter and the reward model (PEFT files), and the policy
/// merged into plain weights (an HF checkpoint).
#[component]
fn Artifacts(busy: Signal<bool>, message: RwSignal<Option<String>>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let picked = RwSignal::new(Vec::<(String, Vec<u8>)>::new());
    // Files that come back for a job are offered as downloads.
    let downloads = move || {
        client::job(move |ev| match ev {
            Event::Files { files: out, .. } => {
                for f in out {
                    if let Err(e) = files::download(&f.name, "application/octet-stream", &f.bytes) {
                        message.set(Some(format!("Export failed: {e}")));
                    }
                }
            }
            Event::Handoff { zip, .. } => match files::download(&zip.name, "application/zip", &zip.bytes) {
                Ok(()) => message.set(Some("TRL hand-off downloaded: unzip it and follow its README (python train_trl.py).".into())),
                Err(e) => message.set(Some(format!("Export failed: {e}"))),
            },
            Event::Error { message: m, .. } => message.set(Some(format!("Export failed: {m}"))),
            _ => {}
        })
    };
    let export = move |what: Artifact| client::send(&Request::Export { job: downloads(), what });
    // The run as the form describes it (method, settings, data) with what was trained.
    let handoff = move |_| match spec(ctx, lesson::data_tab(ctx)) {
        Ok(run) => {
            let base_model = ctx.model_source.get_untracked().map(|s| s.file_name()).unwrap_or_default();
            client::send(&Request::Handoff { job: downloads(), run, base_model });
            message.set(Some("Preparing the TRL hand-off…".into()));
        }
        Err(e) => message.set(Some(format!("Cannot hand off: {e}"))),
    };
    // PEFT's two files may come in one pick or two.
    let import = move |what: Artifact, ev: leptos::ev::Event| {
        let chosen = files::picked(&ev);
        leptos::task::spawn_local(async move {
            let mut got = picked.get_untracked();
            for f in chosen {
                match files::read_bytes(&f, MAX_DOWNLOAD).await {
                    Ok(b) => got.push((f.name(), b)),
                    Err(e) => return message.set(Some(format!("{}: {e}", f.name()))),
                }
            }
            let cfg = got.iter().find(|(n, _)| n.ends_with(".json")).cloned();
            let st = got.iter().find(|(n, _)| n.ends_with(".safetensors")).cloned();
            match (cfg, st) {
                (Some((_, c)), Some((_, s))) => {
                    picked.set(Vec::new());
                    let config_json = String::from_utf8_lossy(&c).into_owned();
                    client::send(&Request::Import { what, config_json, safetensors: s, from: AdapterFrom::File });
                    message.set(Some(match what {
                        Artifact::RewardModel => "Reward model imported: Compare and RLHF now use it.".into(),
                        _ => "Adapter imported: Generate now uses it.".into(),
                    }));
                }
                _ => {
                    picked.set(got);
                    message.set(Some("Now pick the other file (adapter_config.json and adapter_model.safetensors).".into()));
                }
            }
        });
    };
    view! {
        <div class="row">
            <span>{move || format!("Policy: {}", ctx.policy.get().1)}</span>
            <button disabled=move || !matches!(ctx.policy.get().0, PolicyKind::Lora(_)) on:click=move |_| export(Artifact::Adapter)>"Export adapter"</button>
            <label class="file">"Import adapter "<input type="file" multiple accept=".json,.safetensors" aria-label="Import adapter"
                on:change=move |ev| import(Artifact::Adapter, ev)/></label>
            <button title="The policy with its adapter added into the weights, as an HF checkpoint (config.json + model.safetensors) that transformers loads. Large."
                disabled=move || ctx.policy.get().0 == PolicyKind::Base || busy.get() on:click=move |_| export(Artifact::Merged)>"Export merged model"</button>
            <button title="One zip to continue in Hugging Face TRL on a GPU box: your data (split as the run splits it), the adapter, and a script with this form's settings."
                disabled=move || busy.get() on:click=handoff>"Take it further in TRL"</button>
            <button disabled=move || ctx.policy.get().0 == PolicyKind::Base || busy.get() on:click=move |_| reset_to_base(ctx)>"Reset to base model"</button>
        </div>
        <div class="row">
            <span>{move || if ctx.has_reward_model.get() { "Reward model: trained" } else { "Reward model: none yet" }}</span>
            <button disabled=move || !ctx.has_reward_model.get() on:click=move |_| export(Artifact::RewardModel)>"Export reward model"</button>
            <label class="file">"Import reward model "<input type="file" multiple accept=".json,.safetensors" aria-label="Import reward model"
                on:change=move |ev| import(Artifact::RewardModel, ev)/></label>
        </div>
    }
}
