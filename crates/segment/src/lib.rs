//! segment: semantic segmentation models, training and evaluation.

pub mod error;
pub mod metrics;
