//! Line charts of training metrics, as SVG straight from Leptos: one polyline per series the run
//! reports (held-out series dashed), labelled axes, a line on what the chart shows, and each
//! step's numbers on hover. No chart library.

use std::collections::BTreeMap;

use leptos::prelude::*;

const W: f64 = 320.0;
const H: f64 = 130.0;
const PAD: f64 = 30.0;
const COLORS: [&str; 3] = ["#2563eb", "#dc2626", "#059669"];

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
                    // Each step's numbers on hover: a transparent column per step with a tooltip.
                    let m = metrics.get();
                    let step_w = (W - PAD - 8.0) / (n - 1.0).max(1.0);
                    let hovers = (1..=n as usize).map(|s| {
                        let vals: Vec<String> = names.iter().filter_map(|k| m.get(s - 1).and_then(|row| row.get(*k)).map(|v| format!("{k} {v:.4}"))).collect();
                        let tip = format!("step {s}: {}", if vals.is_empty() { "—".to_string() } else { vals.join(", ") });
                        view! { <rect x=x(s as f64) - step_w / 2.0 y=8.0 width=step_w height=H - 26.0 class="hover"><title>{tip}</title></rect> }
                    }).collect_view();
                    view! {
                        <figcaption>{title}" "{legend}</figcaption>
                        <p class="about">{about}</p>
                        <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=label class="chart-svg" data-metric=title>
                            <line x1=PAD y1=H - 18.0 x2=W - 8.0 y2=H - 18.0 class="axis"/>
                            <line x1=PAD y1=8.0 x2=PAD y2=H - 18.0 class="axis"/>
                            <text x=2.0 y=14.0 class="tick">{format!("{hi:.3}")}</text>
                            <text x=2.0 y=H - 20.0 class="tick">{format!("{lo:.3}")}</text>
                            <text x=W - 40.0 y=H - 4.0 class="tick">{format!("step {}", n as usize)}</text>
                            <text x=PAD y=H - 4.0 class="axis-label">"training step →"</text>
                            <text x=9.0 y=H / 2.0 + 20.0 class="axis-label" transform=format!("rotate(-90 9 {})", H / 2.0 + 20.0)>{unit}</text>
                            {lines.into_iter().map(|(d, c, name, _, dot)| view! {
                                <polyline points=d fill="none" stroke=c stroke-width="2" stroke-dasharray=name.starts_with("eval/").then_some("5 3")/>
                                {dot.map(|(cx, cy)| view! { <circle cx=cx cy=cy r="3" fill=c/> })}
                            }).collect_view()}
                            {hovers}
                        </svg>
                    }
                }}
            </figure>
        </Show>
    }
}
