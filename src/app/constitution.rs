//! Principle-driven self-alignment: the student writes a constitution (critique questions an answer
//! breaking a principle gets a Yes to), the policy answers the prompts, the base model judges each
//! answer against each principle, read from its next token as P(yes), and the best answer by
//! self-score is paired against the worst, into the data, as Auto-label does with judges. The work is
//! `lab::constitution`, in the worker; this file edits the principles and shows the judgements.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, client, lesson};
use crate::lab::constitution::{MAX_PRINCIPLES, Summary, starter_constitution};
use crate::lab::lesson::{Action, record};
use crate::worker::protocol::*;

/// Best against worst, second best against second worst: pairs from each prompt's answers.
const PAIRS_PER_PROMPT: usize = 2;

/// What the tab remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConstitutionState {
    pub principles: Vec<String>,
    /// The last run's judgements, prompt by prompt.
    pub judged: Vec<(String, Vec<Judged>)>,
}

impl Default for ConstitutionState {
    fn default() -> Self {
        Self { principles: starter_constitution().principles, judged: Vec::new() }
    }
}

fn summary(judged: &[(String, Vec<Judged>)]) -> Option<Summary> {
    Summary::of(judged.iter().map(|(_, a)| a.as_slice()))
}

fn judged_table(principles: Vec<String>, judged: Vec<(String, Vec<Judged>)>) -> impl IntoView {
    let head = principles.iter().map(|p| view! { <th title="P(yes): how likely the model thinks the answer breaks this principle">{p.clone()}</th> }).collect_view();
    let rows = judged.into_iter().flat_map(|(prompt, answers)| {
        answers.into_iter().enumerate().map(move |(i, j)| {
            let prompt_cell = (i == 0).then(|| prompt.clone()).unwrap_or_default();
            view! {
                <tr><td class="muted">{prompt_cell}</td><td>{j.text.clone()}</td>
                    {j.by_principle.iter().map(|p| view! { <td>{format!("{p:.2}")}</td> }).collect_view()}
                    <td><strong>{format!("{:.2}", j.self_score)}</strong></td><td>{format!("{:+.2}", j.judges)}</td></tr>
            }
        }).collect::<Vec<_>>()
    }).collect_view();
    view! {
        <table aria-label="Self-judgements">
            <thead><tr><th>"Prompt"</th><th>"Answer"</th>{head}<th>"Self-score"</th><th>"Judges"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
pub fn ConstitutionPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.constitution;
    let job = RwSignal::new(None::<JobId>);
    let status = RwSignal::new(String::new());
    // The Data tab's prompts (a lesson's own when its card asked) when there are any, else the
    // Generate tab's prompt. Untracked: a lesson's action runs inside an effect, which must not
    // re-run (and drop its state) on them.
    let prompts = move || {
        let list = lesson::prompts_for(ctx, Action::SelfLabel);
        if list.is_empty() { vec![ctx.settings.with_untracked(|s| s.prompt.clone())] } else { list }
    };
    let run = move || {
        let constitution = Constitution { principles: st.with_untracked(|s| s.principles.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()) };
        let s = ctx.settings.get_untracked();
        let judges = match s.judge_specs() {
            Ok(j) => j,
            Err(e) => {
                status.set(e);
                lesson::finished(ctx, Action::SelfLabel);
                return;
            }
        };
        let list = prompts();
        st.update(|s| s.judged.clear());
        // A plain counter: a signal made here would belong to the lesson's effect and could be
        // disposed while the job still reports.
        let added = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let id = client::job(move |ev| match ev {
            Event::SelfJudged { prompt, answers, pairs, done, total, .. } => {
                added.set(added.get() + pairs.len());
                ctx.pairs.update(|p| p.extend(pairs));
                st.update(|s| s.judged.push((prompt, answers)));
                status.set(format!("Judged the answers to {done} of {total} prompts: {} pairs added to your data.", added.get()));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                if let Some(sum) = st.with_untracked(|s| summary(&s.judged)) {
                    lesson::note(ctx, |r| {
                        record(r, "constitution/self_score", sum.self_score);
                        record(r, "constitution/judges", sum.judges);
                        if let Some(a) = sum.agreement {
                            record(r, "constitution/agreement", a);
                        }
                    });
                }
                lesson::finished(ctx, Action::SelfLabel);
            }
            _ => {}
        });
        job.set(Some(id));
        let all = ctx.prompts.with_untracked(Vec::len);
        status.set(match list.len() {
            n if n < all => format!("Judging the answers to the lesson's {n} prompts (the Data tab has {all})…"),
            n => format!("Judging the answers to {n} prompts…"),
        });
        client::send(&Request::SelfLabel { job: id, constitution, prompts: list, encoding: s.encoding(), sampling: s.sampling.clone(), judges, pairs_per_prompt: PAIRS_PER_PROMPT });
    };
    lesson::on_asked(ctx, Action::SelfLabel, run);
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none();
    let count = move || st.with(|s| s.principles.len());

    view! {
        <div class="panel constitution">
            <p class="hint">"Write each principle as a question that an answer breaking it gets a Yes to (\"Was that rude?\"). The model answers the prompts, then the base model reads each answer and each question, and its next word is read as a judgement: P(yes), with no text generated. Self-score = 1 − mean P(yes). The best answer to each prompt by self-score is paired against the worst and added to your data, ready for DPO. Phrasing matters to a small judge: try a few."</p>
            <h2>"Constitution"</h2>
            <ol class="principles" aria-label="Principles">{move || (0..count()).map(|i| view! {
                <li><input type="text" aria-label=format!("Principle {}", i + 1) prop:value=move || st.with(|s| s.principles.get(i).cloned().unwrap_or_default())
                    on:change=move |ev| { let v = event_target_value(&ev); st.update(|s| if let Some(p) = s.principles.get_mut(i) { *p = v }) }/>
                    " "<button class="link" aria-label=format!("Remove principle {}", i + 1) disabled=move || { count() <= 1 } on:click=move |_| st.update(|s| { s.principles.remove(i); })>"×"</button></li>
            }).collect_view()}</ol>
            <button disabled=move || { count() >= MAX_PRINCIPLES } on:click=move |_| st.update(|s| s.principles.push(String::new()))>"+ principle"</button>
            <p class="muted">{move || {
                let n = ctx.prompts.with(Vec::len);
                if n == 0 { format!("Prompt: the Generate tab's, \"{}\". Add prompts on the Data tab to judge many.", ctx.settings.with(|s| s.prompt.clone())) } else { format!("Prompts: the Data tab's {n}{}.", lesson::prompts_note(ctx)) }
            }}</p>
            <div class="row">
                <button class="primary" disabled=move || !idle() on:click=move |_| run()>"Judge and label"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            </div>
            <p role="status" aria-label="Self-alignment status">{move || status.get()}</p>
            <p aria-label="Self-judgement summary">{move || st.with(|s| summary(&s.judged)).map(|sum| format!(
                "{} answers: mean self-score {:.2}, mean judge score {:+.2}; the self-judgement orders answer pairs as the judges do {}.",
                sum.answers, sum.self_score, sum.judges,
                sum.agreement.map_or("— (the judges told no two apart)".to_string(), |a| format!("{:.0}% of the time (50% = chance)", 100.0 * a))))}</p>
            {move || st.with(|s| (!s.judged.is_empty()).then(|| judged_table(s.principles.clone(), s.judged.clone())))}
        </div>
    }
}
