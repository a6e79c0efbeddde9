//! Retrieval-augmented answers: the student's documents (and a sample set about a made-up island),
//! a question answered without them and with the passages BM25 finds, side by side with the
//! passages shown; and a fact set that counts right answers both ways. The work is
//! `lab::retrieve`, in the worker; this file keeps the documents and shows the answers.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::samples::{self, Samples};
use super::{Ctx, client, files, lesson};
use crate::lab::lesson::{Action, record};
use crate::lab::retrieve::{Fact, FactSummary, MAX_DOCUMENT_BYTES, MAX_DOCUMENTS, MAX_FACTS_BYTES, MAX_TOP_K, SAMPLE_QUESTION, parse_facts};
use crate::worker::protocol::*;

/// The documents and question the tab remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shelf {
    /// Search the sample set too.
    pub sample: bool,
    /// The student's own files.
    pub own: Vec<Document>,
    pub question: String,
    /// Passages put into the prompt.
    pub k: usize,
}

impl Default for Shelf {
    fn default() -> Self {
        Self { sample: true, own: Vec::new(), question: SAMPLE_QUESTION.into(), k: 1 }
    }
}

impl Shelf {
    /// What a question searches: the sample library (in `samples`, fetched when ticked) and the
    /// student's own.
    fn documents(&self, samples: Option<&Samples>) -> Vec<Document> {
        let sample = samples.filter(|_| self.sample).map_or(&[][..], |s| &s.documents);
        sample.iter().chain(&self.own).cloned().collect()
    }
}

/// Adds picked files to the shelf (a file of the same name is replaced); says which were refused.
fn add_files(shelf: RwSignal<Shelf>, problems: RwSignal<Vec<String>>, picked: Vec<web_sys::File>) {
    leptos::task::spawn_local(async move {
        let mut bad = Vec::new();
        for f in picked {
            let name = f.name();
            // The size first: a big file is refused before it is read.
            let read = match Document::check_size(&name, f.size() as u64) {
                Ok(()) => files::read_bytes(&f, MAX_DOCUMENT_BYTES as u64).await.map_err(|e| format!("{name}: {e}")).and_then(|b| Document::from_bytes(name.clone(), b).map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            let doc = match read {
                Ok(d) => d,
                Err(e) => {
                    bad.push(e);
                    continue;
                }
            };
            if shelf.with_untracked(|s| s.own.len() >= MAX_DOCUMENTS && !s.own.iter().any(|d| d.name == name)) {
                bad.push(format!("{name}: a library holds {MAX_DOCUMENTS} documents at most; remove some first"));
                continue;
            }
            shelf.update(|s| {
                s.own.retain(|d| d.name != doc.name);
                s.own.push(doc);
            });
        }
        problems.set(bad);
    });
}

fn passages(hits: Vec<Hit>) -> impl IntoView {
    view! {
        <ol class="passages" aria-label="Retrieved passages">
            {hits.into_iter().map(|h| view! {
                <li><span class="muted">{format!("{} · BM25 {:.2}", h.doc, h.score)}</span><p>{h.text}</p></li>
            }).collect_view()}
        </ol>
    }
}

#[component]
pub fn DocumentsPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let shelf = ctx.shelf;
    let problems = RwSignal::new(Vec::<String>::new());
    let answer = RwSignal::new(None::<Answer>);
    let rows = RwSignal::new(Vec::<FactRow>::new());
    let total = RwSignal::new(0usize);
    let job = RwSignal::new(None::<JobId>);
    // The sample library and fact set, fetched beside the page; `facts` is a fact file the
    // student opened instead of the sample set.
    let samples = samples::load();
    let facts = RwSignal::new(None::<Vec<Fact>>);
    let facts_name = RwSignal::new("the sample set (20 questions about Quenby)".to_string());
    // One answer each way: the lab samples one whatever `num_samples` says.
    let settings = move || ctx.settings.with_untracked(|s| (s.encoding(), s.sampling.clone()));

    // Both wait for the sample files if a lesson asks before they are in.
    let ask = move || samples::when(shelf.with_untracked(|s| s.sample), move |samples| {
        let (encoding, sampling) = settings();
        let sh = shelf.get_untracked();
        answer.set(None);
        let id = client::job(move |ev| match ev {
            Event::Answered { answer: a, .. } => {
                answer.set(Some(a));
                job.set(None);
                lesson::finished(ctx, Action::Ask);
            }
            Event::Error { .. } => {
                job.set(None);
                lesson::finished(ctx, Action::Ask);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::Ask { job: id, question: sh.question.clone(), encoding, sampling, docs: sh.documents(samples.as_deref()), k: sh.k });
    }, move |e| {
        problems.set(vec![e]);
        lesson::finished(ctx, Action::Ask);
    });
    let needs_samples = move || shelf.with_untracked(|s| s.sample) || facts.with_untracked(Option::is_none);
    let check = move || samples::when(needs_samples(), move |samples| {
        let (encoding, sampling) = settings();
        let sh = shelf.get_untracked();
        let list = facts.get_untracked().or_else(|| samples.as_ref().map(|s| s.facts.clone())).unwrap_or_default();
        rows.set(Vec::new());
        total.set(list.len());
        let id = client::job(move |ev| match ev {
            Event::FactChecked { row, .. } => rows.update(|r| r.push(row)),
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                let s = FactSummary::of(&rows.get_untracked());
                if s.questions > 0 {
                    lesson::note(ctx, |r| {
                        record(r, "documents/retrieved", s.retrieved);
                        record(r, "documents/plain_right", s.plain_right);
                        record(r, "documents/grounded_right", s.grounded_right);
                    });
                }
                lesson::finished(ctx, Action::Facts);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::CheckFacts { job: id, facts: list, encoding, sampling, docs: sh.documents(samples.as_deref()), k: sh.k });
    }, move |e| {
        problems.set(vec![e]);
        lesson::finished(ctx, Action::Facts);
    });
    lesson::on_asked(ctx, Action::Ask, ask);
    lesson::on_asked(ctx, Action::Facts, check);
    let open_facts = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        leptos::task::spawn_local(async move {
            for f in picked {
                match files::read_bytes(&f, MAX_FACTS_BYTES as u64).await.and_then(|b| parse_facts(&b).map_err(|e| e.to_string())) {
                    Ok(list) => {
                        facts_name.set(format!("{} ({} questions)", f.name(), list.len()));
                        facts.set(Some(list));
                        problems.set(Vec::new());
                    }
                    Err(e) => problems.set(vec![format!("{}: {e}", f.name())]),
                }
            }
        });
    };
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none();
    let mark = |b: bool| if b { "✓" } else { "✗" };

    view! {
        <div class="panel documents">
            <p class="hint">"A small model makes up facts it never read. Give it the passages that hold the answer (found by BM25, a keyword ranking) and ask again."</p>
            <h2>"Documents"</h2>
            <label><input type="checkbox" aria-label="Include the sample documents" prop:checked=move || shelf.with(|s| s.sample)
                on:change=move |ev| shelf.update(|s| s.sample = event_target_checked(&ev))/>
                "Include the sample documents (six pages about Quenby, an island made up for this lab)"</label>
            <label>"Add text or Markdown files " <input type="file" multiple accept=".md,.txt,text/plain,text/markdown" aria-label="Add documents"
                on:change=move |ev| add_files(shelf, problems, files::picked(&ev))/></label>
            <ul class="problems">{move || {
                let mut all = problems.get();
                let unloaded = samples.with(|s| s.as_ref().and_then(|s| s.as_ref().err()).cloned());
                all.extend(unloaded.filter(|e| !all.contains(e)));
                all.into_iter().map(|p| view! { <li role="alert">{p}</li> }).collect_view()
            }}</ul>
            <ul class="doc-list" aria-label="Your documents">{move || shelf.with(|s| s.own.iter().enumerate().map(|(i, d)| {
                let label = format!("{} ({:.1} KB)", d.name, d.text.len() as f64 / 1000.0);
                view! { <li>{label}" "<button class="link" aria-label=format!("Remove {}", d.name) on:click=move |_| shelf.update(|s| { s.own.remove(i); })>"×"</button></li> }
            }).collect_view())}</ul>

            <h2>"Ask"</h2>
            <label class="wide">"Question" <input type="text" aria-label="Document question" prop:value=move || shelf.with(|s| s.question.clone())
                on:input=move |ev| shelf.update(|s| s.question = event_target_value(&ev))/></label>
            <div class="row">
                <label title="How many passages go into the prompt">"Passages "
                    <input type="number" min="1" max=MAX_TOP_K.to_string() aria-label="Passages" prop:value=move || shelf.with(|s| s.k.to_string())
                        on:change=move |ev| {
                            if let Ok(k) = event_target_value(&ev).parse::<usize>() {
                                shelf.update(|s| s.k = k.clamp(1, MAX_TOP_K))
                            }
                        }/></label>
                <button class="primary" disabled=move || !idle() on:click=move |_| ask()>"Ask"</button>
                <button disabled=move || !idle() on:click=move |_| check()>"Check the facts"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            </div>
            {move || answer.get().map(|a| view! {
                <h3>"Passages put into the prompt"</h3>
                {passages(a.hits)}
                <div class="side-by-side">
                    <article class="card" aria-label="Without documents"><header><strong>"Without documents"</strong></header><p class="sample-text">{a.plain}</p></article>
                    <article class="card" aria-label="With documents"><header><strong>"With the passages"</strong></header><p class="sample-text">{a.grounded}</p></article>
                </div>
            })}

            <h2>"Fact set"</h2>
            <p class="hint">{move || format!("Questions with known answers: {}. A right answer holds the expected fact.", facts_name.get())}</p>
            <label>"Open a fact file " <input type="file" accept=".json,application/json" aria-label="Open a fact file" on:change=open_facts/></label>
            <p role="status" aria-label="Fact summary">{move || {
                let r = rows.get();
                (!r.is_empty()).then(|| {
                    let s = FactSummary::of(&r);
                    format!("{} of {} questions: right without documents {:.0}%, with the passages {:.0}%; the answer's document retrieved for {:.0}%.",
                        s.questions, total.get(), s.plain_right * 100.0, s.grounded_right * 100.0, s.retrieved * 100.0)
                })
            }}</p>
            <Show when=move || !rows.with(Vec::is_empty)>
            <table aria-label="Fact checks">
                <thead><tr><th>"Question"</th><th>"Expected"</th><th>"Retrieved"</th><th>"Without"</th><th>"With"</th></tr></thead>
                <tbody>{move || rows.get().into_iter().map(|r| view! {
                    <tr><td>{r.question.clone()}</td><td>{r.expected.clone()}</td><td>{mark(r.retrieved)}</td>
                        <td title=r.answer.plain.clone()>{mark(r.plain_right)}</td><td title=r.answer.grounded.clone()>{mark(r.grounded_right)}</td></tr>
                }).collect_view()}</tbody>
            </table>
            </Show>
        </div>
    }
}
