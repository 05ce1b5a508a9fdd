//! Plots and the self-contained run report (stub).

/// Errors from drawing plots or writing reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Other(String),
}
