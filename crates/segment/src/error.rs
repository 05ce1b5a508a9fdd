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

impl From<tlcv_core::Error> for SegmentError {
    fn from(e: tlcv_core::Error) -> Self {
        SegmentError::Invalid(e.to_string())
    }
}

impl From<tlcv_core::data::DataError> for SegmentError {
    fn from(e: tlcv_core::data::DataError) -> Self {
        SegmentError::Invalid(e.to_string())
    }
}

impl From<tlcv_datasets::DatasetError> for SegmentError {
    fn from(e: tlcv_datasets::DatasetError) -> Self {
        SegmentError::Invalid(e.to_string())
    }
}

impl From<SegmentError> for tlcv_core::Error {
    fn from(e: SegmentError) -> Self {
        tlcv_core::Error::Invalid(e.to_string())
    }
}
