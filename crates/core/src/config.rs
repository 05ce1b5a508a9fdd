//! Layered configuration (stub).

/// Errors from reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Other(String),
}
