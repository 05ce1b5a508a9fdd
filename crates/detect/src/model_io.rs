//! The inputs and outputs shared by the Faster R-CNN and SSD models, so that a pipeline can drive
//! either one the same way.
//!
//! Conventions: images are `[N, 3, H, W]` float tensors already normalised for the backbone and
//! all of the same size; boxes are xyxy in input pixels; class labels are 0-based foreground ids
//! (`0..num_classes`): the models add and remove their background class internally.

use tch::Tensor;

/// The ground truth of one image.
#[derive(Debug)]
pub struct Target {
    /// `[M, 4]` float xyxy boxes in input pixels (M may be 0).
    pub boxes: Tensor,
    /// `[M]` int64 class ids in `0..num_classes`.
    pub labels: Tensor,
}

/// The detections of one image, best first.
#[derive(Debug)]
pub struct Detections {
    /// `[D, 4]` float xyxy boxes in input pixels.
    pub boxes: Tensor,
    /// `[D]` float confidences in `(0, 1]`.
    pub scores: Tensor,
    /// `[D]` int64 class ids in `0..num_classes`.
    pub labels: Tensor,
}
