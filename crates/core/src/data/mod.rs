//! The data pipeline: decoding ([`image`]; plain JPEGs through libjpeg directly, whole or only the
//! region a random crop keeps, in the private `jpeg` module), augmentation on u8 images
//! ([`transforms`], with Pillow's resize in [`resample`]), batching into tensors ([`tensor`]), the prefetching parallel [`loader`],
//! classification data set indexing ([`folder`]) and an opt-in decoded-image [`cache`].

pub mod cache;
pub mod folder;
pub mod image;
mod jpeg;
pub mod loader;
pub mod resample;
pub mod tensor;
pub mod transforms;

use std::path::PathBuf;

pub use cache::ImageCache;
pub use folder::{ClassDataset, Sample};
pub use image::{DecodeOptions, RgbImage, decode_bytes, decode_file};
pub use loader::{Batch, Loader, Skipped, configure_threads};
pub use tensor::{to_tensor, to_tensor_u8};

/// Errors from reading, decoding, transforming and batching data. Each message is one line and names
/// the file concerned where there is one.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has zero bytes.
    #[error("{path}: empty file (0 bytes)")]
    Empty { path: PathBuf },
    /// The content is not a supported image (JPEG, PNG, BMP, WebP), whatever the extension says.
    #[error("{path}: not a supported image: {reason}")]
    UnknownFormat { path: PathBuf, reason: String },
    /// The header claims more pixels than allowed; refused before decoding.
    #[error("{path}: image is {width}x{height}, over the limit of {limit} pixels")]
    TooLarge { path: PathBuf, width: usize, height: usize, limit: usize },
    /// The decoder failed (truncated or corrupt data, unsupported variant).
    #[error("{path}: cannot decode: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// A data set layout or index file is wrong; the reason names the offending folder, file or label.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// An argument is out of range or inconsistent (e.g. images of different sizes in one batch).
    #[error("{0}")]
    Invalid(String),
    /// An OpenCV call failed on an in-memory image.
    #[error("opencv: {0}")]
    OpenCv(String),
    /// Any other failure, e.g. from a caller's load function.
    #[error("{0}")]
    Other(String),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}

impl From<opencv::Error> for DataError {
    fn from(e: opencv::Error) -> Self {
        DataError::OpenCv(e.message)
    }
}
