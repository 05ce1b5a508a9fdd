//! Prior boxes laid on feature-map grids: the anchors of Faster R-CNN's RPN (torchvision's
//! `AnchorGenerator`) and SSD's default boxes (torchvision's `DefaultBoxGenerator`).
//!
//! Both enumerate locations row-major (y, then x) and, at each location, every box shape of that
//! level, so prior `i` of a level lines up with output `i` of a head that reshapes
//! `[N, A * K, H, W]` to `[N, H * W * A, K]`. Arithmetic is float32 like torchvision's.

use tch::{Device, Kind, Tensor};

use crate::error::DetectError;

/// Finite and above zero.
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Anchors of Faster R-CNN: per level a list of sizes (square-root areas, input pixels) and
/// aspect ratios (height / width); cell anchors are centred on 0 and rounded to integers
/// (half to even), then shifted by `stride * (x, y)` for every grid cell (top-left aligned).
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorGenerator {
    /// Sizes per level.
    pub sizes: Vec<Vec<f64>>,
    /// Aspect ratios (h / w) per level.
    pub aspect_ratios: Vec<Vec<f64>>,
}

impl AnchorGenerator {
    /// Sizes and ratios per level; both lists need one entry per feature map.
    pub fn new(sizes: Vec<Vec<f64>>, aspect_ratios: Vec<Vec<f64>>) -> Result<Self, DetectError> {
        if sizes.len() != aspect_ratios.len() || sizes.is_empty() {
            return Err(DetectError::Invalid(format!(
                "anchors: {} size lists but {} aspect-ratio lists",
                sizes.len(),
                aspect_ratios.len()
            )));
        }
        if sizes.iter().chain(&aspect_ratios).any(|v| v.is_empty() || v.iter().any(|x| !positive(*x))) {
            return Err(DetectError::Invalid("anchors: sizes and aspect ratios must be positive".into()));
        }
        Ok(Self { sizes, aspect_ratios })
    }

    /// torchvision's FPN default: sizes 32, 64, 128, 256, 512 on five levels, ratios 0.5, 1, 2.
    pub fn fpn_default() -> Self {
        let sizes = [32.0, 64.0, 128.0, 256.0, 512.0].iter().map(|s| vec![*s]).collect();
        Self { sizes, aspect_ratios: vec![vec![0.5, 1.0, 2.0]; 5] }
    }

    /// Anchors per location of each level (`|sizes| * |ratios|`).
    pub fn num_anchors_per_location(&self) -> Vec<i64> {
        self.sizes.iter().zip(&self.aspect_ratios).map(|(s, a)| (s.len() * a.len()) as i64).collect()
    }

    /// Zero-centred anchors of `level`: `[A, 4]` xyxy, ratio-major (all sizes of the first ratio first).
    pub fn cell_anchors(&self, level: usize) -> Result<Tensor, DetectError> {
        let (sizes, ratios) = match (self.sizes.get(level), self.aspect_ratios.get(level)) {
            (Some(s), Some(r)) => (s, r),
            _ => return Err(DetectError::Invalid(format!("anchors: no level {level}"))),
        };

        let scales = Tensor::from_slice(sizes).to_kind(Kind::Float);
        let h_ratios = Tensor::from_slice(ratios).to_kind(Kind::Float).sqrt();
        let w_ratios = h_ratios.reciprocal();
        let ws = (w_ratios.unsqueeze(1) * scales.unsqueeze(0)).view([-1]);
        let hs = (h_ratios.unsqueeze(1) * scales.unsqueeze(0)).view([-1]);
        let base = Tensor::stack(&[-&ws, -&hs, ws, hs], 1) / 2.0;
        Ok(base.round())
    }

    /// Anchors for an input of `image_size` `(H, W)` and feature grids `(H_l, W_l)` per level:
    /// `[sum_l H_l * W_l * A_l, 4]` xyxy in input pixels (float32, CPU). The stride of a level is
    /// `image // grid` (integer division) on each axis.
    pub fn anchors(&self, image_size: (i64, i64), grids: &[(i64, i64)]) -> Result<Tensor, DetectError> {
        if grids.len() != self.sizes.len() {
            return Err(DetectError::Invalid(format!(
                "anchors: {} feature maps for {} anchor levels",
                grids.len(),
                self.sizes.len()
            )));
        }
        let mut all = Vec::with_capacity(grids.len());
        for (l, &(gh, gw)) in grids.iter().enumerate() {
            if gh < 1 || gw < 1 {
                return Err(DetectError::Invalid(format!("anchors: empty grid {gh}x{gw} at level {l}")));
            }
            let (sy, sx) = (image_size.0 / gh, image_size.1 / gw);
            let xs = Tensor::arange(gw, (Kind::Int, Device::Cpu)) * sx;
            let ys = Tensor::arange(gh, (Kind::Int, Device::Cpu)) * sy;
            let grid = Tensor::meshgrid_indexing(&[ys, xs], "ij");
            let (yy, xx) = (grid[0].reshape([-1]), grid[1].reshape([-1]));
            let shifts = Tensor::stack(&[&xx, &yy, &xx, &yy], 1).to_kind(Kind::Float); // [HW, 4]
            let cell = self.cell_anchors(l)?; // [A, 4]
            all.push((shifts.view([-1, 1, 4]) + cell.view([1, -1, 4])).reshape([-1, 4])); // [HW*A, 4]
        }
        Ok(Tensor::cat(&all, 0))
    }
}

/// SSD default boxes (Liu et al. 2016, section 2.2) with torchvision's conventions: level `k` has
/// scale `s_k`; its shapes are `(s_k, s_k)`, `(s'_k, s'_k)` with `s'_k = sqrt(s_k s_{k+1})`, then for
/// each extra ratio `r` the pair `(s_k sqrt r, s_k / sqrt r)` and its transpose. Centres are
/// `((j + 0.5) / f_x, (i + 0.5) / f_y)` with `f = image / step` (or the grid size when there are no
/// steps). With `clip`, widths and heights are clamped to `[0, 1]` before conversion to corners.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultBoxGenerator {
    /// Extra aspect ratios per level (e.g. `[2]` or `[2, 3]`; ratio 1 is always present).
    pub aspect_ratios: Vec<Vec<f64>>,
    /// `levels + 1` scales relative to the image side.
    pub scales: Vec<f64>,
    /// Step (input pixels per cell) per level; `None` derives it from the grid sizes.
    pub steps: Option<Vec<f64>>,
    /// Clamp shapes to `[0, 1]`.
    pub clip: bool,
}

impl DefaultBoxGenerator {
    /// Scales evenly spaced from `min_ratio` to `max_ratio` over the levels, plus 1.0 for the
    /// `s'` of the last level (one level: `[min_ratio, max_ratio]`), clipping on, no steps.
    pub fn new(aspect_ratios: Vec<Vec<f64>>, min_ratio: f64, max_ratio: f64) -> Result<Self, DetectError> {
        let n = aspect_ratios.len();
        if n == 0 {
            return Err(DetectError::Invalid("default boxes: no levels".into()));
        }
        let scales = if n > 1 {
            let mut s: Vec<f64> =
                (0..n).map(|k| min_ratio + (max_ratio - min_ratio) * k as f64 / (n as f64 - 1.0)).collect();
            s.push(1.0);
            s
        } else {
            vec![min_ratio, max_ratio]
        };
        Self::with_scales(aspect_ratios, scales, None, true)
    }

    /// Explicit scales (`levels + 1` of them) and optional steps.
    pub fn with_scales(
        aspect_ratios: Vec<Vec<f64>>,
        scales: Vec<f64>,
        steps: Option<Vec<f64>>,
        clip: bool,
    ) -> Result<Self, DetectError> {
        let n = aspect_ratios.len();
        if scales.len() != n + 1 {
            return Err(DetectError::Invalid(format!(
                "default boxes: {} scales for {n} levels (need {})",
                scales.len(),
                n + 1
            )));
        }
        if let Some(s) = &steps
            && (s.len() != n || s.iter().any(|x| !positive(*x)))
        {
            return Err(DetectError::Invalid(format!("default boxes: need {n} positive steps, got {s:?}")));
        }
        if aspect_ratios.iter().flatten().any(|r| !positive(*r)) {
            return Err(DetectError::Invalid("default boxes: aspect ratios must be positive".into()));
        }
        Ok(Self { aspect_ratios, scales, steps, clip })
    }

    /// Boxes per location of each level (`2 + 2 * |ratios|`).
    pub fn num_anchors_per_location(&self) -> Vec<i64> {
        self.aspect_ratios.iter().map(|r| 2 + 2 * r.len() as i64).collect()
    }

    /// The `(w, h)` shapes of level `k`, relative to the image.
    pub fn wh_pairs(&self, k: usize) -> Vec<[f64; 2]> {
        let s = self.scales[k];
        let s_prime = (s * self.scales[k + 1]).sqrt();
        let mut v = vec![[s, s], [s_prime, s_prime]];
        for r in &self.aspect_ratios[k] {
            let q = r.sqrt();
            v.push([s * q, s / q]);
            v.push([s / q, s * q]);
        }
        v
    }

    /// Normalised `(cx, cy, w, h)` boxes for grids `(H_k, W_k)`: `[P, 4]` float32.
    pub fn boxes_cxcywh(&self, image_size: (i64, i64), grids: &[(i64, i64)]) -> Result<Tensor, DetectError> {
        if grids.len() != self.aspect_ratios.len() {
            return Err(DetectError::Invalid(format!(
                "default boxes: {} feature maps for {} levels",
                grids.len(),
                self.aspect_ratios.len()
            )));
        }
        let mut all = Vec::new();
        for (k, &(gh, gw)) in grids.iter().enumerate() {
            let (fy, fx) = match &self.steps {
                Some(st) => (image_size.0 as f64 / st[k], image_size.1 as f64 / st[k]),
                None => (gh as f64, gw as f64),
            };
            let xs = (Tensor::arange(gw, (Kind::Float, Device::Cpu)) + 0.5) / fx;
            let ys = (Tensor::arange(gh, (Kind::Float, Device::Cpu)) + 0.5) / fy;
            let grid = Tensor::meshgrid_indexing(&[ys, xs], "ij");
            let (yy, xx) = (grid[0].reshape([-1, 1]), grid[1].reshape([-1, 1]));
            let pairs = self.wh_pairs(k);
            let flat: Vec<f32> = pairs.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect();
            let mut wh = Tensor::from_slice(&flat).view([-1, 2]); // [A, 2]
            if self.clip {
                wh = wh.clamp(0.0, 1.0);
            }
            let a = pairs.len() as i64;
            let centres = Tensor::cat(&[xx, yy], 1).unsqueeze(1).expand([gh * gw, a, 2], false); // [HW, A, 2]
            let shapes = wh.unsqueeze(0).expand([gh * gw, a, 2], false);
            all.push(Tensor::cat(&[centres, shapes], 2).reshape([-1, 4]));
        }
        Ok(Tensor::cat(&all, 0))
    }

    /// xyxy default boxes in input pixels for an input of `image_size` `(H, W)`: `[P, 4]` float32.
    pub fn boxes(&self, image_size: (i64, i64), grids: &[(i64, i64)]) -> Result<Tensor, DetectError> {
        let b = self.boxes_cxcywh(image_size, grids)?;
        let scale = Tensor::from_slice(&[image_size.1 as f32, image_size.0 as f32]).view([1, 2]);
        let (c, wh) = (b.narrow(1, 0, 2), b.narrow(1, 2, 2));
        Ok(Tensor::cat(&[(&c - &wh * 0.5) * &scale, (&c + &wh * 0.5) * &scale], 1))
    }
}
