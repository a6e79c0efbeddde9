//! Generate N samples (streamed into cards), then judge them as a person: order them (drag, arrow
//! keys, number keys), pick A or B, or give thumbs up/down; or write the ideal answer. Rankings
//! become preference pairs, thumbs become KTO's unpaired examples, ideal answers SFT's data.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::fields::number;
use super::{Ctx, Settings, client, lesson};
use crate::lab::lesson::{Action, record};
use crate::align::Encoding;
use crate::data::{Demonstration, Preference, Unpaired};
use crate::worker::protocol::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Card {
    pub text: String,
    pub done: bool,
    pub finish: String,
    pub rating: Option<bool>,
    /// The switched-on judges' weighted score, once judged.
    pub score: Option<f64>,
}

/// Streams a generation into `cards` (the timing line into `stats`); `on_done` runs once every
/// card is finished.
pub fn run_generation(
    prompt: String,
    encoding: Encoding,
    sampling: crate::generate::SamplingConfig,
    which: Which,
    cards: RwSignal<Vec<Card>>,
    job: RwSignal<Option<JobId>>,
    stats: RwSignal<Option<String>>,
    on_done: impl Fn() + 'static,
) {
    cards.set(vec![Card::default(); sampling.num_samples]);
    stats.set(None);
    let id = client::job(move |ev| match ev {
        Event::Token { sample, delta, .. } => cards.update(|c| {
            if let Some(c) = c.get_mut(sample) {
                c.text.push_str(&delta);
            }
        }),
        Event::Generated { samples, millis, first_token_ms, tokens_per_s, kept, .. } => {
            cards.update(|c| {
                for (card, s) in c.iter_mut().zip(samples) {
                    card.text = s.text;
                    card.finish = s.finish;
                    card.done = true;
                }
            });
            stats.set(Some(if kept {
                "the same answers as before: the same prompt, seed and settings, and the base model has not changed".into()
            } else {
                format!("first token after {:.2} s, {:.1} tokens/s, {:.1} s in all", first_token_ms / 1000.0, tokens_per_s, millis / 1000.0)
            }));
            job.set(None);
            on_done();
        }
        Event::Error { .. } => job.set(None),
        _ => {}
    });
    job.set(Some(id));
    client::send(&Request::Generate { job: id, prompt, encoding, sampling, which });
}

/// Scores finished samples with the switched-on judges, for the cards and the lesson's readings
/// (`samples/score`, `samples/words`).
fn score(ctx: Ctx, prompt: String, cards: RwSignal<Vec<Card>>) {
    let texts: Vec<String> = cards.get_untracked().iter().map(|c| c.text.clone()).collect();
    let words = super::compare::mean(&texts.iter().map(|t| t.split_whitespace().count() as f64).collect::<Vec<_>>());
    lesson::note(ctx, |r| record(r, "samples/words", words));
    if ctx.settings.get_untracked().judge_specs().map_or(true, |j| j.is_empty()) {
        return lesson::finished(ctx, Action::Generate);
    }
    super::compare::judge(ctx, prompt, texts, move |judges, _| {
        cards.update(|c| c.iter_mut().zip(&judges).for_each(|(c, s)| c.score = Some(*s)));
        let mean = super::compare::mean(&judges);
        lesson::note(ctx, |r| record(r, "samples/score", mean));
        lesson::finished(ctx, Action::Generate);
    });
}

/// The sample whose card has the keyboard focus (`card-{i}`), if one has.
fn focused_card() -> Option<usize> {
    let el = web_sys::window()?.document()?.active_element()?;
    el.id().strip_prefix("card-")?.parse().ok()
}

/// Gives sample `c`'s card the focus a turn later, once the list drawn anew is in the page.
fn focus_card(c: usize) {
    leptos::task::spawn_local(async move {
        gloo_timers::future::TimeoutFuture::new(0).await;
        if let Some(el) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id(&format!("card-{c}"))) {
            if let Ok(el) = el.dyn_into::<web_sys::HtmlElement>() {
                let _ = el.focus();
            }
        }
    });
}

/// Moves the card at rank position `from` to position `to`. The places stay in the page and show
/// other samples, so the keyboard focus goes with the sample that had it: a student ranking with
/// the keyboard keeps their place.
fn move_card(order: RwSignal<Vec<usize>>, from: usize, to: usize) {
    if let Some(ci) = focused_card() {
        focus_card(ci);
    }
    order.update(|o| {
        if from < o.len() && to < o.len() && from != to {
            let c = o.remove(from);
            o.insert(to, c);
        }
    });
}

#[component]
pub fn GeneratePanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = ctx.settings;
    let cards = RwSignal::new(Vec::<Card>::new());
    let order = RwSignal::new(Vec::<usize>::new());
    let job = RwSignal::new(None::<JobId>);
    let stats = RwSignal::new(None::<String>);
    let mode = RwSignal::new("rank");
    let ab = RwSignal::new(0usize);
    let ideal = RwSignal::new(String::new());
    let asked = RwSignal::new(String::new());
    let drag_from = RwSignal::new(None::<usize>);
    let message = RwSignal::new(None::<String>);

    let generate = move || {
        let st = s.get_untracked();
        asked.set(st.prompt.clone());
        order.set((0..st.sampling.num_samples).collect());
        ab.set(0);
        message.set(None);
        run_generation(st.prompt.clone(), st.encoding(), st.sampling.clone(), Which::Policy, cards, job, stats, move || score(ctx, asked.get_untracked(), cards));
    };
    lesson::on_asked(ctx, Action::Generate, generate);
    let stop = move || {
        if let Some(j) = job.get_untracked() {
            client::send(&Request::Cancel { job: j });
        }
    };
    let ready = move || ctx.model.get().is_some();
    let done = move || !cards.get().is_empty() && cards.get().iter().all(|c| c.done);

    let save_ranking = move |_| {
        let c = cards.get_untracked();
        let ranked: Vec<String> = order.get_untracked().iter().map(|&i| c[i].text.clone()).collect();
        let pairs = crate::data::ranking_pairs(&asked.get_untracked(), &ranked);
        let n = pairs.len();
        ctx.pairs.update(|p| p.extend(pairs));
        message.set(Some(if n == 0 {
            "No pairs: the samples are identical. Raise the temperature and generate again.".into()
        } else {
            format!("Added {n} preference pairs from your ranking (each answer over every one ranked below it).")
        }));
    };
    let pick_ab = move |winner: Option<usize>| {
        let c = cards.get_untracked();
        let i = ab.get_untracked() * 2;
        if let (Some(w), Some(a), Some(b)) = (winner, c.get(i), c.get(i + 1)) {
            let (chosen, rejected) = if w == 0 { (a, b) } else { (b, a) };
            ctx.pairs.update(|p| p.push(Preference { prompt: asked.get_untracked(), chosen: chosen.text.clone(), rejected: rejected.text.clone() }));
            message.set(Some(format!("Saved: {} is better.", if w == 0 { "A" } else { "B" })));
        }
        ab.update(|x| *x += 1);
    };
    let rate = move |i: usize, good: bool| {
        let c = cards.get_untracked();
        if c.get(i).is_some_and(|c| c.rating == Some(good)) {
            return;
        }
        cards.update(|c| c[i].rating = Some(good));
        ctx.unpaired.update(|u| {
            // A changed mind replaces the earlier rating of the same text.
            u.retain(|x| !(x.prompt == asked.get_untracked() && x.completion == c[i].text));
            u.push(Unpaired { prompt: asked.get_untracked(), completion: c[i].text.clone(), label: good });
        });
    };

    // The card at rank position `pos`. Its nodes stay while the number of samples does: a token
    // rewrites one text node, and a move changes which sample each place shows, so drawing the
    // answers leaves the cores to the engine.
    let shown = Memo::new(move |_| order.with(|o| o.len()));
    let card_view = move |pos: usize| {
        let ci = move || order.with(|o| o.get(pos).copied().unwrap_or(0));
        // Each reads its card anew on every change; the page's text is written only where it changed.
        let card = move |f: &dyn Fn(&Card) -> String| cards.with(|c| c.get(ci()).map(f).unwrap_or_default());
        let pressed = move |good: bool| card(&|c| (c.rating == Some(good)).to_string());
        let keydown = move |ev: leptos::ev::KeyboardEvent| {
            let n = shown.get_untracked();
            let key = ev.key();
            let to = match key.as_str() {
                "ArrowUp" if pos > 0 => Some(pos - 1),
                "ArrowDown" if pos + 1 < n => Some(pos + 1),
                k if k.len() == 1 && k.chars().all(|c| c.is_ascii_digit()) => {
                    k.parse::<usize>().ok().filter(|&d| d >= 1 && d <= n).map(|d| d - 1)
                }
                _ => None,
            };
            if let Some(to) = to {
                ev.prevent_default();
                move_card(order, pos, to);
            }
        };
        view! {
            <article id=move || format!("card-{}", ci()) class="card" tabindex="0" draggable="true"
                aria-label=move || format!("Sample {}, ranked {} of {}", ci() + 1, pos + 1, shown.get())
                class:dragging=move || drag_from.get() == Some(pos)
                on:keydown=keydown
                on:dragstart=move |_| drag_from.set(Some(pos))
                on:dragover=move |ev: leptos::ev::DragEvent| ev.prevent_default()
                on:drop=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    if let Some(from) = drag_from.get_untracked() { move_card(order, from, pos); }
                    drag_from.set(None);
                }>
                <header>
                    <span class="rank">{format!("#{}", pos + 1)}</span>
                    <span class="muted">{move || card(&|c| {
                        let finish = if c.done { format!(" · {}", c.finish) } else { " · writing…".into() };
                        format!("sample {}{finish}{}", ci() + 1, c.score.map(|v| format!(" · judges {v:+.3}")).unwrap_or_default())
                    })}</span>
                    <Show when=move || mode.get() == "rank">
                        <button class="small" aria-label=move || format!("Move sample {} up", ci() + 1) disabled=pos == 0
                            on:click=move |_| { move_card(order, pos, pos.saturating_sub(1)); }>"↑"</button>
                        <button class="small" aria-label=move || format!("Move sample {} down", ci() + 1) disabled=move || pos + 1 == shown.get()
                            on:click=move |_| { move_card(order, pos, pos + 1); }>"↓"</button>
                    </Show>
                    <Show when=move || mode.get() == "thumbs">
                        <button class="small" aria-label=move || format!("Thumbs up for sample {}", ci() + 1) aria-pressed=move || pressed(true)
                            on:click=move |_| rate(ci(), true)>"👍"</button>
                        <button class="small" aria-label=move || format!("Thumbs down for sample {}", ci() + 1) aria-pressed=move || pressed(false)
                            on:click=move |_| rate(ci(), false)>"👎"</button>
                    </Show>
                </header>
                <p class="sample-text">{move || card(&|c| if c.text.is_empty() && !c.done { "…".into() } else { c.text.clone() })}</p>
            </article>
        }
    };
    view! {
        <div class="panel generate">
            <div class="form">
                <label class="wide" title="Sets the assistant's behaviour (chat models only). Empty = the model's default.">"System prompt"
                    <textarea rows="2" prop:value=move || s.get().system on:input=move |ev| s.update(|x| x.system = event_target_value(&ev))></textarea>
                </label>
                <label class="wide">"Prompt"
                    <textarea rows="3" prop:value=move || s.get().prompt on:input=move |ev| s.update(|x| x.prompt = event_target_value(&ev))
                        on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Enter" && ev.ctrl_key() && ready() { generate() }></textarea>
                </label>
                <div class="row">
                    {number(s, "Samples", "How many answers to sample for the same prompt (to compare and rank).", "1",
                        |x: &Settings| x.sampling.num_samples, |x, v: usize| x.sampling.num_samples = v.clamp(1, 16))}
                    {number(s, "Temperature", "Randomness: 0 always picks the likeliest token; around 1 samples freely.", "0.1",
                        |x| x.sampling.temperature, |x, v| x.sampling.temperature = v)}
                    {number(s, "Top-p", "Sample only from the smallest set of tokens whose probabilities add up to this.", "0.05",
                        |x| x.sampling.top_p, |x, v| x.sampling.top_p = v)}
                    {number(s, "Top-k", "Sample only from the k likeliest tokens (0 = no limit).", "1",
                        |x| x.sampling.top_k, |x, v| x.sampling.top_k = v)}
                    {number(s, "Repetition penalty", "Above 1, tokens already in the text become less likely (1 = off).", "0.05",
                        |x| x.sampling.repetition_penalty, |x, v| x.sampling.repetition_penalty = v)}
                    {number(s, "Max tokens", "Longest answer, in tokens.", "1",
                        |x| x.sampling.max_new_tokens, |x, v: usize| x.sampling.max_new_tokens = v.clamp(1, 2048))}
                    {number(s, "Seed", "Same seed + same settings = same samples.", "1", |x| x.sampling.seed, |x, v| x.sampling.seed = v)}
                    <label title="Wrap the prompt in the model's chat template (models that have one).">
                        <input type="checkbox" prop:checked=move || s.get().chat disabled=move || ctx.model.get().is_some_and(|m| !m.chat_template)
                            on:change=move |ev| s.update(|x| x.chat = event_target_checked(&ev))/>
                        {move || if ctx.model.get().is_some_and(|m| !m.chat_template) { "Chat format (this model has no chat template)" } else { "Chat format" }}</label>
                </div>
                <div class="row">
                    <button class="primary" disabled=move || !ready() || job.get().is_some() on:click=move |_| generate()>"Generate"</button>
                    <button disabled=move || job.get().is_none() on:click=move |_| stop()>"Stop"</button>
                    <span class="muted" aria-live="polite">{move || stats.get()}</span>
                    <span class="muted">{move || format!("Policy: {}", ctx.policy.get().1)}</span>
                </div>
            </div>

            <Show when=move || !cards.get().is_empty()>
                <div class="row" role="radiogroup" aria-label="How to judge the samples">
                    <span>"Judge the samples:"</span>
                    {[("rank", "Rank"), ("ab", "A/B"), ("thumbs", "Thumbs")].into_iter().map(|(m, label)| view! {
                        <label><input type="radio" name="judge-mode" checked=move || mode.get() == m on:change=move |_| mode.set(m)/>{label}</label>
                    }).collect_view()}
                </div>
                <Show when=move || mode.get() == "rank">
                    <p class="hint">"Best at the top. Drag a card, or focus it and press ↑/↓ or a number key for its place."</p>
                </Show>
                <Show when=move || mode.get() != "ab" fallback=move || {
                    let c = cards.get();
                    let i = ab.get() * 2;
                    match (c.get(i), c.get(i + 1)) {
                        (Some(a), Some(b)) => view! {
                            <div class="ab">
                                <article class="card" aria-label="Sample A"><header>"A"</header><p class="sample-text">{a.text.clone()}</p></article>
                                <article class="card" aria-label="Sample B"><header>"B"</header><p class="sample-text">{b.text.clone()}</p></article>
                            </div>
                            <div class="row">
                                <button disabled=move || !done() on:click=move |_| pick_ab(Some(0))>"A is better"</button>
                                <button disabled=move || !done() on:click=move |_| pick_ab(Some(1))>"B is better"</button>
                                <button disabled=move || !done() on:click=move |_| pick_ab(None)>"Tie / skip"</button>
                            </div>
                        }.into_any(),
                        _ => view! { <p class="hint">"All pairs judged. Generate again for more."</p> }.into_any(),
                    }
                }>
                    <div class="cards" role="list" aria-label="Samples">
                        {move || (0..shown.get()).map(card_view).collect_view()}
                    </div>
                </Show>
                <Show when=move || mode.get() == "rank">
                    <button disabled=move || !done() on:click=save_ranking>"Save ranking"</button>
                </Show>
                <p class="notice" aria-live="polite">{move || message.get()}</p>
                <details class="ideal">
                    <summary>"Write the ideal answer (for SFT)"</summary>
                    <label class="wide">"Ideal answer"<textarea rows="3" prop:value=ideal on:input=move |ev| ideal.set(event_target_value(&ev))></textarea></label>
                    <button on:click=move |_| {
                        let text = ideal.get_untracked();
                        if !text.trim().is_empty() {
                            ctx.demos.update(|d| d.push(Demonstration { prompt: asked.get_untracked(), completion: text }));
                            ideal.set(String::new());
                            message.set(Some("Saved the ideal answer for SFT.".into()));
                        }
                    }>"Save ideal answer"</button>
                </details>
            </Show>
        </div>
    }
}
