//! The page's end of the worker: spawns it, queues requests until the worker says Hello, and
//! routes events to whoever sent the request (by job id) or to the app's global handler.

use std::cell::RefCell;
use std::collections::HashMap;

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker};

use crate::worker::protocol::{APP_UPDATED, BackendPref, Event, JobId, MAX_DOWNLOAD, Request, crash_message};

type Handler = Box<dyn FnMut(Event)>;

#[derive(Default)]
struct Client {
    worker: Option<Worker>,
    ready: bool,
    queue: Vec<JsValue>,
    jobs: HashMap<JobId, Handler>,
    global: Option<Box<dyn Fn(Event)>>,
    next_job: JobId,
    /// The build of the engine the worker runs.
    build: Build,
    /// The model the worker starts downloading before its engine has compiled (see [`start`]).
    early: Option<String>,
    /// Closures the worker calls; kept alive as long as it is.
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
}

thread_local!(static CLIENT: RefCell<Client> = RefCell::new(Client::default()));

/// Starts (or restarts) the worker for `pref`. `global` sees every event no job handler took.
/// `early`: the model URL the first `Load` will name, if known now.
pub fn spawn(pref: BackendPref, early: Option<String>, global: impl Fn(Event) + 'static) {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        c.ready = false;
        c.queue.clear();
        c.jobs.clear();
        c.global = Some(Box::new(global));
        c.early = early;
    });
    start(Build::for_pref(pref));
}

/// Starts `build` of the engine, in place of the worker running (if any).
fn start(build: Build) {
    let (old, early) = CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        c.build = build;
        (c.worker.take(), c.early.clone())
    });
    if let Some(w) = old {
        w.terminate();
    }
    let Some(script) = build.script() else {
        dispatch(Event::Fatal { message: "the page does not name its engine's files (self.alignlabWorkers, written by scripts/web-dist.mjs): reload the page".into() });
        return;
    };
    // `?model=`: the worker's loader starts that download at once, while the engine's wasm
    // compiles (about a second on a slow machine), and the engine takes the response over when
    // `Load` names it; `&max=`: only a file known to fit is pulled before the engine can check it.
    let mut url = script.clone();
    if let Some(model) = early {
        url.push_str("?model=");
        url.push_str(&String::from(js_sys::encode_uri_component(&model)));
        url.push_str(&format!("&max={MAX_DOWNLOAD}"));
    }
    let Ok(worker) = Worker::new(&url) else {
        dispatch(Event::Fatal { message: format!("the browser refused to start the engine's worker ({url})") });
        return;
    };
    let onmessage = Closure::<dyn FnMut(JsValue)>::new(|v: JsValue| {
        let ev: MessageEvent = v.unchecked_into();
        // The worker sends each event as a Uint8Array of postcard's bytes (`Event::to_bytes`).
        let read = match ev.data().dyn_into::<js_sys::Uint8Array>() {
            Ok(bytes) => Event::from_bytes(&bytes.to_vec()).map_err(|e| e.to_string()),
            Err(_) => Err("not bytes".to_string()),
        };
        match read {
            Ok(e) => dispatch(e),
            Err(e) => web_sys::console::error_1(&format!("alignlab: unreadable event from the worker: {e}").into()),
        }
    });
    // A wasm trap (out of memory, a bug) kills the worker without a message of its own. A script
    // that never loaded comes with no message at all.
    let onerror = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| match v.dyn_ref::<ErrorEvent>() {
        Some(e) => dispatch(Event::Fatal { message: crash_message(&e.message()) }),
        None => wasm_bindgen_futures::spawn_local(not_started(script.clone())),
    });
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        c.worker = Some(worker);
        c._closures = vec![onmessage, onerror];
    });
}

/// The worker's script did not load: gone from the host (a deploy since the page opened renamed
/// every engine file), or out of reach. Which one, the host says.
async fn not_started(script: String) {
    let status = match web_sys::window() {
        Some(w) => wasm_bindgen_futures::JsFuture::from(w.fetch_with_str(&script))
            .await
            .ok()
            .and_then(|r| r.dyn_into::<web_sys::Response>().ok())
            .map(|r| r.status()),
        None => None,
    };
    let message = match status {
        Some(404) => format!("the engine's files ({script}) are gone: {APP_UPDATED}; reload the page"),
        _ => format!("the engine's worker did not start ({script}): check the network, then reload the page"),
    };
    dispatch(Event::Fatal { message });
}

/// The engine's builds: the full one (WebGPU, and the CPU on one thread where the threaded one
/// cannot run), and the CPU alone with threads.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Build {
    #[default]
    Full,
    Threads,
}

impl Build {
    /// Which build to start: on the CPU the threaded one (no WebGPU code: under half the full
    /// one's download, and quicker to start), on every core where the page may share memory
    /// between workers (cross-origin isolated: served with COOP and COEP) and on one thread where
    /// it may not (its memory is still shared, within the engine's worker); else the full one, on
    /// WebGPU. A browser that refuses the threaded build's memory gets the full one on one thread
    /// ([`fell_back`]).
    fn for_pref(pref: BackendPref) -> Self {
        let Some(window) = web_sys::window() else { return Self::Full };
        let webgpu = js_sys::Reflect::get(&window.navigator(), &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null());
        if pref == BackendPref::Cpu || !webgpu { Self::Threads } else { Self::Full }
    }

    /// The script that starts this build. The page's loader lists each build's files, named by
    /// the hash of their contents (`self.alignlabWorkers`, scripts/web-dist.mjs): a page never
    /// starts an engine of another deploy, nor an engine a second module or threads of another.
    fn script(self) -> Option<String> {
        let key = match self {
            Self::Full => "full",
            Self::Threads => "threads",
        };
        let builds = js_sys::Reflect::get(&js_sys::global(), &"alignlabWorkers".into()).ok()?;
        let files = js_sys::Reflect::get(&builds, &key.into()).ok()?;
        js_sys::Reflect::get_u32(&files, 0).ok()?.as_string()
    }
}

/// The threaded build failed before it was ready (its threads' workers refused, its shared memory
/// not granted): the full one takes its place on one thread, with the requests it held.
fn fell_back(ev: &Event) -> bool {
    let Event::Fatal { message } = ev else { return false };
    let threaded_failed = CLIENT.with(|c| {
        let c = c.borrow();
        !c.ready && c.build == Build::Threads
    });
    if threaded_failed {
        // The message alone: printing the event with `{:?}` would put every event's Debug code
        // into the page's download.
        web_sys::console::warn_1(&format!("alignlab: the engine on one thread instead: {message}").into());
        start(Build::Full);
    }
    threaded_failed
}

fn dispatch(ev: Event) {
    if fell_back(&ev) {
        return;
    }
    if ev == Event::Hello {
        let (worker, queue) = CLIENT.with(|c| {
            let mut c = c.borrow_mut();
            c.ready = true;
            (c.worker.clone(), std::mem::take(&mut c.queue))
        });
        if let Some(w) = worker {
            for m in queue {
                let _ = w.post_message(&m);
            }
        }
        return;
    }
    // Take the handler out while it runs: it may send requests (and so borrow the client).
    if let Some(job) = ev.job() {
        let h = CLIENT.with(|c| c.borrow_mut().jobs.remove(&job));
        if let Some(mut h) = h {
            let err = matches!(ev, Event::Error { .. });
            h(ev.clone());
            CLIENT.with(|c| {
                c.borrow_mut().jobs.entry(job).or_insert(h);
            });
            // A job's error also reaches the global banner.
            if !err {
                return;
            }
        }
    }
    let g = CLIENT.with(|c| c.borrow_mut().global.take());
    if let Some(g) = g {
        g(ev);
        CLIENT.with(|c| {
            let mut c = c.borrow_mut();
            if c.global.is_none() {
                c.global = Some(g);
            }
        });
    }
}

/// Sends a request (queued until the worker is ready).
pub fn send(req: &Request) {
    let ser = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    let v = match serde::Serialize::serialize(req, &ser) {
        Ok(v) => v,
        Err(e) => {
            web_sys::console::error_1(&format!("alignlab: cannot send a request: {e}").into());
            return;
        }
    };
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        match (&c.worker, c.ready) {
            (Some(w), true) => {
                let _ = w.post_message(&v);
            }
            _ => c.queue.push(v),
        }
    });
}

/// A new job id whose events go to `handler`.
pub fn job(handler: impl FnMut(Event) + 'static) -> JobId {
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        c.next_job += 1;
        let id = c.next_job;
        c.jobs.insert(id, Box::new(handler));
        id
    })
}
