//! rayon's global pool in the browser: each of its threads is a Web Worker that instantiates this
//! same module on this worker's memory (shared, so the module is built with atomics) and runs
//! the thread's loop. burn-flex's gemm and the host decoder's products then split their work over
//! the cores as they do natively.
//!
//! A thread's worker is `worker_mt-<hash>_thread.js` beside the engine's (scripts/web-dist.mjs
//! writes it, and the engine's loader names it in `self.alignlabThread`): it loads the bindings,
//! waits for `[module, memory]`, instantiates, says so, and calls [`alignlab_thread`], which
//! waits for a thread of the pool to run. The workers come first and the pool after: a browser
//! starts a worker only once its creator returns to its event loop, and rayon's `build_global`
//! blocks until every thread of the pool runs.

use std::cell::RefCell;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};

use js_sys::{Array, Promise};
use rayon::ThreadBuilder;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Worker, WorkerOptions};

use super::scope;

/// The pool's size: one thread per core the browser reports, at least one, at most 16 (each
/// thread is a worker with its own stack and a copy of the module's instance).
fn threads() -> usize {
    (scope().navigator().hardware_concurrency() as usize).clamp(1, 16)
}

/// The pool's threads, handed from `build_global` to the workers waiting in [`alignlab_thread`].
fn handoff() -> &'static (Mutex<Sender<ThreadBuilder>>, Mutex<Receiver<ThreadBuilder>>) {
    static HANDOFF: OnceLock<(Mutex<Sender<ThreadBuilder>>, Mutex<Receiver<ThreadBuilder>>)> = OnceLock::new();
    HANDOFF.get_or_init(|| {
        let (tx, rx) = channel();
        (Mutex::new(tx), Mutex::new(rx))
    })
}

thread_local!(
    /// The pool's start, settled with its number of threads: a promise, so that every request
    /// that opens the device can wait on it.
    static POOL: RefCell<Option<Promise>> = const { RefCell::new(None) }
);

/// Starts the pool in the background (the model downloads meanwhile); [`ready`] waits for it.
pub fn start() {
    let pool = wasm_bindgen_futures::future_to_promise(async {
        let n = build().await.unwrap_or_else(|e| {
            // rayon then runs every parallel call on the calling thread: slower, not wrong.
            web_sys::console::warn_1(&format!("alignlab worker: on one thread, since {e}").into());
            1
        });
        Ok(JsValue::from(n as u32))
    });
    POOL.with(|p| *p.borrow_mut() = Some(pool));
}

/// The number of threads, once the pool runs. Nothing may use rayon before: its first use would
/// make a pool of its own, of this thread alone.
pub async fn ready() -> usize {
    let pool = POOL.with(|p| p.borrow().clone()).expect("threads::start runs when the worker starts");
    // The promise never rejects; a pool that did not start counts as one thread.
    JsFuture::from(pool).await.ok().and_then(|n| n.as_f64()).map_or(1, |n| n as usize)
}

/// Starts one worker per thread, waits until each runs this module, then builds rayon's global
/// pool on them. Returns the number of threads.
async fn build() -> Result<usize, String> {
    // Where the page is not cross-origin isolated, the memory cannot be sent to other workers.
    if !js_sys::Reflect::get(&js_sys::global(), &"crossOriginIsolated".into()).is_ok_and(|v| v.is_truthy()) {
        return Err("the page is not cross-origin isolated (served without COOP and COEP), so no other worker may share its memory".into());
    }
    let n = threads();
    handoff();
    let started = (0..n).map(spawn).collect::<Result<Array, JsValue>>().map_err(|e| format!("a thread's worker: {e:?}"))?;
    JsFuture::from(Promise::all(&started)).await.map_err(|e| {
        let why = e.dyn_ref::<web_sys::ErrorEvent>().map(|e| e.message()).unwrap_or_else(|| format!("{e:?}"));
        format!("a thread's worker did not start: {why}")
    })?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .spawn_handler(|thread| handoff().0.lock().expect("the hand-off").send(thread).map_err(|_| std::io::Error::other("no worker waits for the thread")))
        .build_global()
        .map_err(|e| format!("rayon's pool: {e}"))?;
    Ok(n)
}

/// Worker `i` of the pool, sent this module and its memory; the promise settles when it runs them.
fn spawn(i: usize) -> Result<Promise, JsValue> {
    let opts = WorkerOptions::new();
    opts.set_name(&format!("alignlab-thread-{i}"));
    // The thread script of this very build (its name carries the build's hash).
    let script = js_sys::Reflect::get(&js_sys::global(), &"alignlabThread".into())?
        .as_string()
        .ok_or_else(|| JsValue::from_str("the engine's loader did not name its threads' script (self.alignlabThread)"))?;
    let worker = Worker::new_with_options(&script, &opts)?;
    let ready = Promise::new(&mut |resolve, reject| {
        worker.set_onmessage(Some(&resolve));
        worker.set_onerror(Some(&reject));
    });
    worker.post_message(&Array::of2(&wasm_bindgen::module(), &wasm_bindgen::memory()))?;
    Ok(ready)
}

/// A thread's worker, once it runs this module: waits for a thread of the pool and runs it (until
/// the pool ends: never, in a page).
#[wasm_bindgen]
pub fn alignlab_thread() {
    let thread = handoff().1.lock().expect("the hand-off").recv();
    if let Ok(thread) = thread {
        thread.run();
    }
}
