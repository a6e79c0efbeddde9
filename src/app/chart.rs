//! Line charts of training metrics, as SVG straight from Leptos: one polyline per series the run
//! reports (held-out series dashed), labelled axes, a line on what the chart shows, and a cursor
//! that reads out one step's numbers (pointer, or ← → on the focused chart). No chart library.
//!
//! A chart costs the same at step 5000 as at step 5: a line is thinned to [`MAX_POINTS`] and the
//! cursor is one element. (One element per step made a long run's page build thousands of nodes
//! per step, until it stopped answering clicks.)

use std::collections::BTreeMap;

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::fixed;

const W: f64 = 320.0;
const H: f64 = 130.0;
const PAD: f64 = 30.0;
/// The plot's right edge.
const RIGHT: f64 = W - 8.0;
const COLORS: [&str; 3] = ["#2563eb", "#dc2626", "#059669"];
/// At most this many points on a line: about two per unit of the plot's width.
const MAX_POINTS: usize = 600;

/// Keeps at most [`MAX_POINTS`] of `p` (finite values, in step order): each bucket of consecutive
/// steps gives its lowest and its highest point, in step order, so spikes stay on the line and
/// the axis keeps the true range; the last point stays, for the dot on the latest value.
fn thin(p: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if p.len() <= MAX_POINTS {
        return p;
    }
    let bucket = p.len().div_ceil(MAX_POINTS / 2 - 1);
    let mut out = Vec::with_capacity(MAX_POINTS);
    for c in p.chunks(bucket) {
        let lo = c.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied();
        let hi = c.iter().max_by(|a, b| a.1.total_cmp(&b.1)).copied();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo.0 == hi.0 {
                out.push(lo);
            } else if lo.0 < hi.0 {
                out.extend([lo, hi]);
            } else {
                out.extend([hi, lo]);
            }
        }
    }
    if out.last() != p.last() {
        out.extend(p.last());
    }
    out
}

/// What a chart draws: each series' (thinned) points, the value range and the last step.
#[derive(Clone, PartialEq)]
struct Plot {
    lines: Vec<(&'static str, Vec<(f64, f64)>)>,
    lo: f64,
    hi: f64,
    /// The last step with a value, at least 2 (the axis spans steps 1..=n).
    n: f64,
}

impl Plot {
    fn of(metrics: &[BTreeMap<String, f64>], series: &[&'static str]) -> Self {
        let lines: Vec<_> = series
            .iter()
            .map(|k| {
                let p = metrics.iter().enumerate().filter_map(|(i, s)| s.get(*k).filter(|v| v.is_finite()).map(|v| (i as f64 + 1.0, *v))).collect();
                (*k, thin(p))
            })
            .filter(|(_, p): &(_, Vec<_>)| !p.is_empty())
            .collect();
        let all = lines.iter().flat_map(|(_, p)| p);
        let (mut lo, mut hi) = all.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, v)| (a.min(*v), b.max(*v)));
        if !(hi > lo) {
            lo -= 0.5;
            hi += 0.5;
        }
        let n = all.map(|p| p.0).fold(2.0, f64::max);
        Plot { lines, lo, hi, n }
    }

    fn x(&self, step: f64) -> f64 {
        PAD + (step - 1.0) / (self.n - 1.0) * (RIGHT - PAD)
    }

    fn y(&self, v: f64) -> f64 {
        H - 18.0 - (v - self.lo) / (self.hi - self.lo) * (H - 30.0)
    }

    /// The step under horizontal position `x` of the drawing.
    fn step_at(&self, x: f64) -> usize {
        let s = (x - PAD) / (RIGHT - PAD) * (self.n - 1.0) + 1.0;
        s.round().clamp(1.0, self.n) as usize
    }
}

/// A chart of `series` (metric names) over steps, from the metrics of every step so far.
#[component]
pub fn MetricChart(
    title: &'static str,
    /// What the chart shows, in one line.
    about: &'static str,
    /// What the vertical axis measures.
    unit: &'static str,
    series: Vec<&'static str>,
    metrics: Signal<Vec<BTreeMap<String, f64>>>,
) -> impl IntoView {
    let series = StoredValue::new(series);
    let plot = Memo::new(move |_| metrics.with(|m| Plot::of(m, &series.get_value())));
    // The step the cursor reads, if any.
    let cursor = RwSignal::new(None::<usize>);
    let has_data = move || plot.with(|p| !p.lines.is_empty());

    let on_pointer = move |ev: leptos::ev::PointerEvent| {
        let Some(svg) = ev.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let r = svg.get_bounding_client_rect();
        if r.width() > 0.0 {
            let x = (f64::from(ev.client_x()) - r.left()) * W / r.width();
            cursor.set(Some(plot.with_untracked(|p| p.step_at(x))));
        }
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let last = plot.with_untracked(|p| p.n as usize);
        let at = cursor.get_untracked().unwrap_or(last);
        let big = if ev.shift_key() { 10 } else { 1 };
        let to = match ev.key().as_str() {
            "ArrowLeft" => at.saturating_sub(big).max(1),
            "ArrowRight" => (at + big).min(last),
            "Home" => 1,
            "End" => last,
            _ => return,
        };
        ev.prevent_default();
        cursor.set(Some(to));
    };
    let readout = move || match cursor.get() {
        None => "Point at the chart, or focus it and press ← →, to read one step.".to_string(),
        Some(s) => {
            let vals = metrics.with(|m| {
                let row = m.get(s - 1);
                series.get_value().iter().filter_map(|k| row.and_then(|r| r.get(*k)).map(|v| format!("{k} {}", fixed(*v, 4)))).collect::<Vec<_>>()
            });
            format!("step {s}: {}", if vals.is_empty() { "—".to_string() } else { vals.join(", ") })
        }
    };
    let lines = move || {
        plot.with(|p| {
            p.lines
                .iter()
                .enumerate()
                .map(|(i, (name, pts))| {
                    let d = pts.iter().map(|(s, v)| format!("{:.1},{:.1}", p.x(*s), p.y(*v))).collect::<Vec<_>>().join(" ");
                    let (cx, cy) = pts.last().map(|(s, v)| (p.x(*s), p.y(*v))).unwrap_or_default();
                    let c = COLORS[i % 3];
                    view! {
                        <polyline points=d fill="none" stroke=c stroke-width="2" stroke-dasharray=name.starts_with("eval/").then_some("5 3")/>
                        <circle cx=cx cy=cy r="3" fill=c/>
                    }
                })
                .collect_view()
        })
    };
    // The latest value of each series drawn (NaN too: a diverging run shows it), beside the title.
    let legend = move || {
        let names: Vec<&'static str> = plot.with(|p| p.lines.iter().map(|(k, _)| *k).collect());
        let last: Vec<Option<f64>> = metrics.with(|m| names.iter().map(|k| m.iter().rev().find_map(|r| r.get(*k).copied())).collect());
        names.into_iter().zip(last).enumerate().map(|(i, (k, v))| view! {
            <span class="legend" style:color=COLORS[i % 3]>{format!("{k}: {}", v.map(|v| fixed(v, 4)).unwrap_or_default())}</span>
        }).collect_view()
    };
    let cursor_x = move || cursor.get().map(|s| plot.with(|p| p.x(s as f64)));

    view! {
        <Show when=has_data>
            <figure class="chart">
                <figcaption>{title}" "{legend}</figcaption>
                <p class="about">{about}</p>
                <svg viewBox=format!("0 0 {W} {H}") role="img" class="chart-svg" data-metric=title tabindex="0"
                    aria-label=move || plot.with(|p| format!("{title} over {} steps", p.n as usize))
                    on:pointermove=on_pointer on:pointerleave=move |_| cursor.set(None) on:keydown=on_key on:blur=move |_| cursor.set(None)>
                    <line x1=PAD y1=H - 18.0 x2=RIGHT y2=H - 18.0 class="axis"/>
                    <line x1=PAD y1=8.0 x2=PAD y2=H - 18.0 class="axis"/>
                    <text x=2.0 y=14.0 class="tick">{move || plot.with(|p| fixed(p.hi, 3))}</text>
                    <text x=2.0 y=H - 20.0 class="tick">{move || plot.with(|p| fixed(p.lo, 3))}</text>
                    <text x=W - 40.0 y=H - 4.0 class="tick">{move || plot.with(|p| format!("step {}", p.n as usize))}</text>
                    <text x=PAD y=H - 4.0 class="axis-label">"training step →"</text>
                    <text x=9.0 y=H / 2.0 + 20.0 class="axis-label" transform=format!("rotate(-90 9 {})", H / 2.0 + 20.0)>{unit}</text>
                    {lines}
                    {move || cursor_x().map(|x| view! { <line x1=x y1=8.0 x2=x y2=H - 18.0 class="cursor"/> })}
                </svg>
                <p class="readout" aria-label=format!("{title} at the cursor")>{readout}</p>
            </figure>
        </Show>
    }
}
