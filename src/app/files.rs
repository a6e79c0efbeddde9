//! Files in and out of the page: downloads built from memory, files the user picks, and the
//! page's own files beside it (the built-in lessons).

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, File, HtmlAnchorElement, HtmlInputElement, Url};

use crate::worker::protocol::MAX_DOWNLOAD;

/// Offers `bytes` as a download named `name`.
pub fn download(name: &str, mime: &str, bytes: &[u8]) -> Result<(), String> {
    let arr = js_sys::Array::new();
    arr.push(&js_sys::Uint8Array::from(bytes));
    let opts = BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = Blob::new_with_u8_array_sequence_and_options(&arr, &opts).map_err(|e| format!("{e:?}"))?;
    let url = Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))?;
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let a: HtmlAnchorElement = doc.create_element("a").map_err(|e| format!("{e:?}"))?.unchecked_into();
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // Revoke later: the download has to start first.
    let url2 = url.clone();
    wasm_bindgen_futures::spawn_local(async move {
        gloo_timers::future::TimeoutFuture::new(10_000).await;
        let _ = Url::revoke_object_url(&url2);
    });
    Ok(())
}

/// The files chosen in an `<input type=file>` (from its change event).
pub fn picked(ev: &web_sys::Event) -> Vec<File> {
    let Some(input) = ev.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(list) = input.files() {
        for i in 0..list.length() {
            if let Some(f) = list.get(i) {
                out.push(f);
            }
        }
    }
    // Choosing the same file again should fire `change` again.
    input.set_value("");
    out
}

/// Refuses a picked file over `max` bytes before it is read: the page has at most 4 GiB of
/// memory, and a wrong pick must not take it down with the student's work. The error leaves the
/// file's name to the caller, which puts it first.
fn check_size(file: &File, max: u64) -> Result<(), String> {
    let mib = |b: f64| b / f64::from(1u32 << 20);
    if file.size() > max as f64 {
        return Err(format!("{:.1} MiB, more than the {:.0} MiB this page reads for this kind of file; nothing was read", mib(file.size()), mib(max as f64)));
    }
    Ok(())
}

/// A picked file's bytes, refused unread when it is over `max` bytes.
pub async fn read_bytes(file: &File, max: u64) -> Result<Vec<u8>, String> {
    check_size(file, max)?;
    let buf = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("could not read it: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// A picked file's text, refused unread when it is over `max` bytes.
pub async fn read_text(file: &File, max: u64) -> Result<String, String> {
    check_size(file, max)?;
    let t = JsFuture::from(file.text()).await.map_err(|e| format!("could not read it: {e:?}"))?;
    t.as_string().ok_or_else(|| "it is not text".to_string())
}

/// The page's own files at `urls` (relative to the page), fetched at once and read in order. Each
/// must answer 200 with at most `max_bytes`.
pub async fn fetch_own(urls: &[String], max_bytes: usize) -> Result<Vec<Vec<u8>>, String> {
    let window = web_sys::window().ok_or("no window")?;
    // Every request starts before the first is read: one round trip for all, not one each.
    let pending: Vec<_> = urls.iter().map(|u| (u, window.fetch_with_str(u))).collect();
    let mut out = Vec::with_capacity(urls.len());
    for (url, promise) in pending {
        let failed = |e: wasm_bindgen::JsValue| format!("could not fetch {url}: {}", e.as_string().unwrap_or_else(|| format!("{e:?}")));
        let res: web_sys::Response = JsFuture::from(promise).await.map_err(failed)?.unchecked_into();
        if !res.ok() {
            return Err(format!("could not fetch {url}: the server answered {} {}", res.status(), res.status_text()));
        }
        // The size the server states is checked before the body is read, what arrived after.
        let said = res.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = said.filter(|&n| n > max_bytes as u64) {
            return Err(format!("{url} is {n} bytes, over the {max_bytes} this page reads"));
        }
        let buf = JsFuture::from(res.array_buffer().map_err(failed)?).await.map_err(failed)?;
        let bytes = js_sys::Uint8Array::new(&buf);
        if bytes.length() as usize > max_bytes {
            return Err(format!("{url} is {} bytes, over the {max_bytes} this page reads", bytes.length()));
        }
        out.push(bytes.to_vec());
    }
    Ok(out)
}

/// A model from the files a person picked: the biggest is the model, and a tokenizer file comes
/// along for llama2.c models (told by name, else by size).
pub async fn model_source(picked: &[File]) -> Result<crate::worker::protocol::ModelSource, String> {
    let mut list: Vec<(String, Vec<u8>)> = Vec::new();
    for f in picked {
        list.push((f.name(), read_bytes(f, MAX_DOWNLOAD).await.map_err(|e| format!("{}: {e}", f.name()))?));
    }
    if list.is_empty() {
        return Err("no file was picked".into());
    }
    list.sort_by_key(|(n, b)| (n.to_lowercase().contains("tok"), std::cmp::Reverse(b.len())));
    let (name, model) = list.remove(0);
    let tokenizer = list.into_iter().next().map(|(_, b)| serde_bytes::ByteBuf::from(b));
    Ok(crate::worker::protocol::ModelSource::Files { name, model, tokenizer })
}
