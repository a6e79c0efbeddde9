//! The engine's side of the browser app: typed messages ([`protocol`]), the [`router`] that serves
//! them on the lab (compiled everywhere, so it is tested natively), and the Web Worker around it
//! (`web`, wasm32 with the `web` feature).

mod distill;
mod ensemble;
mod groups;
mod jobs;
mod pipeline;
mod prompting;
pub mod protocol;
pub mod router;
mod training;

#[cfg(all(target_arch = "wasm32", feature = "web"))]
mod web;

#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub use web::main;
