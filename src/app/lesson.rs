//! Guided lessons over the real panels. The Lessons tab lists the built-in lab files and opens one
//! from a file; `?lab=URL` names one in a link. A lesson's card sits above every panel: the step's
//! text, "Try it" (the panel runs its own action, so nothing here trains or generates), then what
//! to notice with the numbers that show it, and a question. The student can leave at any step and
//! keep working: the settings and data stay as the lesson left them.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ctx, Tab, client, files, fixed};
use crate::lab::{PolicyKind, TrainData};
use crate::lab::carried::Carried;
use crate::lab::lesson::{Action, Lesson, MAX_LAB_BYTES, Outcome, Preset, Readings, places};
use crate::worker::protocol::*;

/// The lesson in progress, kept across reloads: the step, and the readings when it began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LessonState {
    #[serde(with = "as_lab_file")]
    pub lesson: Lesson,
    pub step: usize,
    pub before: Readings,
    /// "Try it" was pressed on this step.
    pub tried: bool,
    /// What was on the Data tab when the lesson began and it does not bring: its steps leave it
    /// out. Empty in a lesson kept from before the field.
    #[serde(default)]
    pub carried: Carried,
}

/// The lesson kept as its lab file's JSON text: the browser's store turns every number into a
/// float, and a lab's settings must come back as written (`"max_steps": 7`, not `7.0`).
mod as_lab_file {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

    use crate::lab::lesson::Lesson;

    pub fn serialize<S: Serializer>(l: &Lesson, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serde_json::to_string(l).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lesson, D::Error> {
        let text = String::deserialize(d)?;
        Lesson::parse(text.as_bytes()).map_err(D::Error::custom)
    }
}

/// A step's action as the panels see it: asked by the card, running in a panel, done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    Idle,
    Asked(Action),
    Running(Action),
    Done(Action),
}

/// Called by a panel: runs `f` when the card asked for `action`, and marks it running.
pub fn on_asked(ctx: Ctx, action: Action, f: impl Fn() + 'static) {
    Effect::new(move |_| {
        if ctx.act.get() == Act::Asked(action) {
            ctx.act.set(Act::Running(action));
            f();
        }
    });
}

/// The Data tab, whole.
pub fn data_tab(ctx: Ctx) -> TrainData {
    TrainData { pairs: ctx.pairs.get_untracked(), unpaired: ctx.unpaired.get_untracked(), demos: ctx.demos.get_untracked(), prompts: ctx.prompts.get_untracked() }
}

/// The data a panel's `action` runs on: the Data tab's, or, when the lesson's card asked for it,
/// without what the class carried into the lesson ([`Carried`]). The panel's own button keeps the
/// whole Data tab.
pub fn data_for(ctx: Ctx, action: Action) -> TrainData {
    let data = data_tab(ctx);
    if ctx.act.get_untracked() != Act::Running(action) {
        return data;
    }
    ctx.lesson.with_untracked(|st| st.as_ref().map(|st| st.carried.leave_out(&data))).unwrap_or(data)
}

/// The prompts a panel's `action` runs on ([`data_for`]).
pub fn prompts_for(ctx: Ctx, action: Action) -> Vec<String> {
    data_for(ctx, action).prompts
}

/// What a panel adds to its count of `data`'s items (`count` of them: the panel reads the kinds it
/// shows) while the open lesson's steps take fewer ([`data_for`]); empty otherwise. Tracked, for
/// a panel's view.
pub fn lesson_note(ctx: Ctx, data: &TrainData, count: fn(&TrainData) -> usize) -> String {
    let Some(st) = ctx.lesson.get() else { return String::new() };
    match count(&st.carried.leave_out(data)) {
        n if n < count(data) => format!(" (the lesson's Try it takes its own {n})"),
        _ => String::new(),
    }
}

/// [`lesson_note`] for the Data tab's prompts.
pub fn prompts_note(ctx: Ctx) -> String {
    lesson_note(ctx, &TrainData { prompts: ctx.prompts.get(), ..TrainData::default() }, |d| d.prompts.len())
}

/// Called by a panel when its action ended (however it ended).
pub fn finished(ctx: Ctx, action: Action) {
    if ctx.act.get_untracked() == Act::Running(action) {
        ctx.act.set(Act::Done(action));
    }
}

/// Records readings (a panel's numbers the lesson can watch).
pub fn note(ctx: Ctx, f: impl FnOnce(&mut Readings)) {
    ctx.readings.update(f);
}

/// Puts a preset's settings in place and adds its examples to the student's data.
pub fn apply(ctx: Ctx, p: &Preset) {
    ctx.settings.update(|s| {
        if let Some(x) = &p.system {
            s.system = x.clone();
        }
        if let Some(x) = &p.prompt {
            s.prompt = x.clone();
        }
        if let Some(x) = p.chat {
            s.chat = x;
        }
        s.sampling = p.sampling(&s.sampling);
        s.judges = p.judges(&s.judges);
        s.train = p.train(&s.train);
    });
    let mut data = data_tab(ctx);
    if p.add_data(&mut data) > 0 {
        ctx.pairs.set(data.pairs);
        ctx.unpaired.set(data.unpaired);
        ctx.demos.set(data.demos);
        ctx.prompts.set(data.prompts);
    }
}

fn enter(ctx: Ctx, lesson: Lesson, step: usize, carried: Carried) {
    let Some(s) = lesson.steps.get(step) else { return };
    apply(ctx, &s.set);
    ctx.tab.set(Tab::from(s.panel));
    ctx.act.set(Act::Idle);
    ctx.lesson.set(Some(LessonState { lesson, step, before: ctx.readings.get_untracked(), tried: false, carried }));
}

/// Starts `lesson` at its first step; what the Data tab holds that the lesson does not bring is
/// carried ([`Carried`]).
pub fn start(ctx: Ctx, lesson: Lesson) {
    let carried = lesson.carried(&data_tab(ctx));
    apply(ctx, &lesson.setup);
    enter(ctx, lesson, 0, carried);
}

/// Runs `f` once the last visit's settings and lesson are back from the browser's store: a link's
/// settings or lesson put in place before would be overwritten by them.
fn after_restore(ctx: Ctx, f: impl FnOnce() + 'static) {
    leptos::task::spawn_local(async move {
        while !ctx.restored.get_untracked() {
            gloo_timers::future::TimeoutFuture::new(20).await;
        }
        f();
    });
}

/// Puts in place the settings a link carries (`?set=` JSON), once the last visit's are back.
pub fn open_settings_link(ctx: Ctx, json: String) {
    match Preset::parse(&json) {
        Ok(p) => after_restore(ctx, move || {
            apply(ctx, &p);
            ctx.notice.set(Some("This link set the lab's settings (prompt, sampling, judges and training): see the tabs.".into()));
        }),
        Err(e) => ctx.banner.set(Some(super::Banner { kind: ErrorKind::Invalid, message: format!("{e}. Your own settings are unchanged."), fatal: false })),
    }
}

/// The page's address with every current setting in it, for a teacher to share.
fn settings_link(ctx: Ctx) -> String {
    let s = ctx.settings.get_untracked();
    let p = Preset::of(&s.system, &s.prompt, s.chat, &s.sampling, &s.judges, &s.train);
    let json = serde_json::to_string(&p).unwrap_or_default();
    let Some(loc) = web_sys::window().map(|w| w.location()) else { return String::new() };
    let params = web_sys::UrlSearchParams::new_with_str(&loc.search().unwrap_or_default()).ok();
    if let Some(q) = &params {
        // The link sets the settings; a lab or another preset in the current address would fight it.
        q.delete("lab");
        q.set("set", &json);
    }
    format!("{}{}?{}", loc.origin().unwrap_or_default(), loc.pathname().unwrap_or_default(), params.map(|q| String::from(q.to_string())).unwrap_or_default())
}

/// Opens the lab file a link names (`?lab=URL`): fetched by the worker, which may reach other
/// sites (the page itself may not); the page asked first when the URL is another site's.
pub fn open_url(ctx: Ctx, url: String) {
    let shown = url.clone();
    let id = client::job(move |ev| match ev {
        Event::Fetched { bytes, .. } => match Lesson::parse(&bytes) {
            // Reloading a page opened by a lab link keeps the student's place in that lesson.
            Ok(l) => after_restore(ctx, move || {
                if ctx.lesson.get_untracked().is_none_or(|st| st.lesson != l) {
                    start(ctx, l);
                }
            }),
            Err(e) => ctx.banner.set(Some(super::Banner { kind: ErrorKind::Invalid, message: format!("The lab at {shown} could not be opened: {e}"), fatal: false })),
        },
        _ => {}
    });
    client::send(&Request::Fetch { job: id, url });
}

fn outcome_line(metric: &str, o: Option<Outcome>) -> (String, &'static str) {
    let places = places(metric);
    match o {
        None => (format!("{metric}: not measured yet"), "pending"),
        Some(o) => {
            let moved = match o.from {
                Some(f) => format!("{metric}: {} → {}", fixed(f, places), fixed(o.to, places)),
                None => format!("{metric}: {}", fixed(o.to, places)),
            };
            match o.as_expected {
                Some(true) => (format!("{moved} ✓ as the lesson expects"), "yes"),
                Some(false) => (format!("{moved} ✗ not the way the lesson expects this time: why might that be?"), "no"),
                None => (moved, "shown"),
            }
        }
    }
}

/// The card of the lesson in progress, above every panel.
#[component]
pub fn LessonCard() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let go = move |delta: isize| {
        if let Some(st) = ctx.lesson.get_untracked() {
            let to = st.step as isize + delta;
            if to >= 0 && (to as usize) < st.lesson.steps.len() {
                enter(ctx, st.lesson, to as usize, st.carried);
            }
        }
    };
    let try_it = move |_| {
        let Some(mut st) = ctx.lesson.get_untracked() else { return };
        let Some(step) = st.lesson.steps.get(st.step) else { return };
        ctx.tab.set(Tab::from(step.panel));
        st.before = ctx.readings.get_untracked();
        st.tried = true;
        let action = step.action;
        if step.from_base && ctx.policy.get_untracked().0 != PolicyKind::Base {
            super::train::reset_to_base(ctx);
        }
        ctx.lesson.set(Some(st));
        ctx.act.set(Act::Asked(action));
    };
    let busy = move || matches!(ctx.act.get(), Act::Asked(_) | Act::Running(_));
    // An action that failed (the banner says why) is over too.
    Effect::new(move |_| {
        if ctx.banner.get().is_some() {
            if let Act::Asked(a) | Act::Running(a) = ctx.act.get_untracked() {
                ctx.act.set(Act::Done(a));
            }
        }
    });
    view! {
        {move || ctx.lesson.get().map(|st| {
            let n = st.lesson.steps.len();
            let step = st.lesson.steps[st.step.min(n - 1)].clone();
            let action = step.action;
            let fresh = if step.from_base { " (from the base model)" } else { "" };
            let show_after = action == Action::None || (st.tried && ctx.act.get() == Act::Done(action));
            let before = st.before.clone();
            let watch = step.watch.clone();
            view! {
                <aside class="lesson" aria-label="Lesson">
                    <header>
                        <span class="muted">{format!("Lesson: {} · step {} of {n}", st.lesson.title, st.step + 1)}</span>
                        <button class="small" on:click=move |_| { ctx.lesson.set(None); ctx.act.set(Act::Idle); }
                            title="Close the lesson; your settings and data stay as they are">"Leave lesson"</button>
                    </header>
                    <h2>{step.title.clone()}</h2>
                    <p>{step.text.clone()}</p>
                    <Show when=move || action != Action::None>
                        <div class="row">
                            <button class="primary" disabled=move || busy() || ctx.model.get().is_none() on:click=try_it>
                                {format!("Try it: {}{fresh}", action.label())}</button>
                            <span class="muted" role="status" aria-label="Lesson action">{move || match ctx.act.get() {
                                Act::Asked(_) | Act::Running(_) => "Running… (watch the panel below)",
                                Act::Done(_) => "Done.",
                                Act::Idle => "",
                            }}</span>
                        </div>
                    </Show>
                    <Show when=move || show_after>
                        <p class="notice">{step.notice.clone()}</p>
                        <ul class="watch" aria-label="Numbers to watch">
                            {watch.iter().map(|w| {
                                let (w, before) = (w.clone(), before.clone());
                                move || {
                                    let (text, state) = outcome_line(&w.metric, w.outcome(&before, &ctx.readings.get()));
                                    view! { <li data-metric=w.metric.clone() data-expected=state>{text}</li> }
                                }
                            }).collect_view()}
                        </ul>
                        {step.question.clone().map(|q| view! { <p class="question"><strong>"Question for the class: "</strong>{q}</p> })}
                    </Show>
                    <div class="row">
                        <button disabled=st.step == 0 on:click=move |_| go(-1)>"Back"</button>
                        {if st.step + 1 < n {
                            view! { <button on:click=move |_| go(1)>"Next step"</button> }.into_any()
                        } else {
                            view! { <button on:click=move |_| { ctx.lesson.set(None); ctx.tab.set(Tab::Lessons); }>"Finish lesson"</button> }.into_any()
                        }}
                    </div>
                </aside>
            }
        })}
    }
}

/// The built-in lessons: the files `labs/index.json` lists, beside the page. They are data, not
/// code: kept out of the page's wasm (the first download, before anything shows) and fetched
/// beside it; the service worker keeps them for visits without a network.
async fn fetch_built_in() -> Result<Vec<Lesson>, String> {
    let index = files::fetch_own(&["labs/index.json".to_string()], 64 << 10).await?.remove(0);
    let names: Vec<String> = serde_json::from_slice(&index).map_err(|e| format!("labs/index.json: {e}"))?;
    let urls: Vec<String> = names.iter().map(|n| format!("labs/{n}")).collect();
    let bodies = files::fetch_own(&urls, MAX_LAB_BYTES).await?;
    urls.iter().zip(bodies).map(|(u, b)| Lesson::parse(&b).map_err(|e| format!("{u}: {e}"))).collect()
}

/// The Lessons tab: the built-in lessons with one obvious start, and a teacher's lab file.
#[component]
pub fn LessonList() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let lessons = RwSignal::new(None::<Result<Vec<Lesson>, String>>);
    leptos::task::spawn_local(async move { lessons.set(Some(fetch_built_in().await)) });
    let link = RwSignal::new(String::new());
    let on_file = move |ev: leptos::ev::Event| {
        let Some(f) = files::picked(&ev).into_iter().next() else { return };
        leptos::task::spawn_local(async move {
            let parsed = match files::read_bytes(&f, MAX_LAB_BYTES as u64).await {
                Ok(b) => Lesson::parse(&b).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match parsed {
                Ok(l) => start(ctx, l),
                Err(e) => ctx.banner.set(Some(super::Banner { kind: ErrorKind::Invalid, message: format!("{}: {e}", f.name()), fatal: false })),
            }
        });
    };
    view! {
        <div class="panel lessons">
            <p class="lead">"Each lesson runs on the model above: read a step, press Try it, and see what changed. Leave any time and keep working in the tabs."</p>
            {move || match lessons.get() {
                None => view! { <p class="muted">"Loading the lessons…"</p> }.into_any(),
                Some(Err(e)) => view! {
                    <p role="alert">{format!("The built-in lessons could not be loaded ({e}). Reload the page; a lab file still opens below.")}</p>
                }.into_any(),
                Some(Ok(list)) => view! { <LessonItems lessons=list/> }.into_any(),
            }}
            <label>"Open a lab file (JSON) "
                <input type="file" accept=".json,application/json" aria-label="Open lab file" on:change=on_file/></label>
            <p class="hint">"Teachers: the format is in docs/lab-files.md; the built-in lessons are in the app's labs/ folder as examples."</p>
            <div class="row">
                <button on:click=move |_| link.set(settings_link(ctx))
                    title="A link that opens this page with your current prompt, sampling, judges and training settings">"Share these settings as a link"</button>
                <Show when=move || !link.get().is_empty()>
                    <input type="text" readonly class="wide" aria-label="Settings link" prop:value=link/>
                </Show>
            </div>
        </div>
    }
}

/// The built-in lessons as a list, the first with the one obvious start.
#[component]
fn LessonItems(lessons: Vec<Lesson>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <ol class="lesson-list">
            {lessons.into_iter().enumerate().map(|(i, l)| {
                let title = l.title.clone();
                let meta = l.minutes.map(|m| format!("about {m} min · {} steps", l.steps.len())).unwrap_or_else(|| format!("{} steps", l.steps.len()));
                let summary = l.summary.clone();
                view! {
                    <li>
                        <button class=if i == 0 { "primary" } else { "" } aria-label=format!("Start lesson: {title}")
                            on:click=move |_| start(ctx, l.clone())>{if i == 0 { "Start here" } else { "Start" }}</button>
                        <strong>{title.clone()}</strong>" "<span class="muted">{meta}</span>
                        <p>{summary}</p>
                    </li>
                }
            }).collect_view()}
        </ol>
    }
}
