//! The browser app's Web Worker: loads the model and runs generation and training off the page's
//! thread. Built by `scripts/build-web` (bindings for a classic worker, started by its loader,
//! `worker-<hash>_loader.js`).

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn main() {
    // Static constructors (cubecl's IR registers its ops through `inventory`) run once, here.
    // Without an explicit call, wasm-ld wraps every export in them, and every callback from
    // JavaScript (each message, timer, click) re-ran them all: ~30 ms a call.
    #[cfg(target_arch = "wasm32")]
    unsafe {
        __wasm_call_ctors()
    };
    alignlab::worker::main();
}
