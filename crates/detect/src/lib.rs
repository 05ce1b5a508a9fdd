//! detect: object detection heads, training and evaluation.

pub mod boxes;
pub mod error;
pub mod eval;
pub mod faster_rcnn;
pub mod matching;
pub mod model_io;
pub mod nms;
pub mod priors;
pub mod roi_align;
pub mod ssd;
