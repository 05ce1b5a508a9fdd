//! The crate-wide error type. Each module owns a focused error enum; this one wraps them so that
//! callers can use `?` across modules and binaries can map every failure to a one-line message.

use std::path::PathBuf;

/// Every error `tlcv-core` returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value the user gave is out of range or inconsistent; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// Training stopped on a non-finite loss; the last good checkpoint is kept.
    #[error("non-finite loss ({value}) at epoch {epoch}, step {step}; the last good checkpoint is kept")]
    NonFiniteLoss { epoch: usize, step: usize, value: f64 },
    /// Training was interrupted (Ctrl-C) after a completed step.
    #[error("interrupted")]
    Interrupted,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Implements `From` for every error this crate's modules return (checkpoint, configuration, data,
/// distributed, report, ONNX) and for libtorch's, for an error type of a task crate that has
/// `From<tlcv_core::Error>` (usually a transparent `Core` variant): each goes through [`Error`], so it
/// keeps its message and `?` works on all of them. The crate using it depends on `tch`.
#[macro_export]
macro_rules! from_core_errors {
    ($ty:ty) => {
        $crate::from_core_errors!(@each $ty: $crate::checkpoint::CheckpointError, $crate::config::ConfigError,
            $crate::data::DataError, $crate::dist::DistError, $crate::report::ReportError,
            $crate::onnx::OnnxError, ::tch::TchError);
    };
    (@each $ty:ty: $($source:ty),*) => {
        $(
            impl From<$source> for $ty {
                fn from(e: $source) -> Self {
                    <$ty>::from($crate::Error::from(e))
                }
            }
        )*
    };
}
