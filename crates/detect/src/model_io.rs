//! The inputs and outputs every detector family shares: padded batch targets ([`Targets`]), per-image
//! ground truth ([`Target`]) and per-image detections ([`Detections`]).
//!
//! Conventions: images are `[N, 3, H, W]` float tensors already normalised for the backbone and
//! all of the same size; boxes are xyxy in input pixels; class labels are 0-based foreground ids
//! (`0..num_classes`): the models add and remove their background class internally.

use tch::{Kind, Tensor};

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

/// The padded ground truth of a batch, in input pixels (what the training task collates).
#[derive(Debug)]
pub struct Targets {
    /// `[B, M, 4]` xyxy boxes.
    pub boxes: Tensor,
    /// `[B, M]` int64 classes.
    pub labels: Tensor,
    /// `[B, M]` bool, false for padding.
    pub mask: Tensor,
}

impl Targets {
    /// Moves to a device.
    pub fn to_device(&self, d: tch::Device) -> Self {
        Self { boxes: self.boxes.to_device(d), labels: self.labels.to_device(d), mask: self.mask.to_device(d) }
    }

    /// One [`Target`] per image, padding dropped.
    pub fn per_image(&self) -> Vec<Target> {
        let b = self.boxes.size().first().copied().unwrap_or(0);
        (0..b)
            .map(|i| {
                let keep = self.mask.get(i).nonzero().view([-1]); // [M_i]
                Target {
                    boxes: self.boxes.get(i).index_select(0, &keep).to_kind(Kind::Float), // [M_i, 4]
                    labels: self.labels.get(i).index_select(0, &keep).to_kind(Kind::Int64), // [M_i]
                }
            })
            .collect()
    }
}
