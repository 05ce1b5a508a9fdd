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
    /// From the core crate (backbones, training, configuration, I/O).
    #[error(transparent)]
    Core(#[from] tlcv_core::Error),
    /// A data problem (decoding, layout).
    #[error(transparent)]
    Data(#[from] tlcv_core::data::DataError),
    /// A checkpoint problem.
    #[error(transparent)]
    Checkpoint(#[from] tlcv_core::checkpoint::CheckpointError),
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] tlcv_core::config::ConfigError),
    /// A report problem.
    #[error(transparent)]
    Report(#[from] tlcv_core::report::ReportError),
    /// Generating an embedded data set failed.
    #[error(transparent)]
    Dataset(#[from] tlcv_datasets::DatasetError),
    /// libtorch failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// Bad input, with a message that says what and where.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with [`ClassifyError`].
pub type Result<T, E = ClassifyError> = std::result::Result<T, E>;
