//! classify: image classification by transfer learning.
//!
//! Pipeline: [`data`] resolves the data set (ImageFolder, CSV or an embedded one) → [`model`] builds a core
//! backbone's classifier with the head sized to the data, loads pretrained weights and freezes per the
//! strategy → [`task`] trains it through the shared loop (on images, or on a feature cache when the
//! backbone is frozen) → [`evaluate`] and [`report`] write metrics, plots and `report.html` →
//! [`predict`] labels new images; [`export`] writes the trained network as ONNX and serves such a file. [`study`] compares strategies across training-set sizes and
//! [`forward`] is the parity tool against PyTorch.

pub mod config;
pub mod data;
pub mod evaluate;
pub mod export;
pub mod forward;
pub mod model;
pub mod pipeline;
pub mod predict;
pub mod report;
pub mod study;
pub mod task;

pub use config::ClassifyConfig;

/// Errors of the classification crate.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// From the core crate (backbones, training, data, checkpoints, configuration, reports, ONNX,
    /// libtorch, I/O); its module errors convert through it (see [`tlcv_core::from_core_errors`]).
    #[error(transparent)]
    Core(#[from] tlcv_core::Error),
    /// Generating an embedded data set failed.
    #[error(transparent)]
    Dataset(#[from] tlcv_datasets::DatasetError),
    /// Bad input, with a message that says what and where.
    #[error("{0}")]
    Invalid(String),
}

tlcv_core::from_core_errors!(ClassifyError);

/// `Result` with [`ClassifyError`].
pub type Result<T, E = ClassifyError> = std::result::Result<T, E>;
