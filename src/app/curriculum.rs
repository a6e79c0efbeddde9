//! A curriculum on the Data tab: the pairs ordered by a reward source's margin (easy or hard
//! first); the Train tab's "In order" then takes them in that order. The margins come from
//! `lab::curriculum`, in the worker.

use leptos::prelude::*;

use super::{Ctx, client};
use crate::lab::RewardChoice;
use crate::worker::protocol::*;

const SOURCES: [(RewardChoice, &str, &str); 3] =
    [(RewardChoice::Judges, "judges", "the judges"), (RewardChoice::RewardModel, "rm", "the reward model"), (RewardChoice::Ensemble, "ensemble", "the ensemble (mean)")];
const ORDERS: [(Order, &str, &str); 2] = [(Order::EasyFirst, "easy", "easy first"), (Order::HardFirst, "hard", "hard first")];

/// A labelled menu setting `sig` to one of `options` (value, id, text).
fn pick<E: Copy + Send + Sync + 'static>(sig: RwSignal<E>, options: &'static [(E, &'static str, &'static str)], label: &'static str) -> impl IntoView {
    view! {
        <select aria-label=label on:change=move |ev| { let v = event_target_value(&ev); if let Some(o) = options.iter().find(|o| o.1 == v) { sig.set(o.0) } }>
            {options.iter().map(|(_, id, text)| view! { <option value=*id>{*text}</option> }).collect_view()}
        </select>
    }
}

#[component]
pub fn CurriculumSection() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let source = RwSignal::new(RewardChoice::Judges);
    let order = RwSignal::new(Order::EasyFirst);
    let job = RwSignal::new(None::<JobId>);
    let line = RwSignal::new(String::new());
    let run = move |_| {
        let s = ctx.settings.get_untracked();
        let reward = match source.get_untracked() {
            RewardChoice::Judges => match s.judge_specs() {
                Ok(j) => RewardSpec::Judges(j),
                Err(e) => return line.set(e),
            },
            RewardChoice::RewardModel => RewardSpec::RewardModel,
            RewardChoice::Ensemble => RewardSpec::Ensemble(Combine::Mean),
        };
        let how = order.get_untracked();
        let id = client::job(move |ev| match ev {
            Event::Ordered { pairs, .. } => {
                let negative = pairs.iter().filter(|(_, m)| *m < 0.0).count();
                let (first, last) = (pairs.first().map_or(0.0, |p| p.1), pairs.last().map_or(0.0, |p| p.1));
                line.set(format!(
                    "Ordered {} pairs, {}: margins from {first:+.2} to {last:+.2}. {negative} with a negative margin (the reward source prefers the rejected answer: a hard pair, or a wrong label). Tick \"In order\" on the Train tab to train on them in this order.",
                    pairs.len(),
                    if how == Order::EasyFirst { "easy first" } else { "hard first" }
                ));
                ctx.pairs.set(pairs.into_iter().map(|(p, _)| p).collect());
            }
            Event::Done { .. } | Event::Error { .. } => job.set(None),
            _ => {}
        });
        job.set(Some(id));
        client::send(&Request::OrderPairs { job: id, pairs: ctx.pairs.get_untracked(), encoding: s.encoding(), reward, order: how });
    };
    view! {
        <div class="row curriculum">
            <span title="A pair's margin is the reward source's score of the chosen answer minus the rejected one: large is easy to tell apart, small or negative is hard.">"Curriculum: order the pairs by "</span>
            {pick(source, &SOURCES, "Order pairs by")}
            {pick(order, &ORDERS, "Order")}
            <button disabled=move || ctx.model.get().is_none() || job.get().is_some() || ctx.pairs.with(Vec::is_empty) on:click=run>"Order the pairs"</button>
        </div>
        <p class="muted" role="status" aria-label="Curriculum status">{move || line.get()}</p>
    }
}
