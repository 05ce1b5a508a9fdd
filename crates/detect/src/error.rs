//! Errors of the detection crate.

use std::path::PathBuf;

/// Every error the `detect` library returns.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON at all.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A JSON file parsed but a value is missing, has the wrong type or is inconsistent.
    #[error("{path}: at {json_path}: {message}")]
    BadInput {
        /// The file involved.
        path: PathBuf,
        /// Where in the document, e.g. `annotations[3].bbox`.
        json_path: String,
        /// What is wrong there.
        message: String,
    },
    /// An argument given by the caller is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A libtorch operation failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}
