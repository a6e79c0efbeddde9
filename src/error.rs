//! One error type for the engine. Messages say what was wrong and what to do about it.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model or tokenizer file is malformed (truncated, wrong magic, bad shape...).
    #[error("{0}")]
    Format(String),
    /// The file is valid but uses something this engine does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// Tokenizer construction, encoding or a tokenizer/model mismatch.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Chat template could not be rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A request the engine cannot serve (empty prompt, bad sampling parameter...).
    #[error("{0}")]
    Invalid(String),
    /// Training produced NaN or infinity (the trainer kept the last good weights).
    #[error("{0}")]
    NonFinite(String),
    /// A download failed (no connection, a server error, a broken transfer).
    #[error("{0}")]
    Network(String),
    /// The compute device failed (lost device, out of memory, readback error).
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn format(msg: impl fmt::Display) -> Self {
        Error::Format(msg.to_string())
    }
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source }
    }
}
