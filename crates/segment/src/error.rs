//! Errors of the segmentation crate.

use std::path::PathBuf;

/// Every error the `segment` library returns.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A mask file is missing, unreadable or not a single-channel 8-bit index image of the right size.
    #[error("{path}: {message}")]
    Mask {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An argument or value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// An OpenCV call failed.
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
    /// A libtorch operation failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}
