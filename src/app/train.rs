//! Train in place: choose a method and its knobs (defaults that work, one-line tooltips), start,
//! pause, resume or stop, and watch TRL's metrics as live charts. After every step the policy
//! that Generate and Compare use is the updated one.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::chart::MetricChart;
use super::{Ctx, RunRecord, client, files};
use crate::align::Encoding;
use crate::align::dpo::{DpoConfig, DpoLossType};
use crate::align::kto::KtoConfig;
use crate::align::reward::RewardConfig;
use crate::align::rl::RlConfig;
use crate::align::train::TrainConfig;
use crate::model::LoraConfig;
use crate::worker::protocol::*;

/// The form's state (kept between visits with the other settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub method: String,
    pub loss_type: String,
    pub beta: f64,
    pub label_smoothing: f64,
    pub kto_beta: f64,
    pub rl_reward: String,
    pub rl_k: usize,
    pub rl_beta: f64,
    pub rl_max_new_tokens: usize,
    pub lora: bool,
    pub r: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub learning_rate: f64,
    pub max_steps: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for TrainForm {
    fn default() -> Self {
        Self {
            method: "dpo".into(),
            loss_type: "sigmoid".into(),
            beta: 0.1,
            label_smoothing: 0.0,
            kto_beta: 0.1,
            rl_reward: "judges".into(),
            rl_k: 4,
            rl_beta: 0.04,
            rl_max_new_tokens: 32,
            lora: true,
            r: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            // LoRA adapters want a larger step than TRL's full-fine-tuning default of 1e-6.
            learning_rate: 5e-4,
            max_steps: 20,
            batch_size: 2,
            seed: 42,
        }
    }
}

impl TrainForm {
    fn spec(&self, ctx: &Ctx) -> Result<RunSpec, String> {
        let st = ctx.settings.get_untracked();
        let method = match self.method.as_str() {
            "dpo" => Method::Dpo(DpoConfig {
                beta: self.beta,
                loss_type: self.loss_type.parse::<DpoLossType>().map_err(|e| e.to_string())?,
                label_smoothing: self.label_smoothing,
            }),
            "kto" => Method::Kto(KtoConfig { beta: self.kto_beta, ..Default::default() }),
            "reward" => Method::Reward(RewardConfig::default()),
            "sft" => Method::Sft,
            "rl" => Method::Rl {
                cfg: RlConfig {
                    num_generations: self.rl_k,
                    beta: self.rl_beta,
                    max_new_tokens: self.rl_max_new_tokens,
                    seed: self.seed,
                    ..Default::default()
                },
                reward: if self.rl_reward == "rm" {
                    RewardSource::RewardModel
                } else {
                    RewardSource::Judges(st.judge_specs()?)
                },
            },
            m => return Err(format!("unknown method {m}")),
        };
        if self.beta <= 0.0 || self.kto_beta <= 0.0 {
            return Err("beta must be above 0".into());
        }
        if self.lora && self.targets.is_empty() {
            return Err("choose at least one LoRA target (q, v, …)".into());
        }
        let lora = self.lora.then(|| LoraConfig {
            r: self.r.max(1),
            lora_alpha: self.alpha,
            target_modules: self.targets.clone(),
            seed: self.seed,
            ..Default::default()
        });
        // For RLHF "steps" are rounds of sampling; each makes `num_iterations` optimizer steps.
        let per_step = if let Method::Rl { cfg, .. } = &method { cfg.num_iterations.max(1) } else { 1 };
        let train = TrainConfig {
            learning_rate: self.learning_rate,
            max_steps: self.max_steps.max(1) * per_step,
            per_device_train_batch_size: self.batch_size.max(1),
            seed: self.seed,
            ..Default::default()
        };
        let data = TrainData {
            pairs: ctx.pairs.get_untracked(),
            unpaired: ctx.unpaired.get_untracked(),
            demos: ctx.demos.get_untracked(),
            prompts: ctx.prompts.get_untracked(),
        };
        Ok(RunSpec { method, train, lora, encoding: Encoding { chat: st.chat, max_prompt_length: 128, max_completion_length: 128 }, data })
    }
}

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

#[component]
pub fn TrainPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // The form is part of the saved settings: restored once they are read, saved on every change.
    let form = RwSignal::new(ctx.settings.get_untracked().train);
    Effect::new(move |_| {
        if ctx.restored.get() {
            form.set(ctx.settings.get_untracked().train);
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
    let total = RwSignal::new(0usize);
    let elapsed_ms = RwSignal::new(0.0f64);
    let message = RwSignal::new(None::<String>);
    let adapter_files = RwSignal::new(Vec::<(String, Vec<u8>)>::new());
    let run_id = RwSignal::new(0u64);

    let record = move |st: &str| {
        let id = run_id.get_untracked();
        let f = form.get_untracked();
        let m = metrics.get_untracked();
        let st = st.to_string();
        ctx.runs.update(|runs| {
            let cfg = serde_json::to_string(&f).unwrap_or_default();
            let rec = RunRecord { id, method: f.method.clone(), config: cfg, metrics: m, total_steps: total.get_untracked(), state: st, examples: 0 };
            match runs.iter_mut().find(|r| r.id == id) {
                Some(r) => *r = rec,
                None => runs.push(rec),
            }
        });
    };

    let start = move |_| {
        let spec = match form.get_untracked().spec(&ctx) {
            Ok(s) => s,
            Err(e) => return message.set(Some(e)),
        };
        message.set(None);
        metrics.set(Vec::new());
        elapsed_ms.set(0.0);
        run_id.set(js_sys::Date::now() as u64);
        let id = client::job(move |ev| match ev {
            Event::TrainStarted { total_steps, trainable, examples, .. } => {
                total.set(total_steps);
                state.set("running".into());
                ctx.training.set(true);
                message.set(Some(format!("Training {trainable} parameters on {examples} examples.")));
            }
            Event::Metrics { values, millis, .. } => {
                metrics.update(|m| m.push(values));
                elapsed_ms.set(millis);
                record("running");
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
            }
            Event::Error { .. } => {
                if state.get_untracked() != "running" {
                    job.set(None);
                    state.set("idle".into());
                }
            }
            _ => {}
        });
        job.set(Some(id));
        state.set("starting".into());
        client::send(&Request::Train { job: id, run: spec });
    };
    let control = move |action: RunControl| {
        if let Some(j) = job.get_untracked() {
            if action == RunControl::Resume {
                state.set("running".into());
                ctx.training.set(true);
            }
            client::send(&Request::Control { job: j, action });
        }
    };
    let export_adapter = move |_| {
        let id = client::job(move |ev| {
            if let Event::Adapter { config_json, safetensors, .. } = ev {
                let a = files::download("adapter_config.json", "application/json", config_json.as_bytes());
                let b = files::download("adapter_model.safetensors", "application/octet-stream", &safetensors);
                if let Err(e) = a.and(b) {
                    message.set(Some(format!("Export failed: {e}")));
                }
            }
        });
        client::send(&Request::ExportAdapter { job: id });
    };
    let import_adapter = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        leptos::task::spawn_local(async move {
            let mut got = adapter_files.get_untracked();
            for f in picked {
                match files::read_bytes(&f).await {
                    Ok(b) => got.push((f.name(), b)),
                    Err(e) => return message.set(Some(e)),
                }
            }
            let cfg = got.iter().find(|(n, _)| n.ends_with(".json")).cloned();
            let st = got.iter().find(|(n, _)| n.ends_with(".safetensors")).cloned();
            match (cfg, st) {
                (Some((_, c)), Some((_, s))) => {
                    adapter_files.set(Vec::new());
                    client::send(&Request::ImportAdapter { config_json: String::from_utf8_lossy(&c).into_owned(), safetensors: s });
                    message.set(Some("Adapter imported: Generate now uses it.".into()));
                }
                _ => {
                    adapter_files.set(got);
                    message.set(Some("Now pick the other file (adapter_config.json and adapter_model.safetensors).".into()));
                }
            }
        });
    };

    let eta = move || {
        let n = metrics.get().len();
        let t = total.get();
        if n == 0 || t == 0 {
            return String::new();
        }
        let per = elapsed_ms.get() / n as f64 / 1000.0;
        let last = metrics.get().last().and_then(|m| m.get("loss").copied());
        format!(
            "step {n} of {t} · {per:.2} s/step · about {:.0} s left{}",
            per * (t.saturating_sub(n)) as f64,
            last.map(|l| format!(" · loss {l:.4}")).unwrap_or_default()
        )
    };
    let series = Signal::derive(move || metrics.get());
    let f = move || form.get();
    let set = move |g: fn(&mut TrainForm, String)| move |ev: leptos::ev::Event| form.update(|x| g(x, event_target_value(&ev)));
    let running = move || matches!(state.get().as_str(), "running" | "starting");

    view! {
        <div class="panel train">
            <div class="form">
                <div class="row">
                    <label title="DPO learns from preference pairs; KTO from thumbs up/down; a reward model scores answers; SFT imitates ideal answers; RLHF samples and reinforces what the judges or reward model like.">"Method"
                        <select aria-label="Method" prop:value=move || f().method on:change=set(|x, v| x.method = v)>
                            <option value="dpo">"DPO (preference pairs)"</option>
                            <option value="kto">"KTO (thumbs up/down)"</option>
                            <option value="reward">"Reward model (preference pairs)"</option>
                            <option value="sft">"SFT (ideal answers)"</option>
                            <option value="rl">"RLHF (GRPO on prompts)"</option>
                        </select></label>
                    <span class="muted">{move || match f().method.as_str() {
                        "dpo" | "reward" => format!("{} pairs", ctx.pairs.get().len()),
                        "kto" => format!("{} ratings", ctx.unpaired.get().len()),
                        "sft" => format!("{} ideal answers", ctx.demos.get().len()),
                        _ => format!("{} prompts", if ctx.prompts.get().is_empty() { ctx.pairs.get().len() } else { ctx.prompts.get().len() }),
                    }}</span>
                </div>
                <Show when=move || f().method == "dpo">
                    <div class="row">
                        <label title="sigmoid = the DPO paper; robust tolerates noisy labels; ipo regularises harder; hinge = SLiC.">"Loss type"
                            <select aria-label="Loss type" prop:value=move || f().loss_type on:change=set(|x, v| x.loss_type = v)>
                                <option value="sigmoid">"sigmoid"</option><option value="robust">"robust"</option>
                                <option value="ipo">"ipo"</option><option value="hinge">"hinge"</option>
                            </select></label>
                        <label title="How far the policy may move from the reference: small beta = bolder changes.">"Beta"
                            <input type="number" step="0.05" min="0.01" prop:value=move || f().beta on:change=set(|x, v| x.beta = v.parse().unwrap_or(0.1))/></label>
                        <label title="Assume this fraction of labels is flipped (conservative DPO).">"Label smoothing"
                            <input type="number" step="0.05" min="0" max="0.49" prop:value=move || f().label_smoothing on:change=set(|x, v| x.label_smoothing = v.parse().unwrap_or(0.0))/></label>
                    </div>
                </Show>
                <Show when=move || f().method == "kto">
                    <label title="How far the policy may move from the reference.">"Beta"
                        <input type="number" step="0.05" min="0.01" prop:value=move || f().kto_beta on:change=set(|x, v| x.kto_beta = v.parse().unwrap_or(0.1))/></label>
                </Show>
                <Show when=move || f().method == "rl">
                    <div class="row">
                        <label title="What rewards the samples: the judges (Data tab) or the reward model you trained.">"Reward"
                            <select aria-label="Reward source" prop:value=move || f().rl_reward on:change=set(|x, v| x.rl_reward = v)>
                                <option value="judges">"Judges"</option><option value="rm">"Reward model"</option>
                            </select></label>
                        <label title="Samples per prompt; each is compared with its group's mean reward.">"Samples per prompt"
                            <input type="number" min="2" max="16" prop:value=move || f().rl_k on:change=set(|x, v| x.rl_k = v.parse().unwrap_or(4))/></label>
                        <label title="Penalty on drifting from the reference (KL).">"KL beta"
                            <input type="number" step="0.01" min="0" prop:value=move || f().rl_beta on:change=set(|x, v| x.rl_beta = v.parse().unwrap_or(0.04))/></label>
                        <label title="Longest sampled answer in tokens.">"Max tokens"
                            <input type="number" min="4" max="256" prop:value=move || f().rl_max_new_tokens on:change=set(|x, v| x.rl_max_new_tokens = v.parse().unwrap_or(32))/></label>
                    </div>
                    <super::data::JudgePicker/>
                </Show>
                <div class="row">
                    <label title="LoRA trains two small matrices per layer and leaves the model as it is; full fine-tuning changes every weight (tiny models only).">
                        <input type="checkbox" prop:checked=move || f().lora on:change=move |ev| form.update(|x| x.lora = event_target_checked(&ev))/>"LoRA"</label>
                    <label title="Rank of the adapter matrices: more = more capacity, more memory.">"Rank"
                        <input type="number" min="1" max="128" prop:value=move || f().r on:change=set(|x, v| x.r = v.parse().unwrap_or(8))/></label>
                    <label title="Scale of the adapter's update (alpha / rank).">"Alpha"
                        <input type="number" min="1" prop:value=move || f().alpha on:change=set(|x, v| x.alpha = v.parse().unwrap_or(16.0))/></label>
                    <span title="Which projections get an adapter.">"Targets: "</span>
                    {["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].into_iter().map(|t| view! {
                        <label><input type="checkbox" prop:checked=move || f().targets.iter().any(|x| x == t)
                            on:change=move |ev| form.update(|x| { x.targets.retain(|y| y != t); if event_target_checked(&ev) { x.targets.push(t.into()); } })/>
                            {t.trim_end_matches("_proj")}</label>
                    }).collect_view()}
                </div>
                <div class="row">
                    <label title="Step size of AdamW. Too high and training diverges (the page stops it and keeps the last good weights).">"Learning rate"
                        <input type="number" step="0.0001" min="0" prop:value=move || f().learning_rate on:change=set(|x, v| x.learning_rate = v.parse().unwrap_or(5e-4))/></label>
                    <label title="Optimizer steps (for RLHF: rounds, each sampling fresh answers and taking 2 optimizer steps on them).">"Steps"
                        <input type="number" min="1" max="10000" prop:value=move || f().max_steps on:change=set(|x, v| x.max_steps = v.parse().unwrap_or(20))/></label>
                    <label title="Examples per step: larger is steadier and slower.">"Batch size"
                        <input type="number" min="1" max="64" prop:value=move || f().batch_size on:change=set(|x, v| x.batch_size = v.parse().unwrap_or(2))/></label>
                    <label title="Same seed + same data = the same run.">"Seed"
                        <input type="number" min="0" prop:value=move || f().seed on:change=set(|x, v| x.seed = v.parse().unwrap_or(42))/></label>
                </div>
                <div class="row">
                    <button class="primary" disabled=move || ctx.model.get().is_none() || job.get().is_some() on:click=start>"Train"</button>
                    <button disabled=move || state.get() != "running" on:click=move |_| control(RunControl::Pause)>"Pause"</button>
                    <button disabled=move || state.get() != "paused" on:click=move |_| control(RunControl::Resume)>"Resume"</button>
                    <button disabled=move || job.get().is_none() on:click=move |_| control(RunControl::Stop)>"Stop"</button>
                    <span class="status" role="status" aria-label="Training status">{move || format!("{} {}", state.get(), eta())}</span>
                </div>
                <Show when=move || { running() && total.get() > 0 }>
                    <progress aria-label="Training progress" max=move || total.get() value=move || metrics.get().len()></progress>
                </Show>
                <p class="notice" aria-live="polite">{move || message.get()}</p>
            </div>
            <div class="charts">
                <MetricChart title="loss" series=vec!["loss"] metrics=series/>
                <MetricChart title="rewards" series=vec!["rewards/chosen", "rewards/rejected"] metrics=series/>
                <MetricChart title="margins" series=vec!["rewards/margins", "margin"] metrics=series/>
                <MetricChart title="accuracy" series=vec!["rewards/accuracies", "accuracy", "mean_token_accuracy"] metrics=series/>
                <MetricChart title="KL" series=vec!["kl"] metrics=series/>
                <MetricChart title="reward" series=vec!["reward"] metrics=series/>
            </div>
            <div class="row">
                <span>{move || format!("Policy: {}", ctx.policy.get().1)}</span>
                <button disabled=move || !ctx.policy.get().0 on:click=export_adapter>"Export adapter"</button>
                <label class="file">"Import adapter "<input type="file" multiple accept=".json,.safetensors" aria-label="Import adapter" on:change=import_adapter/></label>
                <button disabled=move || !ctx.policy.get().0 || job.get().is_some() on:click=move |_| {
                    client::send(&Request::ResetAdapter);
                    ctx.adapter.set(None);
                }>"Reset to base model"</button>
            </div>
            <h2>"Runs"</h2>
            <table aria-label="Runs">
                <thead><tr><th>"Method"</th><th>"Steps"</th><th>"First → last loss"</th><th>"State"</th><th></th></tr></thead>
                <tbody>{move || ctx.runs.get().into_iter().rev().map(|r| {
                    let first = r.metrics.first().and_then(|m| m.get("loss").copied());
                    let last = r.metrics.last().and_then(|m| m.get("loss").copied());
                    let m = r.metrics.clone();
                    let name = format!("{}-{}.csv", r.method, r.id);
                    view! { <tr>
                        <td>{r.method.to_uppercase()}</td><td>{format!("{} / {}", r.metrics.len(), r.total_steps)}</td>
                        <td>{match (first, last) { (Some(a), Some(b)) => format!("{a:.4} → {b:.4}"), _ => "–".into() }}</td>
                        <td>{r.state.clone()}</td>
                        <td><button class="small" on:click=move |_| { let _ = files::download(&name, "text/csv", csv(&m).as_bytes()); }>"Export metrics (CSV)"</button></td>
                    </tr> }
                }).collect_view()}</tbody>
            </table>
        </div>
    }
}
