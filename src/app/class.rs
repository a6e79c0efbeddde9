//! The class's view: a student hands in one class file (their preferences, ratings, ideal answers
//! and runs); the teacher opens everyone's at once and sees how often raters agree, a merged
//! preference set to train on, and the class's runs side by side. The arithmetic is in
//! `lab::class`; this file only shows it.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::samples::{self, Samples};
use super::{Ctx, files, fixed, groups};
use crate::lab::class::{CLASS_FORMAT, ClassFile, MAX_CLASS_BYTES, RunReport, agreement, merge};
use crate::lab::groups::AdapterRow;

/// The teacher's side, kept across a reload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassRoom {
    /// The class files opened, one per rater.
    pub files: Vec<ClassFile>,
    /// Rater → group; a rater without one is a group of their own.
    pub groups: BTreeMap<String, String>,
    /// The last group adapters' rows, and the groups they were scored on.
    pub adapters: Vec<AdapterRow>,
    pub scored: Vec<String>,
}

impl ClassRoom {
    /// The made-up class of `lab::groups::sample_class`, with its groups.
    pub fn sample(samples: &Samples) -> Self {
        let (files, groups) = samples.class.clone();
        Self { files, groups, ..Self::default() }
    }
}

/// The metrics the runs table shows, when a run logged them.
const COLUMNS: [&str; 7] = ["loss", "eval/loss", "rewards/margins", "eval/rewards/accuracies", "eval/accuracy", "reward", "kl"];

fn file_name(rater: &str) -> String {
    let safe: String = rater.chars().map(|c| if c.is_alphanumeric() { c } else { '-' }).collect();
    format!("class-{}.json", safe.trim_matches('-'))
}

#[component]
pub fn ClassPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let rater = RwSignal::new(String::new());
    let room = ctx.class;
    let handed_in = Signal::derive(move || room.with(|r| r.files.clone()));
    let problems = RwSignal::new(Vec::<String>::new());
    let message = RwSignal::new(None::<String>);

    let export = move |_| {
        let name = rater.get_untracked().trim().to_string();
        if name.is_empty() {
            return message.set(Some("Type your name (or your group's) first: the teacher's view lists raters by it.".into()));
        }
        let runs = ctx.runs.get_untracked().iter().map(|r| RunReport::from_steps(&r.method, &r.config, &r.metrics, &r.state)).collect();
        let f = ClassFile { alignlab_class: CLASS_FORMAT, rater: name.clone(), pairs: ctx.pairs.get_untracked(), unpaired: ctx.unpaired.get_untracked(), demos: ctx.demos.get_untracked(), runs };
        let json = serde_json::to_string_pretty(&f).unwrap_or_default();
        match files::download(&file_name(&name), "application/json", json.as_bytes()) {
            Ok(()) => {
                let n = |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
                message.set(Some(format!(
                    "Saved {}: {}, {}, {}, {}.",
                    file_name(&name),
                    n(f.pairs.len(), "pair", "pairs"),
                    n(f.unpaired.len(), "rating", "ratings"),
                    n(f.demos.len(), "ideal answer", "ideal answers"),
                    n(f.runs.len(), "run", "runs")
                )))
            }
            Err(e) => message.set(Some(format!("Export failed: {e}"))),
        }
    };
    let open = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        leptos::task::spawn_local(async move {
            let mut bad = Vec::new();
            for f in picked {
                match files::read_bytes(&f, MAX_CLASS_BYTES as u64).await.and_then(|b| ClassFile::parse(&b).map_err(|e| e.to_string())) {
                    // The same rater handing in again replaces their earlier file.
                    Ok(c) => room.update(|r| {
                        r.files.retain(|x| x.rater.trim() != c.rater.trim());
                        r.files.push(c);
                    }),
                    Err(e) => bad.push(format!("{}: {e}", f.name())),
                }
            }
            problems.set(bad);
        });
    };
    let merged = Memo::new(move |_| handed_in.with(|v| merge(&v.iter().map(|f| f.pairs.as_slice()).collect::<Vec<_>>())));
    let add_merged = move |_| {
        let m = merged.get_untracked();
        let mut added = 0;
        ctx.pairs.update(|p| {
            for x in m.pairs {
                if !p.contains(&x) {
                    p.push(x);
                    added += 1;
                }
            }
        });
        message.set(Some(format!("Added {added} merged pairs to your data (the rest were there already).")));
    };

    view! {
        <div class="panel class">
            <h2>"Hand in your work"</h2>
            <p class="hint">"One file with your preference pairs, ratings, ideal answers and a report of your runs, for your teacher."</p>
            <div class="row">
                <label>"Your name or group " <input type="text" aria-label="Rater name" prop:value=rater on:input=move |ev| rater.set(event_target_value(&ev))/></label>
                <button on:click=export>"Export my class file"</button>
            </div>
            <p class="notice" role="status" aria-live="polite">{move || message.get()}</p>

            <h2>"Teacher: the class's files"</h2>
            <div class="row">
                <label>"Open class files " <input type="file" multiple accept=".json,application/json" aria-label="Open class files" on:change=open/></label>
                <button on:click=move |_| samples::when(true, move |s| if let Some(s) = s { room.set(ClassRoom::sample(&s)) }, move |e| problems.set(vec![e])) title="Four made-up raters in two groups: brief (Ana, Ben) and thorough (Chloe, Dev)">"Open the sample class"</button>
                <button disabled=move || room.with(|r| r.files.is_empty()) on:click=move |_| room.set(ClassRoom::default())>"Close the class's files"</button>
            </div>
            <ul class="problems">{move || problems.get().into_iter().map(|p| view! { <li role="alert">{p}</li> }).collect_view()}</ul>
            <Show when=move || !handed_in.get().is_empty()>
                <h3>"How often raters agree"</h3>
                <p class="hint">"Over the comparisons both judged (the same two answers to the same prompt): the share where they chose the same answer, and Cohen's κ, which discounts the agreement chance alone would give (1 = perfect, 0 = chance, below 0 = worse than chance)."</p>
                {move || {
                    let v = handed_in.get();
                    view! {
                        <table aria-label="Rater agreement">
                            <thead><tr><th></th>{v.iter().map(|f| view! { <th>{f.rater.clone()}</th> }).collect_view()}</tr></thead>
                            <tbody>{v.iter().map(|a| view! {
                                <tr><th>{a.rater.clone()}</th>{v.iter().map(|b| {
                                    let cell = match agreement(&a.pairs, &b.pairs) {
                                        None => "—".to_string(),
                                        Some(g) => format!("{:.0}% of {}{}", g.rate * 100.0, g.shared, g.kappa.map(|k| format!(" · κ {k:+.2}")).unwrap_or_default()),
                                    };
                                    view! { <td>{cell}</td> }
                                }).collect_view()}</tr>
                            }).collect_view()}</tbody>
                        </table>
                    }
                }}
                <h3>"Merged preferences"</h3>
                <p aria-label="Merged preferences">{move || {
                    let m = merged.get();
                    format!("{} pairs from {} raters: each comparison won by the answer most chose; {} judged by several raters, {} even splits left out.", m.pairs.len(), handed_in.get().len(), m.contested, m.ties)
                }}</p>
                <button on:click=add_merged>"Add merged pairs to my data"</button>
                <Show when=move || room.with(|r| r.files.iter().any(|f| !f.runs.is_empty()))>
                    <h3>"The class's runs"</h3>
                    <table aria-label="Class runs">
                        <thead><tr><th>"Rater"</th><th>"Method"</th><th>"Steps"</th><th>"State"</th>{COLUMNS.map(|c| view! { <th>{c}</th> }).collect_view()}</tr></thead>
                        <tbody>{move || handed_in.get().into_iter().flat_map(|f| f.runs.into_iter().map(move |r| (f.rater.clone(), r))).map(|(who, r)| view! {
                            <tr><td>{who}</td><td>{r.method.to_uppercase()}</td><td>{r.steps}</td><td>{r.state.clone()}</td>
                                {COLUMNS.map(|c| view! { <td>{r.last.get(c).map(|v| fixed(*v, 4)).unwrap_or_default()}</td> }).collect_view()}</tr>
                        }).collect_view()}</tbody>
                    </table>
                </Show>
            </Show>
            <groups::GroupsSection/>
        </div>
    }
}
