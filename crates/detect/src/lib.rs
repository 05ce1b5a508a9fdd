//! detect: object detection heads, training and evaluation.

pub mod boxes;
pub mod error;
pub mod eval;
pub mod nms;
