//! The sample data shipped beside the page: the Quenby library and its fact set, the probe set,
//! the sample class's answers (`www/library/`, `www/probes.json`, `www/class/`). Like the built-in
//! lessons they are data, not code: fetched once a tab needs them and kept for the visit, out of
//! the page's wasm, the download before anything shows. The CLI compiles the same files in.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use leptos::prelude::*;

use super::files;
use crate::lab::class::ClassFile;
use crate::lab::groups::sample_class_from;
use crate::lab::probes::{Probe, parse_probes};
use crate::lab::retrieve::{Document, Fact, MAX_DOCUMENT_BYTES, parse_facts};

pub struct Samples {
    /// The library, in the order its index lists it.
    pub documents: Vec<Document>,
    pub facts: Vec<Fact>,
    pub probes: Vec<Probe>,
    /// The four made-up raters' files, and rater → group.
    pub class: (Vec<ClassFile>, BTreeMap<String, String>),
}

/// The samples as a tab sees them: `None` while they are on their way.
pub type Loaded = Option<Result<Arc<Samples>, String>>;

thread_local!(static KEPT: RefCell<Option<Arc<Samples>>> = const { RefCell::new(None) });

/// The samples, fetched on the first call of the visit (a signal that fills in).
pub fn load() -> RwSignal<Loaded> {
    let kept = KEPT.with(|k| k.borrow().clone());
    let loaded = RwSignal::new(kept.clone().map(Ok));
    if kept.is_none() {
        leptos::task::spawn_local(async move { loaded.set(Some(kept_or_fetched().await)) });
    }
    loaded
}

/// Runs `then` with the samples once they are in (at once when they are), or with none when they
/// are not `needed`; `problem` with why they could not be fetched.
pub fn when(needed: bool, then: impl FnOnce(Option<Arc<Samples>>) + 'static, problem: impl FnOnce(String) + 'static) {
    match KEPT.with(|k| k.borrow().clone()) {
        _ if !needed => then(None),
        Some(s) => then(Some(s)),
        None => leptos::task::spawn_local(async move {
            match kept_or_fetched().await {
                Ok(s) => then(Some(s)),
                Err(e) => problem(e),
            }
        }),
    }
}

async fn kept_or_fetched() -> Result<Arc<Samples>, String> {
    if let Some(s) = KEPT.with(|k| k.borrow().clone()) {
        return Ok(s);
    }
    let s = Arc::new(fetch().await.map_err(|e| format!("the sample files beside the page did not load ({e}): reload the page, or untick the samples and use files of your own"))?);
    KEPT.with(|k| *k.borrow_mut() = Some(s.clone()));
    Ok(s)
}

async fn fetch() -> Result<Samples, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        files: Vec<String>,
    }
    let index = files::fetch_own(&["library/index.json".to_string()], 64 << 10).await?.remove(0);
    let names = serde_json::from_slice::<Index>(&index).map_err(|e| format!("library/index.json: {e}"))?.files;
    let mut urls: Vec<String> = names.iter().map(|n| format!("library/{n}")).collect();
    urls.extend(["library/facts.json", "probes.json", "class/answers.json"].map(String::from));
    let mut bodies = files::fetch_own(&urls, MAX_DOCUMENT_BYTES).await?;
    let [facts, probes, answers]: [Vec<u8>; 3] = bodies.split_off(names.len()).try_into().map_err(|_| "three files asked for, others came")?;
    let documents = names.into_iter().zip(bodies).map(|(n, b)| Document::from_bytes(n, b)).collect::<crate::Result<Vec<_>>>();
    let named = |url: &'static str| move |e: crate::Error| format!("{url}: {e}");
    Ok(Samples {
        documents: documents.map_err(|e| e.to_string())?,
        facts: parse_facts(&facts).map_err(named("library/facts.json"))?,
        probes: parse_probes(&probes).map_err(named("probes.json"))?,
        class: sample_class_from(&answers).map_err(named("class/answers.json"))?,
    })
}
