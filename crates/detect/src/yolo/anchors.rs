//! Anchor points and strides of the anchor-free heads: one point at the centre of every feature-map
//! cell, level by level (strides 8, 16, 32), row-major inside a level. (SSD's default boxes and
//! Faster R-CNN's anchor boxes are in [`crate::priors`].)

use tch::{Device, Kind, Tensor};

/// The anchor points of a set of feature maps.
#[derive(Debug)]
pub struct AnchorPoints {
    /// `[A, 2]` cell centres `(x, y)` in input pixels.
    pub points: Tensor,
    /// `[A, 1]` stride of each point's level.
    pub strides: Tensor,
}

impl AnchorPoints {
    /// Points in grid units of their own level (`points / strides`), `[A, 2]`.
    pub fn grid(&self) -> Tensor {
        &self.points / &self.strides
    }

    /// Number of points A.
    pub fn len(&self) -> i64 {
        self.points.size()[0]
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Anchor points for levels of `(height, width)` cells with the given strides; the point of cell
/// `(i, j)` is `((j + offset) * stride, (i + offset) * stride)` (offset 0.5 = cell centre).
pub fn anchor_points(shapes: &[(i64, i64)], strides: &[i64], offset: f64, device: Device) -> AnchorPoints {
    let mut pts = Vec::new();
    let mut st = Vec::new();
    for (&(h, w), &s) in shapes.iter().zip(strides) {
        let sx = (Tensor::arange(w, (Kind::Float, device)) + offset) * s as f64; // [W]
        let sy = (Tensor::arange(h, (Kind::Float, device)) + offset) * s as f64; // [H]
        let grid = Tensor::meshgrid_indexing(&[&sy, &sx], "ij"); // 2 x [H, W]
        pts.push(Tensor::stack(&[grid[1].reshape([-1]), grid[0].reshape([-1])], -1)); // [H*W, 2]
        st.push(Tensor::full([h * w, 1], s as f64, (Kind::Float, device)));
    }
    AnchorPoints { points: Tensor::cat(&pts, 0), strides: Tensor::cat(&st, 0) }
}

/// Number of anchor points of a square `img_size` input over strides.
pub fn count(img_size: i64, strides: &[i64]) -> i64 {
    strides.iter().map(|s| (img_size + s - 1) / s).map(|n| n * n).sum()
}
