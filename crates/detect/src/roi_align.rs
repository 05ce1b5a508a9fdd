//! RoIAlign (He et al. 2017, "Mask R-CNN") with torchvision's semantics, and the multi-scale pooler
//! of Faster R-CNN with FPN (torchvision's `MultiScaleRoIAlign` and its `LevelMapper`).
//!
//! Every output bin averages `gh x gw` bilinear samples placed at the centres of a regular grid
//! inside the bin. `gh = sampling_ratio` when it is positive, else `ceil(roi_height / pooled_height)`
//! per box (likewise `gw`). `aligned = true` shifts box corners by -0.5 feature pixel (pixel
//! centres at half-integers); `aligned = false` is the legacy mode that also widens boxes to at
//! least one feature pixel. A sample outside `[-1, size]` contributes 0; one inside is clamped to
//! the map. The implementation is made of tensor ops (`grid_sampler_2d` and weighted sums), so
//! autograd differentiates it with respect to the features.

use tch::{Device, Kind, Tensor};
use tlcv_core::onnx::graph::Attr;
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::DetectError;

/// Elements of one sampled block (`rois x PH x gh x PW x gw x C`); bounds peak memory.
const CHUNK_ELEMS: i64 = 1 << 23;

/// Parameters of [`roi_align`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignOptions {
    /// `(pooled_height, pooled_width)`.
    pub output_size: (i64, i64),
    /// Feature-map pixels per input pixel (e.g. 0.25 for a stride-4 map).
    pub spatial_scale: f64,
    /// Samples per bin side; `<= 0` picks `ceil(roi_size / output_size)` per box.
    pub sampling_ratio: i64,
    /// Use the half-pixel offset (see the module docs).
    pub aligned: bool,
}

/// Checks the arguments of [`roi_align`]; returns `(N, C, H, W)` and `K`.
fn check(input: &Tensor, rois: &Tensor, o: &RoiAlignOptions) -> Result<([i64; 4], i64), DetectError> {
    let dims: [i64; 4] = match input.size().as_slice() {
        [n, c, h, w] if *h > 0 && *w > 0 => [*n, *c, *h, *w],
        s => return Err(DetectError::Invalid(format!("roi_align: input must be [N, C, H, W], got {s:?}"))),
    };
    let k = match rois.size().as_slice() {
        [k, 5] => *k,
        s => return Err(DetectError::Invalid(format!("roi_align: rois must be [K, 5], got {s:?}"))),
    };
    if o.output_size.0 < 1 || o.output_size.1 < 1 {
        return Err(DetectError::Invalid(format!("roi_align: output size must be positive, got {:?}", o.output_size)));
    }
    if !input.is_floating_point() {
        return Err(DetectError::Invalid(format!("roi_align: input must be floating point, got {:?}", input.kind())));
    }
    Ok((dims, k))
}

/// Sample coordinates along one axis: `start [k]`, `bin [k]`, grid counts `g [k]` (i64) ->
/// coordinates `[k, P, G]` and the validity mask of grid slots `[k, G]` (slot < g).
fn sample_coords(start: &Tensor, bin: &Tensor, g: &Tensor, pooled: i64, gmax: i64) -> (Tensor, Tensor) {
    let (kind, dev) = (start.kind(), start.device());
    let p = Tensor::arange(pooled, (kind, dev)).view([1, pooled, 1]);
    let i = Tensor::arange(gmax, (Kind::Int64, dev));
    let gf = g.clamp_min(1).to_kind(kind).view([-1, 1, 1]);
    let bin3 = bin.view([-1, 1, 1]);
    // start + p * bin + (i + 0.5) * bin / g, as the reference kernel orders it.
    let coords = start.view([-1, 1, 1]) + &p * &bin3 + (i.to_kind(kind).view([1, 1, gmax]) + 0.5) * &bin3 / gf;
    let slot_ok = i.view([1, gmax]).lt_tensor(&g.view([-1, 1])); // [k, G]
    (coords, slot_ok)
}

/// Normalises pixel coordinates `c` on an axis of `size` pixels for `grid_sampler_2d` with
/// `align_corners = true` (pixel `i` at `-1 + 2i / (size - 1)`).
fn normalise(c: &Tensor, size: i64) -> Tensor {
    if size > 1 { c * (2.0 / (size - 1) as f64) - 1.0 } else { c.zeros_like() }
}

/// Whether each sample `[k, P, G]` counts: its grid slot is used and it lies in `[-1, size]`.
fn inside(c: &Tensor, slot_ok: &Tensor, size: i64) -> Tensor {
    c.ge(-1.0).logical_and(&c.le(size as f64)).logical_and(&slot_ok.unsqueeze(1))
}

/// RoIAlign of `rois` `[K, 5]` (`batch_index, x1, y1, x2, y2` in input pixels) over `input`
/// `[N, C, H, W]` -> `[K, C, PH, PW]`, differentiable with respect to `input`.
///
/// The bilinear taps are libtorch's `grid_sampler_2d` (border padding and `align_corners = true`
/// give the reference kernel's clamping onto the map), run once per image on all of its boxes;
/// samples outside `[-1, size]` and unused grid slots are masked out before the average.
pub fn roi_align(input: &Tensor, rois: &Tensor, o: &RoiAlignOptions) -> Result<Tensor, DetectError> {
    let ([n, c, h, w], k) = check(input, rois, o)?;
    let (ph, pw) = o.output_size;
    let (kind, dev) = (input.kind(), input.device());
    if k == 0 {
        return Ok(Tensor::zeros([0, c, ph, pw], (kind, dev)));
    }
    let rois = rois.to_device(dev).to_kind(kind);
    let batch = rois.select(1, 0).to_kind(Kind::Int64); // [K], truncated like the reference
    let batch_host = Vec::<i64>::try_from(batch.to_device(Device::Cpu))?;
    if let Some(b) = batch_host.iter().find(|b| **b < 0 || **b >= n) {
        return Err(DetectError::Invalid(format!("roi_align: batch index {b} outside 0..{n}")));
    }
    let off = if o.aligned { 0.5 } else { 0.0 };
    let corner = |i: i64| rois.select(1, i) * o.spatial_scale - off;
    let (x1, y1, x2, y2) = (corner(1), corner(2), corner(3), corner(4));
    let (mut rw, mut rh) = (&x2 - &x1, &y2 - &y1);
    if !o.aligned {
        rw = rw.clamp_min(1.0);
        rh = rh.clamp_min(1.0);
    }
    let (bin_h, bin_w) = (&rh / ph as f64, &rw / pw as f64);
    let grid = |bin: &Tensor| {
        if o.sampling_ratio > 0 {
            bin.full_like(o.sampling_ratio).to_kind(Kind::Int64)
        } else {
            bin.ceil().to_kind(Kind::Int64)
        }
    };
    let (gh, gw) = (grid(&bin_h), grid(&bin_w)); // [K]
    let count = (&gh * &gw).clamp_min(1).to_kind(kind); // [K]
    let gh_host = Vec::<i64>::try_from(gh.to_device(Device::Cpu))?;
    let gw_host = Vec::<i64>::try_from(gw.to_device(Device::Cpu))?;
    let (mut outs, mut order) = (Vec::new(), Vec::with_capacity(k as usize));
    for image in 0..n {
        let mine: Vec<i64> = (0..k).filter(|&i| batch_host[i as usize] == image).collect();
        let mut rest = mine.as_slice();
        while !rest.is_empty() {
            // Grow the chunk while its sampled block stays under the budget.
            let (mut len, mut gmh, mut gmw) = (0usize, 1i64, 1i64);
            while len < rest.len() {
                let r = rest[len] as usize;
                let (a, b) = (gmh.max(gh_host[r]), gmw.max(gw_host[r]));
                if len > 0 && (len as i64 + 1) * ph * pw * a * b * c > CHUNK_ELEMS {
                    break;
                }
                (gmh, gmw, len) = (a, b, len + 1);
            }
            let (chunk, tail) = rest.split_at(len);
            rest = tail;
            let sel = Tensor::from_slice(chunk).to_device(dev);
            let pick = |t: &Tensor| t.index_select(0, &sel);
            let kc = chunk.len() as i64;
            let (ys, yok) = sample_coords(&pick(&y1), &pick(&bin_h), &pick(&gh), ph, gmh); // [k, PH, Gh]
            let (xs, xok) = sample_coords(&pick(&x1), &pick(&bin_w), &pick(&gw), pw, gmw); // [k, PW, Gw]
            let wt = inside(&ys, &yok, h).to_kind(kind).view([kc, ph, gmh, 1, 1])
                * inside(&xs, &xok, w).to_kind(kind).view([kc, 1, 1, pw, gmw]); // [k, PH, Gh, PW, Gw]
            let full = [kc, ph, gmh, pw, gmw];
            let gy = normalise(&ys, h).view([kc, ph, gmh, 1, 1]).expand(full, false);
            let gx = normalise(&xs, w).view([kc, 1, 1, pw, gmw]).expand(full, false);
            let g = Tensor::stack(&[gx, gy], -1).view([1, kc * ph * gmh, pw * gmw, 2]);
            // interpolation 0 = bilinear, padding 1 = border.
            let v = input.narrow(0, image, 1).grid_sampler_2d(&g, 0, 1, true); // [1, C, k*PH*Gh, PW*Gw]
            let v = v.view([c, kc, ph, gmh, pw, gmw]) * wt.unsqueeze(0);
            let pooled = v.sum_dim_intlist([3, 5].as_slice(), false, kind).permute([1, 0, 2, 3]); // [k, C, PH, PW]
            outs.push(pooled / pick(&count).view([kc, 1, 1, 1]));
            order.extend_from_slice(chunk);
        }
    }
    // Back to the order of `rois`.
    let order = Tensor::from_slice(&order).to_device(dev);
    let inverse = order.argsort(0, false);
    Ok(Tensor::cat(&outs, 0).index_select(0, &inverse).contiguous())
}

/// The FPN level heuristic (Lin et al. 2017, eq. 1): a box of area `s^2` goes to level
/// `floor(k0 + log2(s / canonical_scale) + eps)`, clamped to `k_min..=k_max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelMapper {
    /// Finest level (2 for a stride-4 map).
    pub k_min: i64,
    /// Coarsest level (5 for a stride-32 map).
    pub k_max: i64,
    /// Box side that maps to `canonical_level` (224).
    pub canonical_scale: f64,
    /// k0 (4).
    pub canonical_level: f64,
    /// Added before flooring (1e-6).
    pub eps: f64,
}

impl LevelMapper {
    /// torchvision's defaults (canonical 224 at level 4, eps 1e-6) for levels `k_min..=k_max`.
    pub fn new(k_min: i64, k_max: i64) -> Self {
        Self { k_min, k_max, canonical_scale: 224.0, canonical_level: 4.0, eps: 1e-6 }
    }

    /// xyxy boxes `[K, 4]` -> level offsets `[K]` (i64, `0..=k_max-k_min`, 0 = finest).
    pub fn map(&self, boxes: &Tensor) -> Result<Tensor, DetectError> {
        let s = crate::boxes::box_area(boxes)?.sqrt();
        let lvl = ((s / self.canonical_scale).log2() + self.canonical_level + self.eps).floor();
        let lvl = lvl.clamp(self.k_min as f64, self.k_max as f64).to_kind(Kind::Int64);
        Ok(lvl - self.k_min)
    }
}

/// RoIAlign over several feature maps, each box pooled from the level [`LevelMapper`] picks
/// (torchvision's `MultiScaleRoIAlign`, always `aligned = false`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiScaleRoiAlign {
    /// `(PH, PW)`.
    pub output_size: (i64, i64),
    /// Samples per bin side (2 in Faster R-CNN).
    pub sampling_ratio: i64,
    /// Box side that maps to `canonical_level`.
    pub canonical_scale: f64,
    /// Level of a `canonical_scale` box.
    pub canonical_level: f64,
}

impl MultiScaleRoiAlign {
    /// A pooler with torchvision's canonical scale 224 at level 4.
    pub fn new(output_size: (i64, i64), sampling_ratio: i64) -> Self {
        Self { output_size, sampling_ratio, canonical_scale: 224.0, canonical_level: 4.0 }
    }

    /// The scale of a map relative to the image: `2^round(log2(feat_h / image_h))`.
    fn infer_scale(feat: &Tensor, image_h: i64) -> f64 {
        let fh = feat.size().get(2).copied().unwrap_or(1) as f64;
        2f64.powf((fh / image_h as f64).log2().round())
    }

    /// `features` (finest first, e.g. strides 4..32, each `[N, C, H_l, W_l]`), `boxes` one xyxy
    /// `[K_i, 4]` tensor per image in input pixels, `image_size` `(H, W)` of the (padded) input batch
    /// -> `[sum K_i, C, PH, PW]`, boxes in image order.
    pub fn forward(
        &self,
        features: &[Tensor],
        boxes: &[Tensor],
        image_size: (i64, i64),
    ) -> Result<Tensor, DetectError> {
        let first =
            features.first().ok_or_else(|| DetectError::Invalid("MultiScaleRoiAlign: no feature maps".into()))?;
        let (kind, dev) = (first.kind(), first.device());
        let mut rois = Vec::with_capacity(boxes.len());
        for (i, b) in boxes.iter().enumerate() {
            let kb = crate::boxes::check_boxes(b, "MultiScaleRoiAlign boxes")?;
            let idx = Tensor::full([kb, 1], i as f64, (kind, dev));
            rois.push(Tensor::cat(&[idx, b.to_device(dev).to_kind(kind)], 1));
        }
        let rois = Tensor::cat(&rois, 0); // [K, 5]
        let scales: Vec<f64> = features.iter().map(|f| Self::infer_scale(f, image_size.0)).collect();
        let opts = |scale: f64| RoiAlignOptions {
            output_size: self.output_size,
            spatial_scale: scale,
            sampling_ratio: self.sampling_ratio,
            aligned: false,
        };
        if features.len() == 1 {
            return roi_align(first, &rois, &opts(scales[0]));
        }
        let k_min = -scales[0].log2() as i64;
        let k_max = -scales[scales.len() - 1].log2() as i64;
        let mapper = LevelMapper {
            canonical_scale: self.canonical_scale,
            canonical_level: self.canonical_level,
            ..LevelMapper::new(k_min, k_max)
        };
        let levels = mapper.map(&rois.narrow(1, 1, 4))?; // [K]
        let k = rois.size()[0];
        let c = first.size()[1];
        let mut result = Tensor::zeros([k, c, self.output_size.0, self.output_size.1], (kind, dev));
        for (l, (feat, scale)) in features.iter().zip(&scales).enumerate() {
            let idx = levels.eq(l as i64).nonzero().view([-1]);
            if idx.size()[0] == 0 {
                continue;
            }
            let pooled = roi_align(feat, &rois.index_select(0, &idx), &opts(*scale))?;
            result = result.index_copy(0, &idx, &pooled);
        }
        Ok(result)
    }

    /// [`MultiScaleRoiAlign::forward`] as ONNX nodes: `features` (finest first, fixed sizes), `rois`
    /// `[R, 4]` xyxy input pixels of the images `batch` `[R]` (int64) -> `[R, C, PH, PW]`. Each level
    /// pools only the boxes the level mapper gives it (`NonZero`, `Gather`, one `RoiAlign`) and puts
    /// them back in place (`ScatterND`). `RoiAlign` at opset 16 and later says
    /// `coordinate_transformation_mode = "output_half_pixel"`, the opset-10 operator's only behaviour:
    /// `aligned = false` (no half-pixel shift, boxes at least one map pixel wide).
    pub fn to_onnx(
        &self,
        g: &mut Graph,
        features: &[Value],
        (rois, batch): (&Value, &Value),
        image_h: i64,
    ) -> Result<Value, OnnxError> {
        let scale_of = |f: &Value| -> Result<f64, OnnxError> {
            let fh = f.dim(2).ok_or_else(|| OnnxError::Unsupported("RoIAlign export needs fixed map sizes".into()))?;
            Ok(2f64.powf((fh as f64 / image_h as f64).log2().round()))
        };
        let scales = features.iter().map(scale_of).collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(c)) = (features.first(), features.first().and_then(|f| f.dim(1))) else {
            return Err(OnnxError::Unsupported("MultiScaleRoiAlign: no feature maps".into()));
        };
        let (ph, pw) = self.output_size;
        let pool = |g: &mut Graph, f: &Value, r: &Value, b: &Value, scale: f64| {
            let mut attrs = vec![
                Attr::Str("mode", "avg".into()),
                Attr::Int("output_height", ph),
                Attr::Int("output_width", pw),
                Attr::Int("sampling_ratio", self.sampling_ratio),
                Attr::Float("spatial_scale", scale as f32),
            ];
            if g.opset() >= 16 {
                attrs.push(Attr::Str("coordinate_transformation_mode", "output_half_pixel".into()));
            }
            g.op("RoiAlign", &[f, r, b], &attrs, vec![r.dims()[0], Some(c), Some(ph), Some(pw)])
        };
        if features.len() == 1 {
            return Ok(pool(g, first, rois, batch, scales[0]));
        }
        let k_min = -scales[0].log2() as i64;
        let k_max = -scales[scales.len() - 1].log2() as i64;
        let level = self.level_onnx(g, rois, (k_min, k_max))?; // [R] float, 0 = finest
        // Zeros [R, C, PH, PW], a broadcast float32 0 (tract reads ConstantOfShape's default as float64).
        let shape = g.shape_of(rois);
        let r = g.slice(&shape, 0, 0, 1);
        let rest = g.ints(&[c, ph, pw]);
        let shape = g.concat(&[&r, &rest], 0);
        let zero = g.const_float(&[0.0], &[1, 1, 1, 1])?;
        let mut out = g.op("Expand", &[&zero, &shape], &[], vec![rois.dims()[0], Some(c), Some(ph), Some(pw)]);
        for (l, (f, scale)) in features.iter().zip(&scales).enumerate() {
            let lv = g.const_float(&[l as f32], &[])?;
            let mine = g.binary("Equal", &level, &lv);
            let idx = g.op("NonZero", &[&mine], &[], vec![Some(1), None]);
            let idx = g.reshape(&idx, &[-1]); // [k]
            let r = g.op("Gather", &[rois, &idx], &[Attr::Int("axis", 0)], vec![None, Some(4)]);
            let b = g.op("Gather", &[batch, &idx], &[Attr::Int("axis", 0)], vec![None]);
            let pooled = pool(g, f, &r, &b, *scale); // [k, C, PH, PW]
            let at = g.unsqueeze(&idx, 1);
            out = g.op("ScatterND", &[&out, &at, &pooled], &[], out.dims().to_vec());
        }
        Ok(out)
    }

    /// [`LevelMapper::map`] as nodes: `[R, 4]` boxes -> `[R]` float level offsets (`0..=k_max-k_min`).
    fn level_onnx(&self, g: &mut Graph, rois: &Value, (k_min, k_max): (i64, i64)) -> Result<Value, OnnxError> {
        let m = LevelMapper {
            canonical_scale: self.canonical_scale,
            canonical_level: self.canonical_level,
            ..LevelMapper::new(k_min, k_max)
        };
        let col = |g: &mut Graph, i: i64| {
            let v = g.slice(rois, 1, i, i + 1);
            g.reshape(&v, &[-1])
        };
        let (x1, y1, x2, y2) = (col(g, 0), col(g, 1), col(g, 2), col(g, 3));
        let w = g.binary("Sub", &x2, &x1);
        let h = g.binary("Sub", &y2, &y1);
        let area = g.binary("Mul", &w, &h);
        let s = g.unary("Sqrt", &area);
        let s = g.scalar("Div", &s, m.canonical_scale as f32)?;
        let lg = g.unary("Log", &s);
        let lg = g.scalar("Div", &lg, std::f32::consts::LN_2)?; // log2
        let lg = g.scalar("Add", &lg, m.canonical_level as f32)?;
        let lg = g.scalar("Add", &lg, m.eps as f32)?;
        let lv = g.unary("Floor", &lg);
        let lv = g.clip(&lv, k_min as f32, k_max as f32)?;
        g.scalar("Sub", &lv, k_min as f32)
    }
}
