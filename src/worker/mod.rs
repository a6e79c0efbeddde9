//! The engine's side of the browser app: typed messages ([`protocol`]), the [`router`] that serves
//! them on the lab (compiled everywhere, so it is tested natively), and the Web Worker around it
//! (`web`, wasm32 with the `web` feature).

pub mod protocol;

#[cfg(feature = "engine")]
mod deferred;
#[cfg(feature = "engine")]
mod distill;
#[cfg(feature = "engine")]
mod ensemble;
#[cfg(feature = "engine")]
mod groups;
#[cfg(feature = "engine")]
mod jobs;
#[cfg(feature = "engine")]
mod pipeline;
#[cfg(feature = "engine")]
mod prompting;
#[cfg(feature = "engine")]
mod reference;
#[cfg(feature = "engine")]
pub mod router;
#[cfg(feature = "engine")]
mod training;
#[cfg(feature = "engine")]
mod warm;

#[cfg(all(target_arch = "wasm32", feature = "web", feature = "engine"))]
mod web;

#[cfg(all(target_arch = "wasm32", feature = "web", feature = "engine"))]
pub use web::main;
