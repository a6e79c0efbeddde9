//! Records the lab could not read (damaged, or saved by a newer version) are kept aside in the
//! browser's database rather than overwritten (see `store`): listed here, each downloadable
//! exactly as it was stored.

use leptos::prelude::*;

use super::{Ctx, files, store};

#[component]
pub fn Unreadable() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let keys = RwSignal::new(Vec::<String>::new());
    // Listed once the saved records have been read: that is when one may be set aside.
    Effect::new(move |_| {
        if ctx.restored.get() {
            leptos::task::spawn_local(async move {
                if let Ok(k) = store::unreadable().await {
                    keys.set(k);
                }
            });
        }
    });
    let download = |key: String| {
        leptos::task::spawn_local(async move {
            if let Ok(text) = store::raw_json(&key).await {
                let _ = files::download(&format!("{}.json", key.replace(':', "-")), "application/json", text.as_bytes());
            }
        });
    };
    move || {
        (!keys.get().is_empty()).then(|| {
            view! {
                <section class="unreadable" aria-label="Records the lab could not read">
                    <h3>"Records the lab could not read"</h3>
                    <p class="hint">"Kept aside, never overwritten. Download one to repair it, or to send it to whoever can."</p>
                    {keys.get().into_iter().map(|k| {
                        let key = k.clone();
                        view! { <button class="small" on:click=move |_| download(key.clone())>{format!("Download {k}")}</button> }
                    }).collect_view()}
                </section>
            }
        })
    }
}
