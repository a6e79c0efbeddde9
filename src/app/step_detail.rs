//! The last training step example by example, beside the charts: DPO's loss as a curve over the
//! margin with the batch's pairs as points on it, and RL's round as a table of its samples.

use leptos::prelude::*;

use super::fixed;
use crate::worker::protocol::{SampleRow, StepDetail};

const W: f64 = 320.0;
const H: f64 = 150.0;
const PAD: f64 = 30.0;

#[component]
pub fn StepPicture(detail: Signal<Option<StepDetail>>, step: Signal<usize>) -> impl IntoView {
    move || match detail.get() {
        Some(StepDetail::Pairs { axis, curve, points }) => view! { <LossCurve axis curve points step=step.get()/> }.into_any(),
        Some(StepDetail::Samples { rows }) => view! { <SamplesTable rows step=step.get()/> }.into_any(),
        None => ().into_any(),
    }
}

/// The loss the method pays as a function of a pair's margin, and where this step's pairs sit on
/// it: the gradient a pair gives is the curve's slope at its point.
#[component]
fn LossCurve(axis: String, curve: Vec<[f64; 2]>, points: Vec<[f64; 2]>, step: usize) -> impl IntoView {
    let finite = |p: &&[f64; 2]| p[0].is_finite() && p[1].is_finite();
    let (x0, x1) = (curve.first().map_or(-3.0, |p| p[0]), curve.last().map_or(3.0, |p| p[0]));
    let ys = curve.iter().chain(&points).filter(finite).map(|p| p[1]);
    let (lo, hi) = ys.fold((0.0f64, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let x = move |v: f64| PAD + (v - x0) / (x1 - x0).max(1e-9) * (W - PAD - 8.0);
    let y = move |v: f64| H - 22.0 - (v - lo) / (hi - lo) * (H - 34.0);
    let line = curve.iter().filter(finite).map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1]))).collect::<Vec<_>>().join(" ");
    let wrong = points.iter().filter(|p| p[0] < 0.0).count();
    let mean_loss = points.iter().map(|p| p[1]).sum::<f64>() / points.len().max(1) as f64;
    let summary = format!("step {step}: {} pairs, {wrong} with the rejected answer ahead, mean loss {}", points.len(), fixed(mean_loss, 3));
    let dots = points.iter().enumerate().filter(|(_, p)| finite(p)).map(|(i, p)| {
        let tip = format!("pair {}: margin {:.3}, loss {:.3}", i + 1, p[0], p[1]);
        view! { <circle class="pair" cx=x(p[0]) cy=y(p[1]) r="4"><title>{tip}</title></circle> }
    }).collect_view();
    let zero = (x0 < 0.0 && x1 > 0.0).then(|| view! { <line x1=x(0.0) y1=8.0 x2=x(0.0) y2=H - 22.0 class="zero"/> });
    view! {
        <figure class="chart loss-curve">
            <figcaption>"DPO loss over the margin, this step's pairs on it"</figcaption>
            <p class="about">"Each dot is a pair of this step's batch. Left of the line the rejected answer is ahead: those pairs pay the most and pull hardest (the curve is steep). Far right the curve is flat: a pair DPO already gets right stops pulling."</p>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=summary.clone() class="chart-svg" data-metric="loss curve">
                <line x1=PAD y1=H - 22.0 x2=W - 8.0 y2=H - 22.0 class="axis"/>
                <line x1=PAD y1=8.0 x2=PAD y2=H - 22.0 class="axis"/>
                {zero}
                <text x=2.0 y=14.0 class="tick">{format!("{hi:.2}")}</text>
                <text x=2.0 y=H - 24.0 class="tick">{format!("{lo:.2}")}</text>
                <text x=PAD y=H - 12.0 class="tick">{format!("{x0:.1}")}</text>
                <text x=W - 30.0 y=H - 12.0 class="tick">{format!("{x1:.1}")}</text>
                <text x=PAD + 30.0 y=H - 3.0 class="axis-label">{axis}</text>
                <text x=9.0 y=H / 2.0 + 10.0 class="axis-label" transform=format!("rotate(-90 9 {})", H / 2.0 + 10.0)>"loss"</text>
                <polyline points=line fill="none" stroke="#6b7280" stroke-width="2"/>
                {dots}
            </svg>
            <p class="about">{summary}</p>
        </figure>
    }
}

/// RL's round: every sample with the reward it got, its advantage (its reward against the other
/// answers to the same prompt: what the update pushes up or down) and its KL from the reference.
#[component]
fn SamplesTable(rows: Vec<SampleRow>, step: usize) -> impl IntoView {
    let body = rows.into_iter().map(|r| {
        let class = if r.score.advantage > 0.0 { "up" } else if r.score.advantage < 0.0 { "down" } else { "" };
        view! { <tr class=class>
            <td>{r.prompt}</td><td class="answer">{r.answer}</td>
            <td>{format!("{:.3}", r.score.reward)}</td><td>{format!("{:+.3}", r.score.advantage)}</td><td>{format!("{:.2}", r.score.kl)}</td>
        </tr> }
    }).collect_view();
    view! {
        <figure class="chart samples">
            <figcaption>{format!("Round {step}: the samples the update learned from")}</figcaption>
            <p class="about">"Advantage: a sample's reward against the other answers to its prompt. Green ones (above 0) are made more likely, red ones less. KL: how far the policy has moved from the reference on this answer (nats; a one-answer estimate, so it can dip below 0). Reward that rises only with KL is the leash slipping."</p>
            <table aria-label="RL samples">
                <thead><tr><th>"Prompt"</th><th>"Answer"</th><th>"Reward"</th><th>"Advantage"</th><th>"KL"</th></tr></thead>
                <tbody>{body}</tbody>
            </table>
        </figure>
    }
}
