//! How the page is told what went wrong: each error sorted by what the page can offer for it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Bad input: a file that is not a model, a tokenizer that does not fit, bad settings.
    Invalid,
    /// NaN or infinity in training (the last good weights were kept).
    NonFinite,
    /// The GPU device was lost or a read failed.
    Device,
    /// Out of memory (GPU or wasm).
    OutOfMemory,
    Network,
    /// A deploy since the page opened took its engine's files away: only a reload helps.
    Updated,
}

/// What the engine's loader says when a deploy took its files away (scripts/web-dist.mjs writes the
/// same words): the page then offers a reload, not a restart of the same engine.
pub const APP_UPDATED: &str = "the app was updated since this page opened";

/// What the page says of a worker that died with an error: the browser's "Uncaught Error: " (it
/// says only that nothing caught what the engine threw) taken off the engine's own words. A trap
/// keeps its kind ("RuntimeError: memory access out of bounds").
pub fn crash_message(browser: &str) -> String {
    let said = browser.strip_prefix("Uncaught ").unwrap_or(browser);
    let said = said.strip_prefix("Error: ").unwrap_or(said);
    format!("the engine's worker crashed: {said}")
}

impl ErrorKind {
    /// Sorts an engine error for the page: what happened decides what it offers.
    pub fn of(e: &crate::Error) -> Self {
        match e {
            crate::Error::NonFinite(_) => Self::NonFinite,
            crate::Error::Network(_) => Self::Network,
            crate::Error::Device(m) => Self::of_crash(m),
            _ => Self::Invalid,
        }
    }

    /// Sorts a device failure or a crashed worker by its message: wgpu and wasm report an exhausted
    /// GPU or heap as a device error or a trap, and only the text tells them apart (as it does a
    /// loader that found its engine's files gone).
    pub fn of_crash(message: &str) -> Self {
        if message.contains(APP_UPDATED) {
            return Self::Updated;
        }
        let m = message.to_lowercase().replace(' ', "");
        if m.contains("outofmemory") || m.contains("memoryaccessoutofbounds") || m.contains("allocationfailed") {
            Self::OutOfMemory
        } else {
            Self::Device
        }
    }
}
