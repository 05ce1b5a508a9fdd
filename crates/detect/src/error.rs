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
    /// From the core crate (backbones, training, data, checkpoints, configuration, reports, ONNX,
    /// libtorch, I/O); its module errors convert through it (see [`tlcv_core::from_core_errors`]).
    #[error(transparent)]
    Core(#[from] tlcv_core::Error),
    /// Generating the embedded data set failed.
    #[error(transparent)]
    Dataset(#[from] tlcv_datasets::DatasetError),
    /// An OpenCV call failed (drawing, encoding, warping).
    #[error("opencv: {0}")]
    OpenCv(String),
}

tlcv_core::from_core_errors!(DetectError);

impl From<opencv::Error> for DetectError {
    fn from(e: opencv::Error) -> Self {
        DetectError::OpenCv(e.message)
    }
}

impl From<DetectError> for tlcv_core::Error {
    /// Errors crossing into the shared training loop keep their message.
    fn from(e: DetectError) -> Self {
        match e {
            DetectError::Core(c) => c,
            other => tlcv_core::Error::Invalid(other.to_string()),
        }
    }
}

/// `Result` with [`DetectError`].
pub type Result<T, E = DetectError> = std::result::Result<T, E>;
