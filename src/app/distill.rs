//! Distillation and weak-to-strong. A teacher (the student's own best of N under the judges, a
//! second model loaded here, or the Data tab's ideal answers) answers the Data tab's prompts; the
//! student learns the answers by SFT (the Train tab's LoRA and step settings) and the held-out
//! prompts show how much of the teacher's lead it closed. Then the reverse: a weak critic picks
//! among the model's samples and the judges say how good its picks are. The work is
//! `lab::distill`, in the worker; this file sets it up and shows the results.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::fields::{choice, number};
use super::{Banner, Ctx, client, files, fixed, lesson, lines, percent};
use crate::judges::JudgeSpec;
use crate::lab::distill::TeacherKind;
use crate::lab::lesson::{Action, record};
use crate::lab::{MethodKind, RunSettings};
use crate::worker::protocol::*;

const TEACHERS: [(TeacherKind, &str, &str); 3] = [
    (TeacherKind::BestOfN, "best_of_n", "the model's own best of N (by the judges)"),
    (TeacherKind::Model, "model", "a second model"),
    (TeacherKind::Answers, "answers", "the Data tab's ideal answers"),
];

/// What the tab remembers between visits (a loaded teacher model lives in the worker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistillState {
    pub teacher: TeacherKind,
    pub best_of: usize,
    /// Held-out prompts, one per line: never taught on, only measured.
    pub held_out: String,
    pub report: Option<DistillReport>,
    /// The weak critic: judges as the CLI writes them, comma-separated.
    pub weak: String,
    pub reranked: Vec<Reranked>,
}

impl Default for DistillState {
    fn default() -> Self {
        Self {
            teacher: TeacherKind::BestOfN,
            best_of: 8,
            held_out: "Write a short note to a friend who is sick.\nTell me about your favourite food.\nWhat should I do on a rainy day?".into(),
            report: None,
            weak: "include=thank+love+great+happy".into(),
            reranked: Vec::new(),
        }
    }
}

fn score(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:+.3}"))
}

fn pct(x: Option<f64>) -> String {
    x.map_or("— (no gap)".into(), percent)
}

fn report_view(r: &DistillReport) -> impl IntoView + use<> {
    let row = |name: &'static str, f: fn(&crate::lab::distill::Scores) -> Option<f64>, gap: Option<f64>| {
        (f(&r.before).is_some()).then(|| view! {
            <tr><th>{name}</th><td>{score(f(&r.before))}</td><td>{score(f(&r.after))}</td><td>{score(f(&r.teacher))}</td><td><strong>{pct(gap)}</strong></td></tr>
        })
    };
    let examples = r.examples.iter().map(|e| view! {
        <details><summary>{e.prompt.clone()}</summary>
            <dl><dt>"Teacher"</dt><dd>{e.teacher.clone()}</dd><dt>"Student before"</dt><dd>{e.before.clone()}</dd><dt>"Student after"</dt><dd>{e.after.clone()}</dd></dl>
        </details>
    }).collect_view();
    view! {
        <table class="narrow" aria-label="Distillation">
            <thead><tr><th>"On the held-out prompts"</th><th>"Student before"</th><th>"Student after"</th><th>"Teacher"</th><th>"Gap recovered"</th></tr></thead>
            <tbody>
                {row("Judges' mean score", |s| s.judges, r.recovered_judges)}
                {row("Teacher's log-prob per token", |s| s.teacher_logp, r.recovered_teacher)}
            </tbody>
        </table>
        <p class="muted">{format!("The student learnt from {} of the teacher's answers (added to the Data tab's ideal answers).", r.demos.len())}</p>
        {examples}
    }
}

fn rerank_view(rows: &[Reranked]) -> impl IntoView + use<> {
    let s = RerankSummary::of(rows);
    view! {
        {s.map(|s| view! {
            <table class="narrow" aria-label="Weak-to-strong">
                <thead><tr><th>"Whose pick"</th><th>"The judges' mean score of it"</th></tr></thead>
                <tbody>
                    <tr><th>"No critic (the first sample)"</th><td>{format!("{:+.3}", s.random)}</td></tr>
                    <tr><th>"The weak critic's"</th><td>{format!("{:+.3}", s.weak)}</td></tr>
                    <tr><th>"The judges' own"</th><td>{format!("{:+.3}", s.strong)}</td></tr>
                </tbody>
            </table>
            <p aria-label="Weak-to-strong summary">{format!("The weak critic recovered {} of the gap; its best-vs-worst pairs agree with the judges {}.",
                pct(s.recovered), s.label_accuracy.map_or("— (it told no two answers apart)".into(), |a| format!("{:.0}% of the time ({} pairs)", 100.0 * a, s.pairs)))}</p>
        })}
    }
}

#[component]
pub fn DistillPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.distill;
    let job = RwSignal::new(None::<JobId>);
    let status = RwSignal::new(String::new());
    let teacher_model = RwSignal::new(None::<String>);
    let fail = move |message: String| ctx.banner.set(Some(Banner { kind: ErrorKind::Invalid, message, fatal: false }));

    let distill = move || {
        let s = ctx.settings.get_untracked();
        let judges = match s.judge_specs() {
            Ok(j) => j,
            Err(e) => {
                status.set(e);
                lesson::finished(ctx, Action::Distill);
                return;
            }
        };
        let d = st.get_untracked();
        let teacher = match d.teacher {
            TeacherKind::BestOfN => TeacherChoice::BestOfN { n: d.best_of },
            TeacherKind::Model => TeacherChoice::Model,
            TeacherKind::Answers => TeacherChoice::Answers(ctx.demos.get_untracked()),
        };
        let run = RunSettings { method: MethodKind::Sft, ..s.train.clone() }.spec(Vec::new(), s.encoding(), TrainData::default());
        let prompts = lesson::prompts_for(ctx, Action::Distill);
        let sampling = s.sampling.clone();
        st.update(|d| d.report = None);
        let id = client::job(move |ev| match ev {
            Event::Distilling { progress, .. } => status.set(match progress {
                DistillProgress::Teacher { done, total } => format!("The teacher answered {done} of {total} prompts…"),
                DistillProgress::Measuring { stage } => format!("Measuring the student {stage} learning…"),
                DistillProgress::Step { step, steps, loss } => format!("SFT on the teacher's answers: step {step} of {steps}, loss {}", fixed(loss, 3)),
            }),
            Event::Distilled { report, .. } => {
                lesson::note(ctx, |r| {
                    for (name, v) in [("distill/before", report.before.judges), ("distill/after", report.after.judges), ("distill/teacher", report.teacher.judges), ("distill/recovered", report.recovered_judges)] {
                        if let Some(v) = v {
                            record(r, name, v);
                        }
                    }
                });
                ctx.demos.update(|d| d.extend(report.demos.iter().cloned()));
                st.update(|d| d.report = Some(report));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                status.set(String::new());
                lesson::finished(ctx, Action::Distill);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::Distill { job: id, teacher, judges, run, prompts, eval_prompts: lines(&d.held_out), sampling });
    };
    lesson::on_asked(ctx, Action::Distill, distill);

    let weak_to_strong = move || {
        let s = ctx.settings.get_untracked();
        let weak: Result<Vec<(JudgeSpec, f64)>, String> =
            st.with_untracked(|d| d.weak.split(',').map(str::trim).filter(|w| !w.is_empty()).map(|w| JudgeSpec::parse_weighted(w).map_err(|e| e.to_string())).collect());
        let (weak, truth) = match (weak, s.judge_specs()) {
            (Ok(w), Ok(t)) => (w, t),
            (Err(e), _) | (_, Err(e)) => {
                status.set(e);
                lesson::finished(ctx, Action::WeakToStrong);
                return;
            }
        };
        let prompts = lesson::prompts_for(ctx, Action::WeakToStrong);
        st.update(|d| d.reranked.clear());
        let id = client::job(move |ev| match ev {
            Event::Reranked { row, done, total, .. } => {
                status.set(format!("Reranked the samples of {done} of {total} prompts…"));
                st.update(|d| d.reranked.push(row));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                status.set(String::new());
                if let Some(s) = st.with_untracked(|d| RerankSummary::of(&d.reranked)) {
                    lesson::note(ctx, |r| {
                        if let Some(g) = s.recovered {
                            record(r, "weak_to_strong/recovered", g);
                        }
                        if let Some(a) = s.label_accuracy {
                            record(r, "weak_to_strong/label_accuracy", a);
                        }
                    });
                }
                lesson::finished(ctx, Action::WeakToStrong);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::WeakToStrong { job: id, prompts, encoding: s.encoding(), sampling: s.sampling.clone(), weak, truth });
    };
    lesson::on_asked(ctx, Action::WeakToStrong, weak_to_strong);

    let load_teacher = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        if picked.is_empty() {
            return;
        }
        leptos::task::spawn_local(async move {
            let source = match files::model_source(&picked).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            status.set("Loading the teacher…".into());
            let id = client::job(move |ev| match ev {
                Event::TeacherReady { name, parameters, .. } => teacher_model.set(Some(format!("{name} ({:.1}M parameters)", parameters as f64 / 1e6))),
                Event::Done { .. } | Event::Error { .. } => {
                    job.set(None);
                    status.set(String::new());
                }
                _ => {}
            });
            job.set(Some(id));
            client::send(&Request::LoadTeacher { job: id, source });
        });
    };
    let add_pairs = move |_| {
        let pairs: Vec<_> = st.with_untracked(|d| d.reranked.iter().flat_map(|r| r.weak_pairs(1)).collect());
        let n = pairs.len();
        ctx.pairs.update(|p| p.extend(pairs));
        ctx.notice.set(Some(format!("{n} pairs labelled by the weak critic added to the Data tab.")));
    };
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none() && !ctx.training.get();
    let is = move |k: TeacherKind| st.with(|d| d.teacher == k);

    view! {
        <div class="panel distill">
            <p class="hint">"Distillation: a teacher answers the Data tab's prompts and the student (the model here) learns its answers by SFT, with the Train tab's LoRA and step settings. The held-out prompts below are never taught on: the student answers them before and after, and the gap recovered is how much of the teacher's lead it closed, (after − before) / (teacher − before). The teacher can be the model itself made stronger at inference time (the best of N samples by the judges), a second model, or answers you wrote."</p>
            <div class="row">
                {choice(st, "Teacher", "Who answers the prompts for the student to learn from.", &TEACHERS, |d| d.teacher, |d, v| d.teacher = v)}
                <Show when=move || is(TeacherKind::BestOfN)>{number(st, "N", "Samples the teacher picks the best of.", "1", |d| d.best_of, |d, v| d.best_of = v.clamp(2, 32))}</Show>
                <Show when=move || is(TeacherKind::Model)>
                    <label title="A .gguf file, or a llama2.c .bin with its tokenizer">"Teacher model "<input type="file" aria-label="Teacher model" multiple on:change=load_teacher/></label>
                    <span class="muted">{move || teacher_model.get().unwrap_or_else(|| "none loaded".into())}</span>
                </Show>
            </div>
            <p class="muted">{move || format!("Prompts taught on: the Data tab's {}{}. Judges: the Generate tab's. Ideal answers on the Data tab: {}.", ctx.prompts.with(Vec::len), lesson::prompts_note(ctx), ctx.demos.with(Vec::len))}</p>
            <label class="wide">"Held-out prompts, one per line"<textarea aria-label="Held-out prompts" rows="3" prop:value=move || st.with(|d| d.held_out.clone())
                on:change=move |ev| { let v = event_target_value(&ev); st.update(|d| d.held_out = v) }></textarea></label>
            <div class="row">
                <button class="primary" disabled=move || !idle() on:click=move |_| distill()>"Distill"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            </div>
            <p role="status" aria-label="Distillation status">{move || status.get()}</p>
            {move || st.with(|d| d.report.as_ref().map(report_view))}
            <h2>"Weak-to-strong"</h2>
            <p class="hint">"The reverse: a weak critic judges a stronger model. It picks the best of the model's samples for each of the Data tab's prompts (the Generate tab's sampling), and the Generate tab's judges, standing in for the truth, score its picks against picking at random and against their own picks. Its best-vs-worst pairs are weak labels a strong model could learn from."</p>
            <label class="wide">"Weak critic (judges, comma-separated)"<input type="text" aria-label="Weak critic" prop:value=move || st.with(|d| d.weak.clone())
                on:change=move |ev| { let v = event_target_value(&ev); st.update(|d| d.weak = v) }/></label>
            <div class="row">
                <button disabled=move || !idle() on:click=move |_| weak_to_strong()>"Rerank with the weak critic"</button>
                <button disabled=move || st.with(|d| d.reranked.is_empty()) || job.get().is_some() on:click=add_pairs>"Add its pairs to the data"</button>
            </div>
            {move || st.with(|d| rerank_view(&d.reranked))}
        </div>
    }
}
