//! Compare the reference (adapters off) with the policy: the same prompt and seed through both,
//! side by side with their judge and reward-model scores; a per-token heatmap of how much more
//! (or less) likely the policy finds each token; and best-of-N with scores.

use leptos::prelude::*;

use super::generate::{Card, run_generation};
use super::{Ctx, client, lesson};
use crate::lab::lesson::{Action, record};
use crate::worker::protocol::*;

/// Scores `texts` with the judges (and the reward model when one was trained), then `on_scores`.
pub(super) fn judge(ctx: Ctx, prompt: String, texts: Vec<String>, on_scores: impl Fn(Vec<f64>, Option<Vec<f64>>) + 'static) {
    let st = ctx.settings.get_untracked();
    let judges = st.judge_specs().unwrap_or_default();
    let id = client::job(move |ev| {
        if let Event::Judged { judges, reward_model, .. } = ev {
            on_scores(judges, reward_model);
        }
    });
    client::send(&Request::Judge { job: id, prompt, encoding: st.encoding(), completions: texts, judges });
}

/// The mean of `v` (0 when empty).
pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Colour of a log-prob change: blue where the policy likes a token more, red where less.
fn heat(delta: f32) -> String {
    let a = (delta.abs() / 2.0).min(1.0) * 0.85;
    if delta >= 0.0 { format!("rgba(37, 99, 235, {a:.2})") } else { format!("rgba(220, 38, 38, {a:.2})") }
}

#[component]
pub fn ComparePanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = ctx.settings;
    let prompt = RwSignal::new(String::new());
    let reference = RwSignal::new(Vec::<Card>::new());
    let policy = RwSignal::new(Vec::<Card>::new());
    let ref_job = RwSignal::new(None::<JobId>);
    let pol_job = RwSignal::new(None::<JobId>);
    let stats = RwSignal::new(None::<String>);
    let stats2 = RwSignal::new(None::<String>);
    let scores = RwSignal::new(None::<(Vec<f64>, Option<Vec<f64>>)>);
    let heat_text = RwSignal::new(String::new());
    let heatmap = RwSignal::new(None::<(Vec<String>, Vec<f32>, Vec<f32>)>);
    let best = RwSignal::new(Vec::<Card>::new());
    let best_job = RwSignal::new(None::<JobId>);
    let best_scores = RwSignal::new(None::<(Vec<f64>, Option<Vec<f64>>)>);
    let best_stats = RwSignal::new(None::<String>);

    // The Compare prompt, else the Generate tab's.
    let prompting = move || {
        let p = prompt.get_untracked();
        if p.trim().is_empty() { s.get_untracked().prompt } else { p }
    };
    let enc = move || s.get_untracked().encoding();
    let busy = move || ref_job.get().is_some() || pol_job.get().is_some() || best_job.get().is_some();
    let compare = move || {
        let mut sampling = s.get_untracked().sampling;
        sampling.num_samples = 1;
        scores.set(None);
        heatmap.set(None);
        // Whichever answer finishes second scores both and offers the policy's for the heatmap.
        let both_done = move || {
            if ref_job.get_untracked().is_none() && pol_job.get_untracked().is_none() {
                let (r, p) = (reference.get_untracked(), policy.get_untracked());
                heat_text.set(p[0].text.clone());
                judge(ctx, prompting(), vec![r[0].text.clone(), p[0].text.clone()], move |j, rm| {
                    lesson::note(ctx, |r| {
                        for (i, side) in ["reference", "policy"].into_iter().enumerate() {
                            if let Some(v) = j.get(i) {
                                record(r, &format!("compare/{side}"), *v);
                            }
                            if let Some(v) = rm.as_ref().and_then(|rm| rm.get(i)) {
                                record(r, &format!("compare/{side}_rm"), *v);
                            }
                        }
                    });
                    scores.set(Some((j, rm)));
                    lesson::finished(ctx, Action::Compare);
                });
            }
        };
        run_generation(prompting(), enc(), sampling.clone(), Which::Reference, reference, ref_job, stats, both_done);
        run_generation(prompting(), enc(), sampling, Which::Policy, policy, pol_job, stats2, both_done);
    };
    let show_heatmap = move |_| {
        let text = heat_text.get_untracked();
        let id = client::job(move |ev| {
            if let Event::Logprobs { pieces, policy, reference, .. } = ev {
                heatmap.set(Some((pieces, policy, reference)));
            }
        });
        client::send(&Request::Logprobs { job: id, prompt: prompting(), encoding: enc(), completion: text });
    };
    let best_of_n = move || {
        best_scores.set(None);
        run_generation(prompting(), enc(), s.get_untracked().sampling, Which::Policy, best, best_job, best_stats, move || {
            judge(ctx, prompting(), best.get_untracked().iter().map(|c| c.text.clone()).collect(), move |j, rm| {
                // The critic is the reward model when there is one, else the judges.
                let by = rm.clone().unwrap_or_else(|| j.clone());
                lesson::note(ctx, |r| {
                    record(r, "best_of_n/best", by.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                    record(r, "best_of_n/mean", mean(&by));
                });
                best_scores.set(Some((j, rm)));
                lesson::finished(ctx, Action::BestOfN);
            });
        });
    };
    lesson::on_asked(ctx, Action::Compare, compare);
    lesson::on_asked(ctx, Action::BestOfN, best_of_n);
    let score_line = move |i: usize| scores.with(|sc| score_text(scores_of(sc, i)));
    // The Best-of-N samples' order, best first: by the reward model when there is one, else by the
    // judges (the samples' own order until they are judged). It changes only when scores come, so
    // the rows stay in the page while the samples are written.
    let best_order = Memo::new(move |_| {
        let mut order: Vec<usize> = (0..best.with(|b| b.len())).collect();
        best_scores.with(|sc| order.sort_by(|&a, &b| {
            let key = |i| { let (j, r) = scores_of(sc, i); r.or(j).unwrap_or(0.0) };
            key(b).total_cmp(&key(a))
        }));
        order
    });
    let side = move |title: &'static str, cards: RwSignal<Vec<Card>>, i: usize, st: RwSignal<Option<String>>| view! {
        <article class="card" aria-label=title>
            <header><strong>{title}</strong><span class="muted">{move || st.get()}</span></header>
            <p class="sample-text">{move || cards.get().first().map(|c| c.text.clone()).unwrap_or_default()}</p>
            <p class="score">{move || score_line(i)}</p>
        </article>
    };

    view! {
        <div class="panel compare">
            <p class="hint">{move || format!("Reference = the base model (adapters off). Policy = {}. Same prompt, seed and sampling settings (Generate tab).", ctx.policy.get().1)}</p>
            <label class="wide">"Prompt (empty = the Generate tab's)"
                <textarea rows="2" prop:value=prompt on:input=move |ev| prompt.set(event_target_value(&ev))></textarea></label>
            <div class="row">
                <button class="primary" disabled=move || ctx.model.get().is_none() || busy() on:click=move |_| compare()>"Compare"</button>
                <button disabled=move || ctx.model.get().is_none() || busy() on:click=move |_| best_of_n()>"Best of N"</button>
            </div>
            <div class="side-by-side">
                {side("Reference", reference, 0, stats)}
                {side("Policy", policy, 1, stats2)}
            </div>

            <h2>"Per-token log-prob change"</h2>
            <label class="wide">"Text to inspect (as the answer to the prompt)"
                <textarea rows="3" prop:value=heat_text on:input=move |ev| heat_text.set(event_target_value(&ev))></textarea></label>
            <button disabled=move || ctx.model.get().is_none() on:click=show_heatmap>"Show log-prob change"</button>
            {move || heatmap.get().map(|(pieces, pol, reference)| {
                let total: f32 = pol.iter().zip(&reference).map(|(p, r)| p - r).sum();
                view! {
                    <p class="legend-line"><span class="swatch" style:background=heat(2.0)></span>" policy likes more "
                        <span class="swatch" style:background=heat(-2.0)></span>" policy likes less · "
                        {format!("sum of changes {total:+.3} nats over {} tokens", pieces.len())}</p>
                    <p class="heatmap" role="group" aria-label="Token heatmap">
                        {pieces.into_iter().zip(pol.into_iter().zip(reference)).map(|(piece, (p, r))| {
                            let d = p - r;
                            let title = format!("{piece:?}: policy {p:.3}, reference {r:.3}, change {d:+.3}");
                            // A piece may be empty (half of a multi-byte character): keep it visible.
                            let shown = if piece.is_empty() { "·".to_string() } else { piece };
                            view! { <span class="tok" style:background=heat(d)
                                title=title>{shown}</span> }
                        }).collect_view()}
                    </p>
                }
            })}

            <h2>"Best of N"</h2>
            <p class="muted">{move || best_stats.get()}</p>
            <ol class="best">
                {move || (0..best_order.with(|o| o.len())).map(|rank| {
                    // Each row reads its sample anew on every token; only a changed text is written.
                    let at = move || best_order.with(|o| o.get(rank).copied());
                    view! {
                        <li><span class="score">{move || best_scores.with(|sc| at().and_then(|i| score_text(scores_of(sc, i))))}</span>" "{move || best.with(|b| at().and_then(|i| b.get(i)).map(|c| c.text.clone()).unwrap_or_default())}</li>
                    }
                }).collect_view()}
            </ol>
        </div>
    }
}

/// Answer `i`'s judges' score and reward, once its answers are scored.
fn scores_of(scores: &Option<(Vec<f64>, Option<Vec<f64>>)>, i: usize) -> (Option<f64>, Option<f64>) {
    scores.as_ref().map_or((None, None), |(j, r)| (j.get(i).copied(), r.as_ref().and_then(|r| r.get(i).copied())))
}

/// "judges +0.123 · reward model +1.234", or what of it there is.
fn score_text((judges, reward): (Option<f64>, Option<f64>)) -> Option<String> {
    let parts: Vec<String> = judges.map(|v| format!("judges {v:+.3}")).into_iter().chain(reward.map(|v| format!("reward model {v:+.3}"))).collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}
