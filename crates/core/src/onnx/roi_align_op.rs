//! ONNX `RoiAlign` (opsets 10 and 16, `avg` mode) for tract, which has no such operator, so that
//! `predict --onnx` serves exported Faster R-CNNs. Registered on the parser by [`register`]; it
//! evaluates the reference kernel (He et al. 2017, as torchvision's `roi_align` and ONNX Runtime
//! compute it): every output bin averages a grid of bilinear samples at the centres of a regular
//! `gh x gw` grid, `gh = sampling_ratio` (or `ceil(roi_height / output_height)` when it is 0); a
//! sample outside `[-1, size]` counts 0, one inside is clamped onto the map. `half_pixel` shifts box
//! corners by -0.5; `output_half_pixel` (opset 10's only mode) instead widens boxes to at least one
//! map pixel.

use rayon::prelude::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ndarray::{ArrayD, ArrayViewD, Axis};

/// Adds `RoiAlign` to `onnx`'s operators.
pub(super) fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert("RoiAlign", parse);
}

fn parse(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mode: Option<&str> = node.get_attr_opt("mode")?;
    if mode.is_some_and(|m| m != "avg") {
        bail!("RoiAlign: only mode \"avg\" is supported, got {mode:?}");
    }
    let ctm: Option<&str> = node.get_attr_opt("coordinate_transformation_mode")?;
    let half_pixel = match ctm {
        None => ctx.onnx_operator_set_version >= 16, // the opset-16 default; opset 10 has only the other
        Some("half_pixel") => true,
        Some("output_half_pixel") => false,
        Some(other) => bail!("RoiAlign: unknown coordinate_transformation_mode {other:?}"),
    };
    let sampling_ratio: i64 = node.get_attr_opt("sampling_ratio")?.unwrap_or(0);
    if !(0..=1024).contains(&sampling_ratio) {
        bail!("RoiAlign: sampling_ratio {sampling_ratio} outside 0..=1024");
    }
    let op = RoiAlign {
        output: (
            node.get_attr_opt::<i64>("output_height")?.unwrap_or(1).max(1) as usize,
            node.get_attr_opt::<i64>("output_width")?.unwrap_or(1).max(1) as usize,
        ),
        sampling_ratio: sampling_ratio as usize,
        scale_bits: node.get_attr_opt::<f32>("spatial_scale")?.unwrap_or(1.0).to_bits(),
        half_pixel,
    };
    Ok((expand(op), vec![]))
}

/// The operator: `X [N, C, H, W]`, `rois [R, 4]` (x1, y1, x2, y2), `batch_indices [R]` ->
/// `[R, C, output_height, output_width]`, float32.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RoiAlign {
    /// `(output_height, output_width)`.
    output: (usize, usize),
    /// Samples per bin side (0: adaptive).
    sampling_ratio: usize,
    /// `spatial_scale` as bits (the op must be `Eq`).
    scale_bits: u32,
    /// `half_pixel` rather than `output_half_pixel`.
    half_pixel: bool,
}

impl Expansion for RoiAlign {
    fn name(&self) -> StaticName {
        "RoiAlign".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&inputs[1].rank, 2)?;
        s.equals(&inputs[2].rank, 1)?;
        s.equals(&outputs[0].rank, 4)?;
        s.equals(&outputs[0].shape[0], &inputs[1].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[0].shape[1])?;
        s.equals(&outputs[0].shape[2], self.output.0.to_dim())?;
        s.equals(&outputs[0].shape[3], self.output.1.to_dim())?;
        Ok(())
    }

    fn wire(&self, name: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(name, self.clone(), inputs)
    }
}

impl Op for RoiAlign {
    fn name(&self) -> StaticName {
        "RoiAlign".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RoiAlign {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, rois, batch) = args_3!(inputs);
        let x = x.cast_to::<f32>()?;
        let rois = rois.cast_to::<f32>()?;
        let batch = batch.cast_to::<i64>()?;
        let out = self.compute(
            x.to_plain_array_view::<f32>()?,
            rois.to_plain_array_view::<f32>()?,
            batch.to_plain_array_view::<i64>()?,
        )?;
        Ok(tvec![out.into_tvalue()])
    }
}

impl TypedOp for RoiAlign {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (r, c) = (inputs[1].shape[0].clone(), inputs[0].shape[1].clone());
        Ok(tvec![f32::fact([r, c, self.output.0.to_dim(), self.output.1.to_dim()])])
    }

    as_op!();
}

/// One box on one map: where its bins and samples lie.
struct Geometry {
    start: (f32, f32),
    bin: (f32, f32),
    grid: (usize, usize),
}

impl RoiAlign {
    fn geometry(&self, roi: &[f32]) -> Geometry {
        let scale = f32::from_bits(self.scale_bits);
        let off = if self.half_pixel { 0.5 } else { 0.0 };
        let (x1, y1) = (roi[0] * scale - off, roi[1] * scale - off);
        let (x2, y2) = (roi[2] * scale - off, roi[3] * scale - off);
        let (mut w, mut h) = (x2 - x1, y2 - y1);
        if !self.half_pixel {
            (w, h) = (w.max(1.0), h.max(1.0));
        }
        let (ph, pw) = self.output;
        let bin = (h / ph as f32, w / pw as f32);
        let grid = if self.sampling_ratio > 0 {
            (self.sampling_ratio, self.sampling_ratio)
        } else {
            ((h / ph as f32).ceil().max(0.0) as usize, (w / pw as f32).ceil().max(0.0) as usize)
        };
        Geometry { start: (y1, x1), bin, grid }
    }

    fn compute(&self, x: ArrayViewD<f32>, rois: ArrayViewD<f32>, batch: ArrayViewD<i64>) -> TractResult<ArrayD<f32>> {
        let (n, c, h, w) = match *x.shape() {
            [n, c, h, w] => (n, c, h, w),
            ref s => bail!("RoiAlign: X must be [N, C, H, W], got {s:?}"),
        };
        let r = rois.shape().first().copied().unwrap_or(0);
        if rois.shape() != [r, 4] || batch.shape() != [r] {
            bail!("RoiAlign: rois {:?} and batch_indices {:?} do not match", rois.shape(), batch.shape());
        }
        let (ph, pw) = self.output;
        let x = x.as_standard_layout();
        let data = x.as_slice().ok_or_else(|| format_err!("RoiAlign: X is not contiguous"))?;
        let mut out = ArrayD::<f32>::zeros(vec![r, c, ph, pw]);
        let per_roi = c * ph * pw;
        let outs = out.as_slice_mut().ok_or_else(|| format_err!("RoiAlign: output is not contiguous"))?;
        let geometry: Vec<(usize, Geometry)> = (0..r)
            .map(|i| {
                let b = batch[[i]];
                if b < 0 || b as usize >= n {
                    bail!("RoiAlign: batch index {b} outside 0..{n}");
                }
                let roi: Vec<f32> = rois.index_axis(Axis(0), i).iter().copied().collect();
                Ok((b as usize, self.geometry(&roi)))
            })
            .collect::<TractResult<_>>()?;
        outs.par_chunks_mut(per_roi.max(1)).zip(&geometry).for_each(|(o, (b, g))| {
            for ch in 0..c {
                let map = &data[(b * c + ch) * h * w..][..h * w];
                for py in 0..ph {
                    for px in 0..pw {
                        o[(ch * ph + py) * pw + px] = bin_average(map, (h, w), g, (py, px));
                    }
                }
            }
        });
        Ok(out)
    }
}

/// The average of bin `(py, px)`'s samples on one `h x w` map.
fn bin_average(map: &[f32], (h, w): (usize, usize), g: &Geometry, (py, px): (usize, usize)) -> f32 {
    let (gh, gw) = g.grid;
    let mut sum = 0.0f32;
    for iy in 0..gh {
        let y = g.start.0 + py as f32 * g.bin.0 + (iy as f32 + 0.5) * g.bin.0 / gh as f32;
        for ix in 0..gw {
            let x = g.start.1 + px as f32 * g.bin.1 + (ix as f32 + 0.5) * g.bin.1 / gw as f32;
            sum += bilinear(map, (h, w), y, x);
        }
    }
    sum / (gh * gw).max(1) as f32
}

/// The reference kernel's bilinear tap: 0 outside `[-1, size]`, clamped onto the map inside.
fn bilinear(map: &[f32], (h, w): (usize, usize), y: f32, x: f32) -> f32 {
    if h == 0 || w == 0 || y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return 0.0;
    }
    let (y, x) = (y.max(0.0), x.max(0.0));
    let corner = |v: f32, size: usize| -> (usize, usize, f32) {
        let low = v as usize;
        if low >= size - 1 { (size - 1, size - 1, 0.0) } else { (low, low + 1, v - low as f32) }
    };
    let (yl, yh, ly) = corner(y, h);
    let (xl, xh, lx) = corner(x, w);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    hy * hx * map[yl * w + xl] + hy * lx * map[yl * w + xh] + ly * hx * map[yh * w + xl] + ly * lx * map[yh * w + xh]
}
