//! The data pipeline (stub).

/// Errors from reading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Other(String),
}
