//! Reward-model ensembles: several reward models trained on the Data tab's pairs (the Train tab's
//! reward-model, LoRA and step settings), differing by seed or by a bootstrap resample; their
//! held-out accuracy alone and combined; answers scored by every member, with the spread that
//! shows where they disagree. RLHF can then use the ensemble as its reward (Train tab). The work
//! is `lab::ensemble`, in the worker; this file sets it up and shows the tables.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::fields::{choice, number};
use super::{Ctx, client, lesson, lines, percent};
use crate::lab::ensemble::{MAX_MEMBERS, mean_spread};
use crate::lab::lesson::{Action, record};
use crate::lab::{MethodKind, RunSettings};
use crate::worker::protocol::*;

const RESAMPLES: [(Resample, &str, &str); 2] = [(Resample::Seeds, "seeds", "different seeds"), (Resample::Bootstrap, "bootstrap", "bootstrap resamples")];

/// What the tab remembers between visits (the members themselves live in the worker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnsembleState {
    pub members: usize,
    pub resample: Resample,
    /// Answers to score, one per line, for the Generate tab's prompt.
    pub answers: String,
    pub report: Option<EnsembleReport>,
    pub scored: Vec<Scored>,
}

impl Default for EnsembleState {
    fn default() -> Self {
        Self {
            members: 3,
            resample: Resample::Seeds,
            answers: "Thank you so much, that is really kind of you!\nI'm sorry, I can't help with that.\nfor (i = 0; i < n; i++) { x += y[i]; }\nasdf qwerty zxcv uiop".into(),
            report: None,
            scored: Vec::new(),
        }
    }
}

fn report_table(r: &EnsembleReport) -> impl IntoView + use<> {
    let members = r.members.iter().enumerate().map(|(k, a)| view! { <tr><th>{format!("member {}", k + 1)}</th><td>{percent(*a)}</td></tr> }).collect_view();
    let combined = r.combined.iter().map(|(c, a)| view! { <tr class="combined"><th>{format!("ensemble: {}", c.name())}</th><td>{percent(*a)}</td></tr> }).collect_view();
    view! {
        <table class="narrow" aria-label="Ensemble accuracy">
            <thead><tr><th>"Reward"</th><th>{format!("Held-out accuracy ({} pairs)", r.pairs)}</th></tr></thead>
            <tbody>{members}{combined}</tbody>
        </table>
    }
}

fn scored_table(scored: &[Scored]) -> impl IntoView + use<> {
    let k = scored.first().map_or(0, |s| s.members.len());
    let head = (1..=k).map(|i| view! { <th>{format!("member {i}")}</th> }).collect_view();
    let rows = scored.iter().map(|s| view! {
        <tr><td>{s.completion.clone()}</td>
            {s.members.iter().map(|m| view! { <td>{format!("{m:+.2}")}</td> }).collect_view()}
            <td><strong>{format!("{:+.2}", s.mean)}</strong></td><td>{format!("{:.2}", s.spread)}</td></tr>
    }).collect_view();
    view! {
        <table aria-label="Ensemble scores">
            <thead><tr><th>"Answer"</th>{head}<th>"Mean"</th><th title="The members' standard deviation: how much they disagree">"Spread"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
pub fn EnsemblePanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.ensemble;
    let job = RwSignal::new(None::<JobId>);
    let status = RwSignal::new(String::new());

    let train = move || {
        let s = ctx.settings.get_untracked();
        // The Train tab's reward-model, LoRA and step settings, whatever method it shows.
        let settings = RunSettings { method: MethodKind::Reward, ..s.train.clone() };
        let run = settings.spec(Vec::new(), s.encoding(), TrainData { pairs: lesson::data_for(ctx, Action::Ensemble).pairs, ..Default::default() });
        let (members, resample) = st.with_untracked(|e| (e.members, e.resample));
        st.update(|e| {
            e.report = None;
            e.scored.clear();
        });
        let id = client::job(move |ev| match ev {
            Event::EnsembleStep { member, members, step, steps, .. } => status.set(format!("Training member {member} of {members}: step {step} of {steps}")),
            Event::EnsembleTrained { report, .. } => {
                let mean = report.combined.first().map(|c| c.1);
                lesson::note(ctx, |r| {
                    record(r, "ensemble/member_accuracy", report.members.iter().sum::<f64>() / report.members.len().max(1) as f64);
                    if let Some(m) = mean {
                        record(r, "ensemble/mean_accuracy", m);
                    }
                    record(r, "ensemble/spread_held_out", report.spread);
                });
                st.update(|e| e.report = Some(report));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                status.set(String::new());
                lesson::finished(ctx, Action::Ensemble);
            }
            _ => {}
        });
        job.set(Some(id));
        status.set(format!("Training {members} reward models…"));
        client::send(&Request::Ensemble { job: id, run, members, resample });
    };
    lesson::on_asked(ctx, Action::Ensemble, train);

    let score = move || {
        let s = ctx.settings.get_untracked();
        let completions: Vec<String> = st.with_untracked(|e| lines(&e.answers));
        let id = client::job(move |ev| match ev {
            Event::EnsembleScored { scored, .. } => {
                let spread = mean_spread(&scored);
                lesson::note(ctx, |r| record(r, "ensemble/spread_answers", spread));
                st.update(|e| e.scored = scored);
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                lesson::finished(ctx, Action::EnsembleScore);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::EnsembleScore { job: id, prompt: s.prompt.clone(), encoding: s.encoding(), completions });
    };
    lesson::on_asked(ctx, Action::EnsembleScore, score);

    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none() && !ctx.training.get();
    let have = move || ctx.ensemble_members.get() >= 2;

    view! {
        <div class="panel ensemble">
            <p class="hint">"One reward model learns one way to read your pairs; another, started from a different seed or shown a resample of the pairs, learns another. Where they agree, trust the reward; where they disagree, the reward is a guess. Train a few on the Data tab's pairs (the Train tab's reward-model settings), then score answers like and unlike the pairs: the spread (the members' standard deviation) is the disagreement. RLHF can use the ensemble as its reward (Train tab, Reward source): 'min' or 'mean − spread' distrust answers the members disagree on, which makes the reward harder to game."</p>
            <div class="row">
                {number(st, "Members", "How many reward models (2 to 8): each trains for the Train tab's steps.", "1", |e| e.members, |e, v| e.members = v.clamp(2, MAX_MEMBERS))}
                {choice(st, "Members differ by", "Different seeds: the same pairs, a new LoRA start, score head and batch order. Bootstrap: also a resample of the pairs, drawn with replacement.", &RESAMPLES, |e| e.resample, |e, v| e.resample = v)}
                <span class="muted">{move || {
                    let data = TrainData { pairs: ctx.pairs.get(), ..TrainData::default() };
                    format!("{} pairs on the Data tab{}", data.pairs.len(), lesson::lesson_note(ctx, &data, |d| d.pairs.len()))
                }}</span>
            </div>
            <div class="row">
                <button class="primary" disabled=move || !idle() on:click=move |_| train()>"Train the ensemble"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            </div>
            <p role="status" aria-label="Ensemble status">{move || status.get()}</p>
            {move || st.with(|e| e.report.as_ref().map(|r| view! {
                {report_table(r)}
                <p aria-label="Held-out spread">{format!("Mean spread on the held-out answers: {:.2}.", r.spread)}</p>
            }))}
            {move || (st.with(|e| e.report.is_some()) && !have()).then(|| view! { <p class="muted">"The members are kept while the page is open: train them again after a reload."</p> })}
            <h2>"Where do they disagree?"</h2>
            <p class="muted">{move || format!("Answers to the Generate tab's prompt, \"{}\", one per line:", ctx.settings.with(|s| s.prompt.clone()))}</p>
            <textarea aria-label="Answers to score" rows="5" prop:value=move || st.with(|e| e.answers.clone()) on:change=move |ev| { let v = event_target_value(&ev); st.update(|e| e.answers = v) }></textarea>
            <div class="row"><button disabled=move || !(idle() && have()) on:click=move |_| score()>"Score the answers"</button></div>
            {move || st.with(|e| (!e.scored.is_empty()).then(|| view! {
                {scored_table(&e.scored)}
                <p aria-label="Answers' spread">{format!("Mean spread on these answers: {:.2}{}", mean_spread(&e.scored),
                    e.report.as_ref().map_or(String::new(), |r| format!(", against {:.2} on the held-out answers.", r.spread)))}</p>
            }))}
        </div>
    }
}
