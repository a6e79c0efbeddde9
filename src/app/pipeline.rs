//! A pipeline on the Train tab: the form's settings added as stages one by one (SFT, then a
//! reward model, then RLHF...), run one after another on the policy, each measured on held-out
//! prompts beside the base model, each stage's adapter (or reward model) offered for download.
//! The work is `lab::pipeline`, in the worker; this file lists the stages and shows the table.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, client, files, fixed, lesson, lines};
use crate::lab::lesson::{Action, record};
use crate::lab::pipeline::MAX_STAGES;
use crate::lab::{MethodKind, RewardChoice, RunSettings};
use crate::worker::protocol::*;

/// What the section remembers between visits (the stages' files live until the page closes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineState {
    #[serde(deserialize_with = "super::via_value")]
    pub stages: Vec<RunSettings>,
    /// Held-out prompts, one per line, every stage is measured on.
    pub eval_prompts: String,
    pub reports: Vec<StageReport>,
}

impl Default for PipelineState {
    fn default() -> Self {
        Self {
            stages: Vec::new(),
            eval_prompts: "Write a short note to a friend who is sick.\nTell me about your favourite food.".into(),
            reports: Vec::new(),
        }
    }
}

/// "RLHF: 8 steps, lr 0.0005".
fn describe(s: &RunSettings) -> String {
    let reward = match (s.method, s.rl_reward) {
        (MethodKind::Rl, RewardChoice::Judges) => ", rewarded by the judges",
        (MethodKind::Rl, RewardChoice::RewardModel) => ", rewarded by the reward model",
        (MethodKind::Rl, RewardChoice::Ensemble) => ", rewarded by the ensemble",
        _ => "",
    };
    format!("{}: {} steps, lr {}{reward}", s.method.name(), s.train.max_steps, s.train.learning_rate)
}


fn table(reports: &[StageReport], files: &[Vec<FileOut>]) -> impl IntoView + use<> {
    let rows = reports.iter().enumerate().map(|(i, r)| {
        let e = r.eval.clone();
        let cell = move |f: fn(&crate::lab::EvalReport) -> String| e.as_ref().map_or("—".to_string(), f);
        let loss = r.last.get("loss").map_or(String::new(), |l| fixed(*l, 3));
        let stage_files = files.get(i).cloned().unwrap_or_default();
        let name = format!("stage-{i}-{}", r.method.map_or("base", MethodKind::id));
        view! {
            <tr><th>{r.label.clone()}</th><td>{cell(|e| format!("{:+.3}", e.mean_score))}</td><td>{cell(|e| format!("{:.2}", e.kl))}</td>
                <td>{cell(|e| format!("{:.1}", e.mean_length))}</td><td>{loss}</td>
                <td>{(!stage_files.is_empty()).then(|| view! {
                    <button class="small" on:click=move |_| for f in &stage_files { let _ = files::download(&format!("{name}-{}", f.name), "application/octet-stream", &f.bytes); }>"Download"</button>
                })}</td></tr>
        }
    }).collect_view();
    view! {
        <table aria-label="Pipeline">
            <thead><tr><th>"After"</th><th title="The judges' mean score of the held-out answers">"Judges"</th><th title="Mean KL of the held-out answers to the base model, nats">"KL to base"</th>
                <th title="Mean answer length, tokens">"Length"</th><th title="The stage's last training loss">"Last loss"</th><th>"Snapshot"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
pub fn PipelineSection() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.pipeline;
    let job = RwSignal::new(None::<JobId>);
    let status = RwSignal::new(String::new());
    let files = RwSignal::new(Vec::<Vec<FileOut>>::new());

    let run = move || {
        let s = ctx.settings.get_untracked();
        let judges = match s.judge_specs() {
            Ok(j) => j,
            Err(e) => {
                status.set(e);
                lesson::finished(ctx, Action::Pipeline);
                return;
            }
        };
        let data = lesson::data_for(ctx, Action::Pipeline);
        let (stages, eval_prompts) = st.with_untracked(|p| {
            let stages: Vec<RunSpec> = p.stages.iter().map(|r| r.spec(judges.clone(), s.encoding(), data.clone())).collect();
            (stages, lines(&p.eval_prompts))
        });
        st.update(|p| p.reports.clear());
        files.set(Vec::new());
        let id = client::job(move |ev| match ev {
            Event::PipelineStep { stage, stages, step, steps, .. } => status.set(format!("Stage {stage} of {stages}: step {step} of {steps}")),
            Event::PipelineStage { report, files: f, .. } => {
                let (first, now) = st.with_untracked(|p| (p.reports.first().and_then(|r| r.eval.clone()), report.eval.clone()));
                if let (Some(b), Some(e)) = (first, now) {
                    lesson::note(ctx, |r| {
                        record(r, "pipeline/score", e.mean_score);
                        record(r, "pipeline/gain", e.mean_score - b.mean_score);
                        record(r, "pipeline/kl", e.kl);
                    });
                }
                files.update(|v| v.push(f));
                st.update(|p| p.reports.push(report));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                status.set(String::new());
                lesson::finished(ctx, Action::Pipeline);
            }
            _ => {}
        });
        job.set(Some(id));
        status.set("Measuring the base model…".into());
        client::send(&Request::Pipeline { job: id, stages, eval_prompts, encoding: s.encoding(), sampling: s.sampling.clone(), judges });
    };
    lesson::on_asked(ctx, Action::Pipeline, run);
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none() && !ctx.training.get();
    let count = move || st.with(|p| p.stages.len());

    view! {
        <section class="pipeline" aria-label="Pipeline">
            <h2>"Pipeline"</h2>
            <p class="hint">"Stages run one after another on the model, each taking up the adapter the one before trained: SFT on ideal answers, then a reward model on your pairs, then RLHF against it, for example. Set the form above for a stage and add it; then set it for the next. After each stage the model answers the held-out prompts below: the judges' score and the KL to the base model show what each stage added."</p>
            <ol aria-label="Stages">{move || st.with(|p| p.stages.iter().enumerate().map(|(i, s)| view! {
                <li>{describe(s)}" "<button class="link" aria-label=format!("Remove stage {}", i + 1) on:click=move |_| st.update(|p| { if i < p.stages.len() { p.stages.remove(i); } })>"×"</button></li>
            }).collect_view())}</ol>
            <div class="row">
                <button disabled=move || { count() >= MAX_STAGES } on:click=move |_| { let s = ctx.settings.with_untracked(|s| s.train.clone()); st.update(|p| p.stages.push(s)) }>"Add the form as a stage"</button>
            </div>
            <label class="wide">"Held-out prompts, one per line"<textarea aria-label="Pipeline held-out prompts" rows="2" prop:value=move || st.with(|p| p.eval_prompts.clone())
                on:change=move |ev| { let v = event_target_value(&ev); st.update(|p| p.eval_prompts = v) }></textarea></label>
            <div class="row">
                <button class="primary" disabled=move || !idle() || count() == 0 on:click=move |_| run()>"Run the pipeline"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
                <span role="status" aria-label="Pipeline status">{move || status.get()}</span>
            </div>
            {move || st.with(|p| (!p.reports.is_empty()).then(|| table(&p.reports, &files.get())))}
        </section>
    }
}
