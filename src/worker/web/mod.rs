//! The Web Worker around the router: messages in and out through `postMessage`, files through
//! `fetch` and the Cache API ([`fetch`]), WebGPU or the CPU ([`device`]). Each request runs as a
//! task on the worker's event loop; every tensor read yields, so Cancel and Pause get in.

mod device;
mod fetch;
mod fused;
mod js_bytes;
#[cfg(feature = "threads")]
pub(crate) mod threads;

use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use super::protocol::{BackendPref, ErrorKind, Event, Request};
use super::router::{Host, OpenedDevice, Router};
use crate::Result;

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends an event to the page, as bytes ([`Event::to_bytes`]) in a buffer handed over, not copied.
fn post(ev: &Event) {
    match js_bytes::event_bytes(ev) {
        Ok(array) => {
            let _ = scope().post_message_with_transfer(&array, &js_sys::Array::of1(&array.buffer()));
        }
        Err(e) => web_sys::console::error_1(&format!("alignlab worker: cannot send {ev:?}: {e}").into()),
    }
}

struct WebHost;

impl Host for WebHost {
    fn post(&self, ev: Event) {
        post(&ev);
    }

    async fn fetch(&self, url: &str, stage: Option<&str>) -> Result<(Vec<u8>, bool)> {
        fetch::fetch_cached(url, stage).await
    }

    async fn open_device(&self, pref: BackendPref) -> OpenedDevice {
        device::open(pref).await
    }

    async fn sleep(&self, ms: u32) {
        gloo_timers::future::TimeoutFuture::new(ms).await;
    }

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    /// Only the threaded CPU worker was measured to gain (docs/results.md, stop 61).
    fn tiers_up(&self) -> bool {
        cfg!(feature = "threads")
    }
}

pub fn main() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&Event::Fatal { message: format!("the engine stopped: {info}") });
    }));
    let router = Router::new(WebHost);
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        match serde_wasm_bindgen::from_value::<Request>(ev.data()) {
            Ok(req) => spawn_local(Rc::clone(&router).handle(req)),
            Err(e) => post(&Event::Error { job: None, kind: ErrorKind::Invalid, message: format!("bad request: {e}") }),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    #[cfg(feature = "threads")]
    threads::start();
    post(&Event::Hello);
}
