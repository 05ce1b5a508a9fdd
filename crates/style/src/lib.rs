//! style: neural style transfer on frozen ImageNet feature networks.
//!
//! - [`loss`]: Gram matrices, content, style and total-variation losses (size-normalised).
//! - [`features`]: the frozen perceptual network (EfficientNet-Lite0 by default, VGG-16/19 from a
//!   torchvision file) returning named activations, optionally in bf16.
//! - [`lbfgs`] and [`adam`]: the two optimisers of the image (L-BFGS written on tch tensors).
//! - [`transfer`]: Gatys et al. optimisation, coarse to fine, from the content image or noise.
//! - [`color`]: keeping the content's colours (luminance-only transfer, histogram matching).
//! - [`transform_net`] and [`fast`]: Johnson et al.'s feed-forward network, its training and use.
//! - [`image`]: reading, resizing and writing images as `[1, 3, H, W]` tensors in `[0, 1]`.
//! - [`report`] and [`pipeline`]: the end-to-end `style run` job and its run directory.

pub mod adam;
pub mod color;
pub mod config;
pub mod fast;
pub mod features;
pub mod image;
pub mod lbfgs;
pub mod loss;
pub mod pipeline;
pub mod report;
pub mod teacher;
pub mod transfer;
pub mod transform_net;

pub use config::StyleConfig;

/// Errors of the style crate.
#[derive(Debug, thiserror::Error)]
pub enum StyleError {
    /// From the core crate (backbones, data, checkpoints, configuration, reports, ONNX, libtorch, I/O);
    /// its module errors convert through it (see [`tlcv_core::from_core_errors`]).
    #[error(transparent)]
    Core(#[from] tlcv_core::Error),
    /// OpenCV failed (writing images).
    #[error("opencv: {0}")]
    OpenCv(#[from] opencv::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad input, with a message that says what and where.
    #[error("{0}")]
    Invalid(String),
    /// The loss became NaN or infinite.
    #[error("non-finite loss ({0}); lower the learning rate or the style weight")]
    NonFinite(f64),
}

impl StyleError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        StyleError::Io { path: path.into(), source }
    }
}

tlcv_core::from_core_errors!(StyleError);

/// `Result` with [`StyleError`].
pub type Result<T, E = StyleError> = std::result::Result<T, E>;
