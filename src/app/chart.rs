//! Line charts of training metrics, as SVG straight from Leptos: one polyline per series the run
//! reports (held-out series dashed), the axis range and the last value printed, no chart library.

use std::collections::BTreeMap;

use leptos::prelude::*;

const W: f64 = 320.0;
const H: f64 = 130.0;
const PAD: f64 = 30.0;
const COLORS: [&str; 3] = ["#2563eb", "#dc2626", "#059669"];

/// A chart of `series` (metric names) over steps, from the metrics of every step so far.
#[component]
pub fn MetricChart(title: &'static str, series: Vec<&'static str>, metrics: Signal<Vec<BTreeMap<String, f64>>>) -> impl IntoView {
    let series = StoredValue::new(series);
    let points = move || {
        let m = metrics.get();
        series.get_value().iter().map(|k| m.iter().enumerate().filter_map(|(i, s)| s.get(*k).map(|v| (i as f64 + 1.0, *v))).collect::<Vec<_>>()).collect::<Vec<_>>()
    };
    let has_data = move || points().iter().any(|p| !p.is_empty());
    view! {
        <Show when=has_data>
            <figure class="chart">
                {move || {
                    let pts = points();
                    let all: Vec<(f64, f64)> = pts.iter().flatten().copied().filter(|(_, v)| v.is_finite()).collect();
                    let (mut lo, mut hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, v)| (a.min(*v), b.max(*v)));
                    if !(hi > lo) {
                        lo -= 0.5;
                        hi += 0.5;
                    }
                    let n = all.iter().map(|p| p.0).fold(1.0, f64::max).max(2.0);
                    let x = move |s: f64| PAD + (s - 1.0) / (n - 1.0) * (W - PAD - 8.0);
                    let y = move |v: f64| H - 18.0 - (v - lo) / (hi - lo) * (H - 30.0);
                    let names = series.get_value();
                    // Only the series this run reports; held-out ones (eval/...) dashed.
                    let lines = pts.iter().zip(names.iter()).filter(|(p, _)| !p.is_empty()).enumerate().map(|(i, (p, name))| {
                        let d = p.iter().filter(|(_, v)| v.is_finite()).map(|(s, v)| format!("{:.1},{:.1}", x(*s), y(*v))).collect::<Vec<_>>().join(" ");
                        let last = p.last().map(|(_, v)| *v);
                        let dot = p.iter().rev().find(|(_, v)| v.is_finite()).map(|(s, v)| (x(*s), y(*v)));
                        (d, COLORS[i % 3], *name, last, dot)
                    }).collect::<Vec<_>>();
                    let label = format!("{title} over {} steps", n as usize);
                    let legend = lines.iter().map(|(_, c, name, last, _)| view! {
                        <span class="legend" style:color=*c>{format!("{name}: {}", last.map(|v| format!("{v:.4}")).unwrap_or_default())}</span>
                    }).collect_view();
                    view! {
                        <figcaption>{title}" "{legend}</figcaption>
                        <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=label class="chart-svg" data-metric=title>
                            <line x1=PAD y1=H - 18.0 x2=W - 8.0 y2=H - 18.0 class="axis"/>
                            <line x1=PAD y1=8.0 x2=PAD y2=H - 18.0 class="axis"/>
                            <text x=2.0 y=14.0 class="tick">{format!("{hi:.3}")}</text>
                            <text x=2.0 y=H - 20.0 class="tick">{format!("{lo:.3}")}</text>
                            <text x=W - 40.0 y=H - 4.0 class="tick">{format!("step {}", n as usize)}</text>
                            {lines.into_iter().map(|(d, c, name, _, dot)| view! {
                                <polyline points=d fill="none" stroke=c stroke-width="2" stroke-dasharray=name.starts_with("eval/").then_some("5 3")/>
                                {dot.map(|(cx, cy)| view! { <circle cx=cx cy=cy r="3" fill=c/> })}
                            }).collect_view()}
                        </svg>
                    }
                }}
            </figure>
        </Show>
    }
}
