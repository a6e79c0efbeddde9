//! Adversarial probes: prompts written to pull the model into rude, unsafe or off-topic answers
//! or off its instructions, each answered by the model before alignment (the reference) and after
//! it (the policy) with the same seed, judged; what got better, what still triggers, and pairs
//! against what triggered. The work is `lab::probes`, in the worker; this file keeps the
//! student's probes and the last results, and shows them.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, client, files, lesson, samples};
use crate::data::Preference;
use crate::lab::lesson::{Action, record};
use crate::lab::probes::{MAX_PROBES, MAX_PROBES_BYTES, ProbeSummary, Side, parse_probes, probes_file};
use crate::worker::protocol::*;

/// Best against worst, second best against second worst, …: up to this many pairs from a probe.
const PAIRS_PER_PROBE: usize = 4;

/// What the tab remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbesState {
    /// Run the shipped probe set too.
    pub shipped: bool,
    /// The student's own probes.
    pub own: Vec<Probe>,
    /// Only this category (none: every one).
    pub category: Option<Category>,
    /// The last run's results, kept across a reload.
    pub results: Vec<ProbeResult>,
}

impl Default for ProbesState {
    fn default() -> Self {
        Self { shipped: true, own: Vec::new(), category: None, results: Vec::new() }
    }
}

impl ProbesState {
    /// The probes a run asks: the shipped set (`shipped`, fetched beside the page) when ticked, and
    /// the student's own, of the chosen category.
    fn chosen(&self, shipped: &[Probe]) -> Vec<Probe> {
        let shipped = if self.shipped { shipped } else { &[] };
        shipped.iter().chain(&self.own).filter(|p| self.category.is_none_or(|c| p.category == c)).cloned().collect()
    }
}

fn category_value(c: Option<Category>) -> String {
    c.map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).unwrap_or_default()
}

fn parse_category(v: &str) -> Option<Category> {
    crate::lab::from_value(serde_json::Value::String(v.to_string())).ok()
}

fn category_options(with_all: bool) -> impl IntoView {
    let all = with_all.then(|| view! { <option value="">"every category"</option> });
    view! { {all} {Category::ALL.iter().map(|c| view! { <option value=category_value(Some(*c))>{c.label()}</option> }).collect_view()} }
}

fn summary_line(s: &ProbeSummary) -> String {
    let a = &s.all;
    format!(
        "{} probes: answers showing the behaviour {:.0}% before → {:.0}% after; mean score {:+.2} → {:+.2}; spread {:.2} → {:.2}; length {:.1} → {:.1} words; KL {:.2} nats. Fixed {}, better {}, still triggering {}, worse {}.",
        a.probes, 100.0 * a.rate_before, 100.0 * a.rate_after, a.mean_before, a.mean_after, s.spread_before, s.spread_after, s.words_before, s.words_after, s.kl, s.fixed, s.better, s.still_triggers, s.worse
    )
}

fn answers(title: &'static str, side: Side) -> impl IntoView {
    view! {
        <div><strong>{title}</strong><ol>{side.texts.into_iter().zip(side.scores).map(|(t, s)| view! {
            <li><span class="muted">{format!("{s:+.2} ")}</span>{t}</li>
        }).collect_view()}</ol></div>
    }
}

fn result_row(r: ProbeResult) -> impl IntoView {
    let n = r.before.scores.len();
    let cell = |s: &Side| format!("{}/{n} ({:+.2})", s.triggered, s.mean());
    let (before, after) = (cell(&r.before), cell(&r.after));
    let system = (!r.probe.system.is_empty()).then(|| view! { <p class="muted">{format!("System: {}", r.probe.system)}</p> });
    view! {
        <tr class=format!("verdict-{:?}", r.verdict).to_lowercase()>
            <td>{r.probe.category.label()}</td>
            <td><details><summary>{r.probe.prompt.clone()}</summary>{system}<p class="muted">{r.probe.note.clone()}</p>
                <div class="side-by-side">{answers("Before", r.before)}{answers("After", r.after)}</div></details></td>
            <td>{before}</td><td>{after}</td><td>{format!("{:.2}", r.kl)}</td><td>{r.verdict.label()}</td>
        </tr>
    }
}

/// The form that adds a probe of the student's own.
fn new_probe_form(st: RwSignal<ProbesState>, problems: RwSignal<Vec<String>>) -> impl IntoView {
    let draft = RwSignal::new(Probe { judges: vec!["sentiment".into(), "profanity".into()], ..Probe::default() });
    let judges_text = RwSignal::new("sentiment, profanity".to_string());
    let add = move |_| {
        let mut p = draft.get_untracked();
        p.judges = judges_text.get_untracked().split(',').map(|j| j.trim().to_string()).filter(|j| !j.is_empty()).collect();
        match p.validate() {
            Err(e) => problems.set(vec![format!("Your probe: {e}")]),
            Ok(()) if st.with_untracked(|s| s.own.len()) >= MAX_PROBES => problems.set(vec![format!("You have {MAX_PROBES} probes; remove some first.")]),
            Ok(()) => {
                st.update(|s| s.own.push(p));
                draft.update(|d| d.prompt.clear());
                problems.set(Vec::new());
            }
        }
    };
    view! {
        <fieldset class="new-probe"><legend>"Write a probe"</legend>
            <label>"Category " <select aria-label="New probe category" on:change=move |ev| {
                if let Some(c) = parse_category(&event_target_value(&ev)) { draft.update(|d| d.category = c) }
            }>{category_options(false)}</select></label>
            <label class="wide">"Prompt" <textarea aria-label="New probe prompt" prop:value=move || draft.with(|d| d.prompt.clone())
                on:input=move |ev| draft.update(|d| d.prompt = event_target_value(&ev))></textarea></label>
            <label class="wide">"System prompt (optional)" <input type="text" aria-label="New probe system prompt"
                on:input=move |ev| draft.update(|d| d.system = event_target_value(&ev))/></label>
            <label title="The judges that score each answer, as in the CLI: sentiment, politeness, profanity, length=N, include=a+b, avoid=a+b">
                "Judges " <input type="text" aria-label="New probe judges" prop:value=move || judges_text.get() on:input=move |ev| judges_text.set(event_target_value(&ev))/></label>
            <label title="An answer scored below this shows the behaviour">"Triggers below "
                <input type="number" step="0.1" aria-label="New probe trigger" prop:value=move || draft.with(|d| d.trigger_below.to_string())
                    on:change=move |ev| { if let Ok(x) = event_target_value(&ev).parse::<f64>() { draft.update(|d| d.trigger_below = x) } }/></label>
            <button on:click=add>"Add the probe"</button>
        </fieldset>
    }
}

#[component]
pub fn ProbesPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.probes;
    let problems = RwSignal::new(Vec::<String>::new());
    let progress = RwSignal::new((0usize, 0usize));
    let job = RwSignal::new(None::<JobId>);
    let shipped = samples::load();
    let go = move |shipped: &[Probe]| {
        let probes = st.with_untracked(|s| s.chosen(shipped));
        if probes.is_empty() {
            problems.set(vec!["No probe to run: include the shipped set, pick another category, or write one.".into()]);
            lesson::finished(ctx, Action::Probes);
            return;
        }
        let (encoding, sampling) = ctx.settings.with_untracked(|s| (s.encoding(), s.sampling.clone()));
        problems.set(Vec::new());
        st.update(|s| s.results.clear());
        progress.set((0, probes.len()));
        let id = client::job(move |ev| match ev {
            Event::ProbeAnswered { result, done, total, .. } => {
                st.update(|s| s.results.push(result));
                progress.set((done, total));
            }
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                let s = ProbeSummary::of(&st.with_untracked(|s| s.results.clone()));
                if s.all.probes > 0 {
                    lesson::note(ctx, |r| {
                        record(r, "probes/triggered_before", s.all.rate_before);
                        record(r, "probes/triggered_after", s.all.rate_after);
                        record(r, "probes/spread_after", s.spread_after);
                        record(r, "probes/kl", s.kl);
                    });
                }
                lesson::finished(ctx, Action::Probes);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::Probes { job: id, probes, encoding, sampling });
    };
    // The shipped set waits for its file if a lesson asks before it is in.
    let run = move || {
        samples::when(st.with_untracked(|s| s.shipped), move |s| go(s.as_ref().map_or(&[], |s| &s.probes)), move |e| {
            problems.set(vec![e]);
            lesson::finished(ctx, Action::Probes);
        })
    };
    lesson::on_asked(ctx, Action::Probes, run);
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let add_pairs = move |_| {
        let pairs: Vec<Preference> = st.with_untracked(|s| s.results.iter().flat_map(|r| r.pairs(PAIRS_PER_PROBE)).collect());
        let n = pairs.len();
        ctx.pairs.update(|p| p.extend(pairs));
        ctx.notice.set(Some(format!("{n} pairs added to your data (best answer chosen, worst rejected); train DPO on them in the Train tab, then run the probes again.")));
    };
    let open = move |ev: leptos::ev::Event| {
        let picked = files::picked(&ev);
        leptos::task::spawn_local(async move {
            for f in picked {
                match files::read_bytes(&f, MAX_PROBES_BYTES as u64).await.and_then(|b| parse_probes(&b).map_err(|e| e.to_string())) {
                    Ok(list) if st.with_untracked(|s| s.own.len() + list.len()) > MAX_PROBES => {
                        problems.set(vec![format!("{}: {} probes would make more than {MAX_PROBES}; remove some first", f.name(), list.len())])
                    }
                    Ok(list) => {
                        st.update(|s| s.own.extend(list));
                        problems.set(Vec::new());
                    }
                    Err(e) => problems.set(vec![format!("{}: {e}", f.name())]),
                }
            }
        });
    };
    let save = |name: &str, text: String| {
        if let Err(e) = files::download(name, "application/json", text.as_bytes()) {
            leptos::logging::error!("download failed: {e}");
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none();
    let untrained = move || ctx.policy.with(|(k, _)| matches!(k, PolicyKind::Base));

    view! {
        <div class="panel probes">
            <p class="hint">"Probes are prompts written to pull a model off its instructions or into answers it should not give. Each is answered by the model before alignment (the base) and after it (your trained model), with the same seed, and judged. Run them before training, train, and run them again."</p>
            <p class="muted" aria-label="After is">{move || if untrained() {
                "You have not trained yet: before and after are the same model, so this shows what triggers now.".to_string()
            } else {
                format!("After = {}.", ctx.policy.with(|(_, d)| d.clone()))
            }}</p>
            <div class="row">
                <label><input type="checkbox" aria-label="Include the shipped probes" prop:checked=move || st.with(|s| s.shipped)
                    on:change=move |ev| st.update(|s| s.shipped = event_target_checked(&ev))/>{move || match shipped.get() {
                        Some(Ok(s)) => format!("The shipped probes ({})", s.probes.len()),
                        Some(Err(e)) => format!("The shipped probes: {e}"),
                        None => "The shipped probes (loading…)".into(),
                    }}</label>
                <label>"Run " <select aria-label="Probe category" prop:value=move || st.with(|s| category_value(s.category))
                    on:change=move |ev| st.update(|s| s.category = parse_category(&event_target_value(&ev)))>{category_options(true)}</select></label>
                <button class="primary" disabled=move || !idle() on:click=move |_| run()>"Run the probes"</button>
                <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
                <span class="muted">{move || job.get().map(|_| { let (d, t) = progress.get(); format!("{d} of {t} probes") })}</span>
            </div>
            <ul class="problems">{move || problems.get().into_iter().map(|p| view! { <li role="alert">{p}</li> }).collect_view()}</ul>
            <p role="status" aria-label="Probe summary">{move || st.with(|s| (!s.results.is_empty()).then(|| summary_line(&ProbeSummary::of(&s.results))))}</p>
            <Show when=move || st.with(|s| !s.results.is_empty())>
                <table class="narrow" aria-label="Probes by category">
                    <thead><tr><th>"Category"</th><th>"Probes"</th><th>"Before"</th><th>"After"</th></tr></thead>
                    <tbody>{move || st.with(|s| ProbeSummary::of(&s.results).by_category.into_iter().map(|(c, t)| view! {
                        <tr><td>{c.label()}</td><td>{t.probes}</td><td>{format!("{:.0}%", 100.0 * t.rate_before)}</td><td>{format!("{:.0}%", 100.0 * t.rate_after)}</td></tr>
                    }).collect_view())}</tbody>
                </table>
                <table aria-label="Probe results">
                    <thead><tr><th>"Category"</th><th>"Probe (open for the answers)"</th><th>"Before: triggered (mean)"</th><th>"After"</th><th>"KL"</th><th>"Verdict"</th></tr></thead>
                    <tbody>{move || st.with(|s| s.results.iter().cloned().map(result_row).collect_view())}</tbody>
                </table>
                <div class="row">
                    <button disabled=move || !idle() on:click=add_pairs title="For each probe without its own system prompt: its best answer chosen over its worst, second best over second worst, up to four pairs">"Add pairs against what triggered"</button>
                    <button on:click=move |_| save("probe-results.json", st.with_untracked(|s| serde_json::to_string_pretty(&serde_json::json!({"summary": ProbeSummary::of(&s.results), "probes": s.results})).unwrap_or_default()))>"Download the results"</button>
                </div>
            </Show>

            <h2>"Your probes"</h2>
            {new_probe_form(st, problems)}
            <label>"Open a probe file " <input type="file" accept=".json,application/json" aria-label="Open a probe file" on:change=open/></label>
            <ul class="doc-list" aria-label="Your probes">{move || st.with(|s| s.own.iter().enumerate().map(|(i, p)| {
                let label = format!("[{}] {}", p.category.label(), p.prompt);
                view! { <li>{label}" "<button class="link" aria-label=format!("Remove probe {}", i + 1) on:click=move |_| st.update(|s| { s.own.remove(i); })>"×"</button></li> }
            }).collect_view())}</ul>
            <button disabled=move || st.with(|s| s.own.is_empty()) on:click=move |_| save("probes.json", st.with_untracked(|s| probes_file(&s.own)))>"Download your probes"</button>
        </div>
    }
}
