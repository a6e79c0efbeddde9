//! The collected data: preference pairs, thumbs ratings, ideal answers and prompts. Edit or delete
//! rows, import and export TRL JSONL (bad lines reported with their numbers, the rest kept), and
//! auto-label many prompts at once with the judges.

use leptos::prelude::*;

use super::{Banner, Ctx, client, files, lines};
use crate::data::{self, Demonstration, Preference, Unpaired};
use crate::worker::protocol::*;

/// The largest JSONL file the page imports: its text, its records and their saved copy all sit in
/// the page's memory (at most 4 GiB). A bigger dataset is a job for the CLI.
const MAX_JSONL_BYTES: u64 = 64 << 20;

/// Imports a JSONL file as whichever TRL format its lines fit best.
fn import_jsonl(ctx: Ctx, text: &str) -> String {
    let pref = data::import::<Preference>(text);
    let unp = data::import::<Unpaired>(text);
    let demo = data::import::<Demonstration>(text);
    let best = [pref.records.len(), unp.records.len(), demo.records.len()];
    let report = |what: &str, n: usize, errors: &[data::LineError]| {
        let mut s = format!("Imported {n} {what}.");
        if !errors.is_empty() {
            s.push_str(&format!(" Skipped {} bad line(s): ", errors.len()));
            s.push_str(&errors.iter().take(5).map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
            if errors.len() > 5 {
                s.push_str("; …");
            }
        }
        s
    };
    if best[0] >= best[1] && best[0] >= best[2] && best[0] > 0 {
        let r = report("preference pairs", pref.records.len(), &pref.errors);
        ctx.pairs.update(|p| p.extend(pref.records));
        r
    } else if best[1] >= best[2] && best[1] > 0 {
        let r = report("rated answers (KTO)", unp.records.len(), &unp.errors);
        ctx.unpaired.update(|p| p.extend(unp.records));
        r
    } else if best[2] > 0 {
        let r = report("ideal answers (SFT)", demo.records.len(), &demo.errors);
        ctx.demos.update(|p| p.extend(demo.records));
        r
    } else {
        report("records", 0, &pref.errors)
    }
}

#[component]
pub fn DataPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let message = RwSignal::new(None::<String>);
    let editing = RwSignal::new(None::<(usize, Preference)>);
    let prompts_text = RwSignal::new(String::new());
    let label_job = RwSignal::new(None::<JobId>);
    let label_progress = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        // Show the saved prompts once they are restored, and prompts a lesson adds.
        let saved = ctx.prompts.get();
        if ctx.restored.get() && lines(&prompts_text.get_untracked()) != saved {
            prompts_text.set(saved.join("\n"));
        }
    });

    let on_import = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        leptos::task::spawn_local(async move {
            for f in picked {
                match files::read_text(&f, MAX_JSONL_BYTES).await {
                    Ok(t) => message.set(Some(format!("{}: {}", f.name(), import_jsonl(ctx, &t)))),
                    Err(e) => ctx.banner.set(Some(Banner { kind: ErrorKind::Invalid, message: format!("{}: {e}", f.name()), fatal: false })),
                }
            }
        });
    };
    let export = move |name: &str, text: String| {
        if let Err(e) = files::download(name, "application/jsonl", text.as_bytes()) {
            message.set(Some(format!("Export failed: {e}")));
        }
    };
    let auto_label = move |_| {
        let prompts: Vec<String> = lines(&prompts_text.get_untracked());
        if prompts.is_empty() {
            message.set(Some("Write some prompts (one per line) to auto-label.".into()));
            return;
        }
        ctx.prompts.set(prompts.clone());
        let st = ctx.settings.get_untracked();
        let judges = match st.judge_specs() {
            Ok(j) if !j.is_empty() => j,
            Ok(_) => return message.set(Some("Switch on at least one judge.".into())),
            Err(e) => return message.set(Some(e)),
        };
        let mut sampling = st.sampling.clone();
        sampling.num_samples = sampling.num_samples.max(2);
        let added = RwSignal::new(0usize);
        let id = client::job(move |ev| match ev {
            Event::Labelled { pairs, done, total, .. } => {
                added.update(|a| *a += pairs.len());
                ctx.pairs.update(|p| p.extend(pairs));
                label_progress.set(Some(format!("Auto-labelled {done} of {total} prompts: {} pairs added.", added.get_untracked())));
            }
            Event::Done { .. } | Event::Error { .. } => label_job.set(None),
            _ => {}
        });
        label_job.set(Some(id));
        label_progress.set(Some(format!("Auto-labelling {} prompts…", prompts.len())));
        client::send(&Request::AutoLabel { job: id, prompts, encoding: st.encoding(), sampling, reward: RewardSpec::Judges(judges) });
    };

    let pair_rows = move || {
        ctx.pairs.get().into_iter().enumerate().map(|(i, p)| {
            let is_editing = editing.get().is_some_and(|(j, _)| j == i);
            if is_editing {
                let field = move |get: fn(&Preference) -> String, set: fn(&mut Preference, String), label: &'static str| view! {
                    <td><textarea aria-label=format!("{label} of pair {}", i + 1) prop:value=move || editing.get().map(|(_, p)| get(&p)).unwrap_or_default()
                        on:input=move |ev| editing.update(|e| if let Some((_, p)) = e { set(p, event_target_value(&ev)) })></textarea></td>
                };
                view! {
                    <tr>
                        <td>{i + 1}</td>
                        {field(|p| p.prompt.clone(), |p, v| p.prompt = v, "Prompt")}
                        {field(|p| p.chosen.clone(), |p, v| p.chosen = v, "Chosen")}
                        {field(|p| p.rejected.clone(), |p, v| p.rejected = v, "Rejected")}
                        <td>
                            <button on:click=move |_| {
                                if let Some((j, p)) = editing.get_untracked() { ctx.pairs.update(|v| v[j] = p); }
                                editing.set(None);
                            }>"Save"</button>
                            <button on:click=move |_| editing.set(None)>"Cancel"</button>
                        </td>
                    </tr>
                }.into_any()
            } else {
                let p2 = p.clone();
                view! {
                    <tr>
                        <td>{i + 1}</td><td>{p.prompt}</td><td class="chosen">{p.chosen}</td><td class="rejected">{p.rejected}</td>
                        <td>
                            <button class="small" aria-label=format!("Edit pair {}", i + 1) on:click=move |_| editing.set(Some((i, p2.clone())))>"Edit"</button>
                            <button class="small" aria-label=format!("Delete pair {}", i + 1) on:click=move |_| {
                                editing.set(None);
                                ctx.pairs.update(|v| { if i < v.len() { v.remove(i); } });
                            }>"Delete"</button>
                        </td>
                    </tr>
                }.into_any()
            }
        }).collect_view()
    };

    view! {
        <div class="panel data">
            <div class="row">
                <label class="file">"Import JSONL "<input type="file" accept=".jsonl,.json,.txt" aria-label="Import JSONL" on:change=on_import/></label>
                <button on:click=move |_| export("preferences.jsonl", data::export(&ctx.pairs.get_untracked()))>"Export pairs (JSONL)"</button>
                <button on:click=move |_| export("kto.jsonl", data::export(&ctx.unpaired.get_untracked()))>"Export ratings (JSONL)"</button>
                <button on:click=move |_| export("sft.jsonl", data::export(&ctx.demos.get_untracked()))>"Export ideal answers (JSONL)"</button>
                <button class="danger" on:click=move |_| {
                    let ok = web_sys::window().and_then(|w| w.confirm_with_message("Delete all pairs, ratings, ideal answers, prompts and runs from this browser?").ok()).unwrap_or(false);
                    if ok {
                        ctx.pairs.set(Vec::new()); ctx.unpaired.set(Vec::new()); ctx.demos.set(Vec::new());
                        ctx.prompts.set(Vec::new()); ctx.runs.set(Vec::new()); prompts_text.set(String::new());
                        leptos::task::spawn_local(async move { let _ = super::store::clear().await; });
                    }
                }>"Clear all"</button>
            </div>
            <p class="notice" role="status" aria-live="polite">{move || message.get()}</p>
            <super::unreadable::Unreadable/>

            <table aria-label="Preference pairs">
                <caption>{move || format!("Preference pairs ({}), TRL format: prompt / chosen / rejected", ctx.pairs.get().len())}</caption>
                <thead><tr><th>"#"</th><th>"Prompt"</th><th>"Chosen"</th><th>"Rejected"</th><th></th></tr></thead>
                <tbody>{pair_rows}</tbody>
            </table>
            <super::curriculum::CurriculumSection/>

            <table aria-label="Rated answers">
                <caption>{move || format!("Rated answers for KTO ({})", ctx.unpaired.get().len())}</caption>
                <thead><tr><th>"Prompt"</th><th>"Answer"</th><th>"Rating"</th><th></th></tr></thead>
                <tbody>{move || ctx.unpaired.get().into_iter().enumerate().map(|(i, u)| view! {
                    <tr><td>{u.prompt}</td><td>{u.completion}</td><td>{if u.label { "👍" } else { "👎" }}</td>
                    <td><button class="small" aria-label=format!("Delete rating {}", i + 1) on:click=move |_| ctx.unpaired.update(|v| { if i < v.len() { v.remove(i); } })>"Delete"</button></td></tr>
                }).collect_view()}</tbody>
            </table>

            <table aria-label="Ideal answers">
                <caption>{move || format!("Ideal answers for SFT ({})", ctx.demos.get().len())}</caption>
                <thead><tr><th>"Prompt"</th><th>"Ideal answer"</th><th></th></tr></thead>
                <tbody>{move || ctx.demos.get().into_iter().enumerate().map(|(i, d)| view! {
                    <tr><td>{d.prompt}</td><td>{d.completion}</td>
                    <td><button class="small" aria-label=format!("Delete ideal answer {}", i + 1) on:click=move |_| ctx.demos.update(|v| { if i < v.len() { v.remove(i); } })>"Delete"</button></td></tr>
                }).collect_view()}</tbody>
            </table>

            <h2>"Prompts and auto-labelling"</h2>
            <p class="hint">"Prompts for RLHF and auto-labelling, one per line. Auto-labelling samples each prompt (Generate tab settings), scores the samples with the judges below, and keeps best-vs-worst as a pair."</p>
            <label class="wide">"Prompts"<textarea rows="5" prop:value=prompts_text on:input=move |ev| prompts_text.set(event_target_value(&ev))
                on:change=move |_| ctx.prompts.set(lines(&prompts_text.get_untracked()))></textarea></label>
            <JudgePicker/>
            <div class="row">
                <button disabled=move || ctx.model.get().is_none() || label_job.get().is_some() on:click=auto_label>"Auto-label"</button>
                <button disabled=move || label_job.get().is_none() on:click=move |_| if let Some(j) = label_job.get_untracked() { client::send(&Request::Cancel { job: j }) }>"Stop auto-labelling"</button>
                <span aria-live="polite">{move || label_progress.get()}</span>
            </div>
        </div>
    }
}

/// The judges and their weights (used by auto-labelling, RLHF and Compare).
#[component]
pub fn JudgePicker() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = ctx.settings;
    let help = |spec: &str| match spec.split('=').next().unwrap_or("") {
        "sentiment" => "VADER sentiment: +1 very positive, -1 very negative",
        "neutral" => "A calm, neutral tone: VADER's share of words without sentiment, from -1 to +1",
        "politeness" => "Politeness markers such as please and thank you",
        "profanity" => "-1 for profanity, 0 when clean",
        "length" => "1 at the target word count, lower further away (edit the number)",
        "include" => "Fraction of these words (a+b+c) present",
        "avoid" => "Minus the fraction of these words present",
        _ => "",
    };
    view! {
        <fieldset class="judges">
            <legend>"Judges (weighted sum)"</legend>
            {move || s.get().judges.into_iter().enumerate().map(|(i, (spec, w, on))| {
                let title = help(&spec);
                view! {
                    <div class="row" title=title>
                        <label><input type="checkbox" prop:checked=on on:change=move |ev| s.update(|x| x.judges[i].2 = event_target_checked(&ev))/>
                            <input type="text" class="judge-spec" aria-label=format!("Judge {}", i + 1) prop:value=spec.clone()
                                on:change=move |ev| s.update(|x| x.judges[i].0 = event_target_value(&ev))/></label>
                        <label>"weight "<input type="number" step="0.5" aria-label=format!("Weight of judge {}", i + 1) prop:value=w
                            on:change=move |ev| s.update(|x| x.judges[i].1 = event_target_value(&ev).parse().unwrap_or(1.0))/></label>
                    </div>
                }
            }).collect_view()}
            <button class="small" on:click=move |_| s.update(|x| x.judges.push(("include=thanks+please".into(), 1.0, true)))>"Add keyword judge"</button>
        </fieldset>
    }
}
