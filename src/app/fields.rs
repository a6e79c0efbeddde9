//! Form fields bound to part of a settings signal. A field reads with `get` and writes with
//! `set`, so every knob is declared once, in the engine's struct; a value that does not parse
//! leaves the old one in place.

use std::fmt::Display;
use std::str::FromStr;

use leptos::prelude::*;

/// A labelled number input.
pub fn number<S, T>(sig: RwSignal<S>, label: &'static str, tip: &'static str, step: &'static str, get: fn(&S) -> T, set: fn(&mut S, T)) -> impl IntoView
where
    S: Send + Sync + 'static,
    T: FromStr + Display + 'static,
{
    view! {
        <label title=tip>{label}
            <input type="number" step=step aria-label=label prop:value=move || sig.with(|s| get(s).to_string())
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).trim().parse::<T>() {
                        sig.update(|s| set(s, v));
                    }
                }/>
        </label>
    }
}

/// A labelled menu of `options` (value, the option's id, its text).
pub fn choice<S, E>(sig: RwSignal<S>, label: &'static str, tip: &'static str, options: &'static [(E, &'static str, &'static str)], get: fn(&S) -> E, set: fn(&mut S, E)) -> impl IntoView
where
    S: Send + Sync + 'static,
    E: Copy + PartialEq + Send + Sync + 'static,
{
    let id = move || sig.with(|s| options.iter().find(|(e, _, _)| *e == get(s)).map_or("", |o| o.1));
    view! {
        <label title=tip>{label}
            <select aria-label=label prop:value=id on:change=move |ev| {
                let v = event_target_value(&ev);
                if let Some((e, _, _)) = options.iter().find(|o| o.1 == v) {
                    sig.update(|s| set(s, *e));
                }
            }>
                {options.iter().map(|(_, id, text)| view! { <option value=*id>{*text}</option> }).collect_view()}
            </select>
        </label>
    }
}

/// A labelled checkbox.
pub fn check<S>(sig: RwSignal<S>, label: &'static str, tip: &'static str, get: fn(&S) -> bool, set: fn(&mut S, bool)) -> impl IntoView
where
    S: Send + Sync + 'static,
{
    view! {
        <label title=tip>
            <input type="checkbox" aria-label=label prop:checked=move || sig.with(get) on:change=move |ev| sig.update(|s| set(s, event_target_checked(&ev)))/>
            {label}
        </label>
    }
}
