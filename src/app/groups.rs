//! Whose preferences: the class's raters put in groups, how often the groups agree, and one DPO
//! adapter per group and one on every group's pairs, each scored on every group's held-out pairs.
//! The work is `lab::groups`, in the worker; this file assigns groups and shows the tables.

use leptos::prelude::*;

use super::class::ClassRoom;
use super::{Ctx, client, files, lesson, percent, samples};
use crate::align::Encoding;
use crate::lab::MethodKind;
use crate::lab::groups::{GroupSummary, MERGED, agreements, groups_of, mean_agreement};
use crate::lab::lesson::{Action, record};
use crate::worker::protocol::*;

/// The group each rater is in, as the table shows it.
fn group_of(room: &ClassRoom, rater: &str) -> String {
    room.groups.get(rater.trim()).cloned().unwrap_or_else(|| rater.trim().to_string())
}

/// The adapters' table: one row per adapter, one column per group's held-out pairs.
fn adapters_table(room: &ClassRoom) -> impl IntoView + use<> {
    let names = room.scored.clone();
    let head = names.iter().map(|g| view! { <th>{format!("{g}'s held-out pairs")}</th> }).collect_view();
    let rows = room.adapters.iter().map(|r| {
        let label = if r.adapter == MERGED { format!("merged ({} pairs)", r.trained_on) } else { format!("{} ({} pairs)", r.adapter, r.trained_on) };
        let cells = r.scores.iter().zip(&names).map(|(s, g)| {
            let own = *g == r.adapter;
            view! { <td class:own=own title=format!("{} pairs; mean margin {:+.2} nats", s.pairs, s.margin)>{percent(s.accuracy)}</td> }
        }).collect_view();
        view! { <tr><th>{label}</th>{cells}</tr> }
    }).collect_view();
    view! {
        <table aria-label="Group adapters">
            <thead><tr><th>"Adapter trained on"</th>{head}</tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
pub fn GroupsSection() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let room = ctx.class;
    let job = RwSignal::new(None::<JobId>);
    let progress = RwSignal::new(String::new());
    let groups = Memo::new(move |_| room.with(|r| groups_of(&r.files, &r.groups)));

    let go = move || {
        let st = ctx.settings.get_untracked();
        // The Train tab's DPO, LoRA and step settings, whatever method it shows.
        let settings = crate::lab::RunSettings { method: MethodKind::Dpo, ..st.train.clone() };
        let encoding = Encoding { chat: st.chat, system: st.system.clone(), ..Encoding::default() };
        let run = settings.spec(Vec::new(), encoding, TrainData::default());
        let list = groups.get_untracked();
        let names: Vec<String> = list.iter().map(|g| g.name.clone()).collect();
        room.update(|r| {
            r.adapters.clear();
            r.scored = names.clone();
        });
        let id = client::job(move |ev| match ev {
            Event::GroupStep { adapter, step, steps, .. } => progress.set(format!("Training {adapter}: step {step} of {steps}")),
            Event::GroupTrained { row, .. } => room.update(|r| r.adapters.push(row)),
            // An error also reaches the page's banner.
            Event::Done { .. } | Event::Error { .. } => {
                job.set(None);
                progress.set(String::new());
                let (rows, names) = room.with_untracked(|r| (r.adapters.clone(), r.scored.clone()));
                if let Some(s) = GroupSummary::of(&rows, &names) {
                    let agree = mean_agreement(&agreements(&groups.get_untracked()));
                    lesson::note(ctx, |r| {
                        if let Some(a) = agree {
                            record(r, "groups/agreement", a);
                        }
                        record(r, "groups/own_accuracy", s.own);
                        record(r, "groups/other_accuracy", s.other);
                        record(r, "groups/merged_accuracy", s.merged);
                    });
                }
                lesson::finished(ctx, Action::Groups);
            }
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::Groups { job: id, groups: list, run });
    };
    let train = move || {
        samples::when(
            room.with_untracked(|r| r.files.is_empty()),
            move |s| {
                if let Some(s) = s {
                    room.set(ClassRoom::sample(&s));
                    ctx.notice.set(Some("No class files were open, so the sample class is used: Ana and Ben (brief), Chloe and Dev (thorough).".into()));
                }
                go();
            },
            move |e| {
                ctx.notice.set(Some(format!("No class files are open, and {e}")));
                lesson::finished(ctx, Action::Groups);
            },
        );
    };
    lesson::on_asked(ctx, Action::Groups, train);
    let stop = move |_| {
        if let Some(id) = job.get_untracked() {
            client::send(&Request::Cancel { job: id });
        }
    };
    let idle = move || ctx.model.get().is_some() && job.get().is_none() && !ctx.training.get();
    let download = move |_| {
        let json = room.with_untracked(|r| serde_json::to_string_pretty(&serde_json::json!({"groups": r.scored, "adapters": r.adapters})).unwrap_or_default());
        if let Err(e) = files::download("group-adapters.json", "application/json", json.as_bytes()) {
            ctx.notice.set(Some(format!("Download failed: {e}")));
        }
    };

    view! {
        <h2>"Whose preferences: rater groups"</h2>
        <p class="hint">"Put raters in groups (raters with the same group name are one group; their pairs are merged by majority). Train the group adapters trains one DPO adapter per group and one on every group's pairs, each from the base model with the Train tab's DPO, LoRA and step settings, and tests each on every group's held-out comparisons: the share whose chosen answer the adapter prefers."</p>
        <Show when=move || room.with(|r| !r.files.is_empty())>
            <table class="narrow" aria-label="Rater groups">
                <thead><tr><th>"Rater"</th><th>"Pairs"</th><th>"Group"</th></tr></thead>
                <tbody>{move || room.with(|r| r.files.iter().map(|f| {
                    let rater = f.rater.trim().to_string();
                    let (key, value) = (rater.clone(), group_of(r, &rater));
                    view! { <tr><td>{rater.clone()}</td><td>{f.pairs.len()}</td><td>
                        <input type="text" aria-label=format!("Group of {rater}") prop:value=value
                            on:change=move |ev| { let g = event_target_value(&ev); room.update(|r| { r.groups.insert(key.clone(), g.trim().to_string()); }) }/>
                    </td></tr> }
                }).collect_view())}</tbody>
            </table>
            <table class="narrow" aria-label="Group agreement">
                {move || {
                    let g = groups.get();
                    let m = agreements(&g);
                    view! {
                        <thead><tr><th>"Groups agree"</th>{g.iter().map(|x| view! { <th>{format!("{} ({} pairs)", x.name, x.pairs.len())}</th> }).collect_view()}</tr></thead>
                        <tbody>{g.iter().zip(m).map(|(a, row)| view! {
                            <tr><th>{a.name.clone()}</th>{row.into_iter().map(|c| view! { <td>{c.map_or("—".to_string(), |x| format!("{} of {}{}", percent(x.rate), x.shared, x.kappa.map(|k| format!(" · κ {k:+.2}")).unwrap_or_default()))}</td> }).collect_view()}</tr>
                        }).collect_view()}</tbody>
                    }
                }}
            </table>
        </Show>
        <div class="row">
            <button class="primary" disabled=move || !idle() on:click=move |_| train()>"Train the group adapters"</button>
            <button disabled=move || job.get().is_none() on:click=stop>"Stop"</button>
            <span class="muted" role="status" aria-label="Group progress">{move || progress.get()}</span>
        </div>
        <Show when=move || room.with(|r| !r.adapters.is_empty())>
            {move || room.with(adapters_table)}
            <p aria-label="Group summary">{move || room.with(|r| GroupSummary::of(&r.adapters, &r.scored).map(|s| format!(
                "Each group's own adapter on its own pairs: {}. Group adapters on other groups' pairs: {}. The merged adapter, over the groups: {}.",
                percent(s.own), percent(s.other), percent(s.merged))))}</p>
            <button on:click=download>"Download the table"</button>
        </Show>
    }
}
