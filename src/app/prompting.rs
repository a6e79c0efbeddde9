//! Prompting as alignment: the Generate tab's prompt asked under variants the student writes
//! (system prompt, examples as earlier turns, an instruction), same seed, side by side with their
//! judge and reward-model scores, length, and how likely a reference answer is under each. The
//! work is `lab::prompting`; this file edits the variants and shows the results.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, client, lesson};
use crate::lab::lesson::{Action, record};
use crate::lab::prompting::{MAX_SHOTS, MAX_VARIANTS, starter_variants};
use crate::worker::protocol::*;

/// What the tab remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptingState {
    pub variants: Vec<Variant>,
    /// An answer whose log-probability each variant is measured by (empty: not measured).
    pub reference: String,
}

impl Default for PromptingState {
    fn default() -> Self {
        Self { variants: starter_variants(), reference: String::new() }
    }
}

/// The lesson's readings: the best variant's judge score, and how much the best variant raises the
/// reference answer's log-prob per token over the first.
fn readings(ctx: Ctx, results: &[Option<VariantResult>]) {
    let done: Vec<&VariantResult> = results.iter().flatten().collect();
    let best = done.iter().map(|r| r.judges).fold(f64::NEG_INFINITY, f64::max);
    let lps: Vec<f64> = done.iter().filter_map(|r| r.reference_logp_per_token).collect();
    lesson::note(ctx, |r| {
        if best.is_finite() {
            record(r, "variants/best", best);
        }
        if let (Some(first), Some(max)) = (lps.first(), lps.iter().copied().reduce(f64::max)) {
            record(r, "variants/reference_gain", max - first);
        }
    });
}

/// One variant's editor. Fields write straight into the state; only adding or removing a variant or
/// an example re-renders the editors (so typing keeps its focus).
fn editor(st: RwSignal<PromptingState>, i: usize, shots: usize) -> impl IntoView {
    let field = move |get: fn(&Variant) -> &String| move || st.with(|s| s.variants.get(i).map(|v| get(v).clone()).unwrap_or_default());
    let edit = move |set: fn(&mut Variant, String)| move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        st.update(|s| {
            if let Some(x) = s.variants.get_mut(i) {
                set(x, v)
            }
        })
    };
    let shot_edit = move |j: usize, assistant: bool| move |ev: leptos::ev::Event| {
        let v = event_target_value(&ev);
        st.update(|s| {
            if let Some(shot) = s.variants.get_mut(i).and_then(|x| x.shots.get_mut(j)) {
                if assistant { shot.assistant = v } else { shot.user = v }
            }
        })
    };
    let shot_text = move |j: usize, assistant: bool| move || {
        st.with(|s| s.variants.get(i).and_then(|v| v.shots.get(j)).map(|x| if assistant { x.assistant.clone() } else { x.user.clone() }).unwrap_or_default())
    };
    view! {
        <fieldset class="variant" aria-label=format!("Variant {}", i + 1)>
            <legend>{format!("Variant {}", i + 1)}</legend>
            <div class="row">
                <label>"Name " <input type="text" aria-label="Variant name" prop:value=field(|v| &v.name) on:input=edit(|v, x| v.name = x)/></label>
                <button class="link" aria-label=format!("Remove variant {}", i + 1) on:click=move |_| st.update(|s| { s.variants.remove(i); })>"Remove"</button>
            </div>
            <label class="wide">"System prompt (empty: the model's default)"
                <textarea rows="2" aria-label="System prompt" prop:value=field(|v| &v.system) on:input=edit(|v, x| v.system = x)></textarea></label>
            {(0..shots).map(|j| view! {
                <div class="shot" role="group" aria-label=format!("Example {}", j + 1)>
                    <label>{format!("Example {} asks", j + 1)}<textarea rows="1" aria-label="Example question" prop:value=shot_text(j, false) on:input=shot_edit(j, false)></textarea></label>
                    <label>"and the answer is"<textarea rows="2" aria-label="Example answer" prop:value=shot_text(j, true) on:input=shot_edit(j, true)></textarea></label>
                    <button class="link" on:click=move |_| st.update(|s| { if let Some(v) = s.variants.get_mut(i) { v.shots.remove(j); } })>"Remove example"</button>
                </div>
            }).collect_view()}
            <button class="link" disabled={shots >= MAX_SHOTS} on:click=move |_| st.update(|s| {
                if let Some(v) = s.variants.get_mut(i) { v.shots.push(Shot::default()) }
            })>"+ example"</button>
            <label class="wide">"Instruction after the question (e.g. \"Think step by step.\")"
                <input type="text" aria-label="Instruction" prop:value=field(|v| &v.instruction) on:input=edit(|v, x| v.instruction = x)/></label>
        </fieldset>
    }
}

#[component]
pub fn PromptingPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.prompting;
    let results = RwSignal::new(Vec::<Option<VariantResult>>::new());
    let job = RwSignal::new(None::<JobId>);
    let shape = Memo::new(move |_| st.with(|s| s.variants.iter().map(|v| v.shots.len()).collect::<Vec<_>>()));

    let run = move || {
        let s = st.get_untracked();
        let settings = ctx.settings.get_untracked();
        results.set(vec![None; s.variants.len()]);
        let id = client::job(move |ev| match ev {
            Event::VariantTried { index, result, .. } => results.update(|r| {
                if let Some(slot) = r.get_mut(index) {
                    *slot = Some(result)
                }
            }),
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                readings(ctx, &results.get_untracked());
                lesson::finished(ctx, Action::Variants);
            }
            _ => {}
        });
        job.set(Some(id));
        let reference = Some(s.reference.clone()).filter(|r| !r.trim().is_empty());
        client::send(&Request::Variants {
            job: id,
            question: settings.prompt.clone(),
            encoding: settings.encoding(),
            sampling: settings.sampling.clone(),
            variants: s.variants,
            reference,
            judges: settings.judge_specs().unwrap_or_default(),
        });
    };
    lesson::on_asked(ctx, Action::Variants, run);
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let best = Memo::new(move |_| {
        results.with(|r| r.iter().enumerate().filter_map(|(i, x)| x.as_ref().map(|x| (i, x.judges))).max_by(|a, b| a.1.total_cmp(&b.1)).map(|b| b.0))
    });
    let card = move |i: usize| {
        let r = move || results.with(|r| r.get(i).cloned().flatten());
        let name = move || st.with(|s| s.variants.get(i).map(|v| v.name.clone()).unwrap_or_default());
        view! {
            <article class="card" class:best=move || best.get() == Some(i) aria-label=move || format!("Answer under {}", name())>
                <header><strong>{name}</strong><Show when=move || best.get() == Some(i)><span class="best-mark">"best judge score"</span></Show><span class="muted">{move || r().map(|r| format!("{} prompt tokens", r.prompt_tokens))}</span></header>
                <p class="sample-text">{move || r().map(|r| r.text).unwrap_or_else(|| if job.get().is_some() { "…".into() } else { String::new() })}</p>
                <p class="score">{move || r().map(|r| {
                    let mut parts = vec![format!("judges {:+.3}", r.judges), format!("{} words", r.words)];
                    parts.extend(r.reward_model.map(|x| format!("reward model {x:+.3}")));
                    parts.extend(r.reference_logp_per_token.map(|x| format!("reference answer {x:.3} nats/token")));
                    parts.join(" · ")
                })}</p>
            </article>
        }
    };

    view! {
        <div class="panel prompting">
            <p class="hint">"The cheapest alignment changes no weights: it changes what the model reads. The same question and seed go through each variant; the judges (switched on in Generate) score each answer as an answer to the bare question."</p>
            <label class="wide">"Question (the Generate tab's prompt)"
                <textarea rows="2" aria-label="Question" prop:value=move || ctx.settings.with(|s| s.prompt.clone())
                    on:input=move |ev| ctx.settings.update(|s| s.prompt = event_target_value(&ev))></textarea></label>
            <label class="wide">"Reference answer (optional): how likely each variant makes it"
                <textarea rows="2" aria-label="Reference answer" prop:value=move || st.with(|s| s.reference.clone())
                    on:input=move |ev| st.update(|s| s.reference = event_target_value(&ev))></textarea></label>
            <div class="variants">{move || shape.get().into_iter().enumerate().map(|(i, n)| editor(st, i, n)).collect_view()}</div>
            <div class="row">
                <button disabled=move || st.with(|s| s.variants.len() >= MAX_VARIANTS)
                    on:click=move |_| st.update(|s| s.variants.push(Variant { name: format!("variant {}", s.variants.len() + 1), ..Default::default() }))>"+ variant"</button>
                <button on:click=move |_| st.set(PromptingState { reference: st.get_untracked().reference, ..Default::default() })>"Back to the four starters"</button>
                <button class="primary" disabled=move || ctx.model.get().is_none() || job.get().is_some() || st.with(|s| s.variants.is_empty()) on:click=move |_| run()>"Try the variants"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            </div>
            <div class="cards" role="list" aria-label="Variant answers">{move || (0..results.with(Vec::len)).map(card).collect_view()}</div>
        </div>
    }
}
