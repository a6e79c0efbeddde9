//! Downloads through the Cache API: a file fetched once is served from the browser's cache
//! afterwards (a reload does not download the model again). Sizes are capped before anything is
//! allocated: a server's Content-Length is a claim, not a promise.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::{post, scope};
use crate::worker::protocol::{Event, MAX_DOWNLOAD};
use crate::{Error, Result};

fn js(e: JsValue) -> String {
    format!("{e:?}")
}

/// Posts a download's progress as `stage`, when there is one.
fn report(stage: Option<&str>, fraction: f32, loaded: u64, total: Option<u64>, from_cache: bool) {
    if let Some(stage) = stage {
        post(&Event::Progress { stage: stage.into(), fraction, loaded, total, from_cache });
    }
}

/// A download so far.
#[derive(Default)]
struct Received {
    bytes: Vec<u8>,
    /// How far the bytes were when progress was last posted.
    last_post: u64,
    /// Set when the body grew past [`MAX_DOWNLOAD`]: the size it reached.
    too_big: Option<u64>,
}

/// The download the worker's loader started before the engine ran (`self.alignlabEarly`, written
/// by scripts/web-dist.mjs): a promise of `{response, cached}`, taken by the first download. If
/// that names another URL, the early one is cancelled rather than left to fill memory.
fn take_early(url: &str) -> Option<js_sys::Promise> {
    let scope = scope();
    let early = js_sys::Reflect::get(&scope, &"alignlabEarly".into()).ok().filter(|e| e.is_object())?;
    let _ = js_sys::Reflect::delete_property(scope.unchecked_ref::<js_sys::Object>(), &JsValue::from_str("alignlabEarly"));
    let response: js_sys::Promise = js_sys::Reflect::get(&early, &"response".into()).ok()?.dyn_into().ok()?;
    if js_sys::Reflect::get(&early, &"url".into()).ok()?.as_string()? == url {
        return Some(response);
    }
    wasm_bindgen_futures::spawn_local(async move {
        if let Ok(got) = JsFuture::from(response).await {
            if let Ok(resp) = js_sys::Reflect::get(&got, &"response".into()) {
                cancel(&resp.unchecked_into());
            }
        }
    });
    None
}

/// Stops `resp`'s download: a body nobody reads would otherwise stay open (and an early one keeps
/// filling its queue).
fn cancel(resp: &web_sys::Response) {
    if let Some(body) = resp.body() {
        let _ = body.cancel();
    }
}

/// The response for `url` and whether it is the cache's copy: the loader's early one if it asked
/// for `url`, else the cache's, else the network's.
async fn response(url: &str, cache: Option<&web_sys::Cache>) -> Result<(web_sys::Response, bool)> {
    let unreachable = |e: JsValue| Error::Network(format!("could not fetch {url}: {} (is the server running, and is the URL right?)", js(e)));
    if let Some(early) = take_early(url) {
        let got = JsFuture::from(early).await.map_err(unreachable)?;
        let cached = js_sys::Reflect::get(&got, &"cached".into()).is_ok_and(|c| c.is_truthy());
        let resp = js_sys::Reflect::get(&got, &"response".into()).map_err(unreachable)?;
        return Ok((resp.dyn_into().map_err(unreachable)?, cached));
    }
    if let Some(cache) = cache {
        if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
            if let Ok(resp) = hit.dyn_into::<web_sys::Response>() {
                return Ok((resp, true));
            }
        }
    }
    let resp = JsFuture::from(scope().fetch_with_str(url)).await.map_err(unreachable)?;
    Ok((resp.unchecked_into(), false))
}

/// The bytes at `url` and whether they came from the cache. Progress is posted as `stage` when
/// given.
pub async fn fetch_cached(url: &str, stage: Option<&str>) -> Result<(Vec<u8>, bool)> {
    let cache: Option<web_sys::Cache> = match scope().caches() {
        Ok(storage) => JsFuture::from(storage.open("alignlab-models-v1")).await.ok().map(|c| c.unchecked_into()),
        Err(_) => None,
    };
    let (resp, cached) = response(url, cache.as_ref()).await?;
    if cached {
        let buf = JsFuture::from(resp.array_buffer().map_err(|e| Error::Network(js(e)))?).await.map_err(|e| Error::Network(js(e)))?;
        let bytes = js_sys::Uint8Array::new(&buf).to_vec();
        let n = bytes.len() as u64;
        report(stage, 1.0, n, Some(n), true);
        return Ok((bytes, true));
    }
    if !resp.ok() {
        return Err(Error::Network(format!("could not fetch {url}: HTTP {} {}", resp.status(), resp.status_text())));
    }
    let too_big = |n: u64| {
        Error::Invalid(format!(
            "{url} is {:.0} MB, more than the {:.0} MB the page can hold; use a smaller (quantized) model",
            n as f64 / 1e6,
            MAX_DOWNLOAD as f64 / 1e6
        ))
    };
    let total = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
    if let Some(t) = total.filter(|&t| t > MAX_DOWNLOAD) {
        cancel(&resp);
        return Err(too_big(t));
    }
    // The cache's copy streams in beside ours (a tee the browser makes), written off this thread.
    // Not waited for: the model loads while the browser finishes writing its copy, and a full or
    // refused cache (or a broken download) only costs a download next time.
    let put = cache.as_ref().and_then(|c| resp.clone().ok().map(|copy| c.put_with_str(url, &copy)));
    if let Some(put) = put.clone() {
        wasm_bindgen_futures::spawn_local(async move {
            let _ = JsFuture::from(put).await;
        });
    }
    // A refused download must not stay in the cache either: dropped once its copy is written.
    let forget = |put: Option<js_sys::Promise>| {
        if let (Some(put), Some(cache)) = (put, cache.clone()) {
            let url = url.to_string();
            wasm_bindgen_futures::spawn_local(async move {
                let _ = JsFuture::from(put).await;
                let _ = JsFuture::from(cache.delete_with_str(&url)).await;
            });
        }
    };
    let body = resp.body().ok_or_else(|| Error::Network(format!("{url}: the response has no body")))?;
    // The stream hands each piece to a sink that copies it straight into the model's buffer: one
    // await for the whole body. (Awaiting every read cost a turn of the event loop per piece in
    // the threaded build, whose executor wakes through `Atomics.waitAsync`: ~1500 for SmolLM2.)
    let got = Rc::new(RefCell::new(Received { bytes: Vec::with_capacity(total.unwrap_or(0) as usize), ..Received::default() }));
    let write = {
        let (got, stage) = (got.clone(), stage.map(str::to_owned));
        Closure::<dyn FnMut(JsValue) -> std::result::Result<(), JsValue>>::new(move |chunk: JsValue| {
            let part = js_sys::Uint8Array::new(&chunk);
            let mut g = got.borrow_mut();
            let n = g.bytes.len() as u64 + u64::from(part.length());
            if n > MAX_DOWNLOAD {
                g.too_big = Some(n);
                return Err(JsValue::from_str("more than the page can hold"));
            }
            let start = g.bytes.len();
            g.bytes.resize(n as usize, 0);
            part.copy_to(&mut g.bytes[start..]);
            if n - g.last_post > 1 << 20 {
                g.last_post = n;
                report(stage.as_deref(), total.map_or(0.0, |t| n as f32 / t.max(1) as f32), n, total, false);
            }
            Ok(())
        })
    };
    let sink = js_sys::Object::new();
    js_sys::Reflect::set(&sink, &"write".into(), write.as_ref()).map_err(|e| Error::Network(js(e)))?;
    let dest = web_sys::WritableStream::new_with_underlying_sink(&sink).map_err(|e| Error::Network(js(e)))?;
    let piped = JsFuture::from(body.pipe_to(&dest)).await;
    drop(write);
    let Received { bytes, too_big: over, .. } = got.take();
    if let Some(n) = over {
        forget(put);
        return Err(too_big(n));
    }
    piped.map_err(|e| Error::Network(format!("download of {url} broke off: {}", js(e))))?;
    let n = bytes.len() as u64;
    report(stage, 1.0, n, Some(n), false);
    Ok((bytes, false))
}
