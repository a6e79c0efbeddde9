//! The browser app's page (Leptos), built without the engine (`--no-default-features --features
//! page`): the worker runs the model. Built by `scripts/build-web` into `dist/`.

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn main() {
    // Static constructors run once, here. Without an explicit call, wasm-ld wraps every export
    // in them, and every callback from JavaScript (each message, timer, click) re-runs them all:
    // ~30 ms a call in the worker, where cubecl's IR registers its ops through `inventory`.
    #[cfg(target_arch = "wasm32")]
    unsafe {
        __wasm_call_ctors()
    };
    alignlab::app::main();
}
