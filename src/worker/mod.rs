//! The engine's side of the browser app: typed messages ([`protocol`], compiled everywhere so they
//! are tested natively) and the Web Worker that serves them (wasm32 with the `web` feature).

pub mod protocol;

#[cfg(all(target_arch = "wasm32", feature = "web"))]
mod runtime;

#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub use runtime::main;
