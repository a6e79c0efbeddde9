//! Every integration test in one binary. The engine is generic over its backends, so each of the
//! eleven test binaries built its own copy of the same code: 311 CPU-seconds to build them, 76 for
//! this one. Run one file's tests with `cargo test --release --test suite smollm2::`.

mod common;

mod align;
mod cli;
mod cli_train;
mod engine;
mod errors;
mod fuzz_smoke;
mod handoff;
mod judges;
mod lab;
mod smollm2;
mod stories260k;
