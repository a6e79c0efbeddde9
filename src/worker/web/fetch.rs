//! Downloads through the Cache API: a file fetched once is served from the browser's cache
//! afterwards (a reload does not download the model again). Sizes are capped before anything is
//! allocated: a server's Content-Length is a claim, not a promise.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::{post, scope};
use crate::worker::protocol::Event;
use crate::{Error, Result};

/// The largest file the page downloads: wasm32 has a 4 GiB address space, and the model is
/// dequantized beside its bytes.
const MAX_DOWNLOAD: u64 = 1 << 30;

fn js(e: JsValue) -> String {
    format!("{e:?}")
}

/// The bytes at `url` and whether they came from the cache. Progress is posted as `stage` when
/// given.
pub async fn fetch_cached(url: &str, stage: Option<&str>) -> Result<(Vec<u8>, bool)> {
    let report = |fraction: f32, loaded: u64, total: Option<u64>, from_cache: bool| {
        if let Some(stage) = stage {
            post(&Event::Progress { stage: stage.into(), fraction, loaded, total, from_cache });
        }
    };
    let cache: Option<web_sys::Cache> = match scope().caches() {
        Ok(storage) => JsFuture::from(storage.open("alignlab-models-v1")).await.ok().map(|c| c.unchecked_into()),
        Err(_) => None,
    };
    if let Some(cache) = &cache {
        if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
            if let Ok(resp) = hit.dyn_into::<web_sys::Response>() {
                let buf = JsFuture::from(resp.array_buffer().map_err(|e| Error::Network(js(e)))?).await.map_err(|e| Error::Network(js(e)))?;
                let bytes = js_sys::Uint8Array::new(&buf).to_vec();
                let n = bytes.len() as u64;
                report(1.0, n, Some(n), true);
                return Ok((bytes, true));
            }
        }
    }
    let resp = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| Error::Network(format!("could not fetch {url}: {} (is the server running, and is the URL right?)", js(e))))?;
    let resp: web_sys::Response = resp.unchecked_into();
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
        return Err(too_big(t));
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(total.unwrap_or(0) as usize);
    let body = resp.body().ok_or_else(|| Error::Network(format!("{url}: the response has no body")))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut last_post = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| Error::Network(format!("download of {url} broke off: {}", js(e))))?;
        if js_sys::Reflect::get(&chunk, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true) {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(|e| Error::Network(js(e)))?;
        let part = js_sys::Uint8Array::new(&value);
        let n = bytes.len() as u64 + part.length() as u64;
        if n > MAX_DOWNLOAD {
            let _ = reader.cancel();
            return Err(too_big(n));
        }
        bytes.extend(part.to_vec());
        if n - last_post > 1 << 20 {
            last_post = n;
            report(total.map_or(0.0, |t| n as f32 / t.max(1) as f32), n, total, false);
        }
    }
    let n = bytes.len() as u64;
    report(1.0, n, Some(n), false);
    if let Some(cache) = &cache {
        // A full or refused cache only costs a download next time.
        let arr = js_sys::Uint8Array::from(bytes.as_slice());
        if let Ok(resp) = web_sys::Response::new_with_opt_buffer_source(Some(&arr)) {
            let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
        }
    }
    Ok((bytes, false))
}
