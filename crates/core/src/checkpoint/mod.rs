//! Checkpoint import and export (stub; filled in by the checkpoint work).

/// Errors from reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Other(String),
}
