//! Typed ONNX operators on [`Graph`]: each emits one node (or a few) with the attributes and input
//! conventions of opsets 13..21, and computes the output's static shape the way the operator's
//! specification does, so that later emitters and the graph's declared outputs know it.

use tch::Tensor;
use tract_onnx::pb::tensor_proto::DataType;

use super::OnnxError;
use super::graph::{Attr, FloatKind, Graph, Value};
use crate::backbones::layers::Padding;

type Result<T> = std::result::Result<T, OnnxError>;

/// The geometry of a 2-d convolution (what `Conv` needs besides its weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Stride on both axes.
    pub stride: i64,
    /// Dilation on both axes.
    pub dilation: i64,
    /// Groups.
    pub groups: i64,
    /// Padding rule: symmetric, or TensorFlow 'SAME' (resolved here from the input's size).
    pub padding: Padding,
}

/// How [`Graph::resize`] interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// PyTorch's `upsample_bilinear2d(align_corners=False)` with an output size.
    BilinearHalfPixel,
    /// PyTorch's `upsample_nearest2d` with an output size: `src = floor(dst * in / out)`.
    NearestFloor,
}

/// The target size of [`Graph::resize`].
#[derive(Debug, Clone)]
pub enum SizeOf<'a> {
    /// A fixed `(H, W)`.
    Fixed(i64, i64),
    /// The spatial size of another value.
    Like(&'a Value),
    /// `(H, W)` given by an int64 `[2]` value (computed in the graph), with static sizes if known.
    Computed(&'a Value, Option<(i64, i64)>),
}

fn broadcast(a: &[Option<i64>], b: &[Option<i64>]) -> Vec<Option<i64>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n { a[i + a.len() - n] } else { Some(1) };
            let db = if i + b.len() >= n { b[i + b.len() - n] } else { Some(1) };
            match (da, db) {
                (Some(1), d) | (d, Some(1)) => d,
                (Some(x), _) => Some(x),
                (None, d) => d,
            }
        })
        .collect()
}

impl Graph {
    /// `Conv` with weight `w` `[out, in/g, k, k]` and optional bias `[out]`.
    pub fn conv(&mut self, x: &Value, w: &Tensor, b: Option<&Tensor>, spec: ConvSpec) -> Result<Value> {
        let wv = self.param(w, "weight")?;
        let bv = match b {
            Some(b) => Some(self.param(b, "bias")?),
            None => None,
        };
        self.conv_values(x, &wv, bv.as_ref(), spec)
    }

    /// [`Graph::conv`] with the new tensors `(w, b)` stored under the names `(wname, bname)`.
    pub fn conv_named(
        &mut self,
        x: &Value,
        (w, b): (&Tensor, &Tensor),
        spec: ConvSpec,
        (wname, bname): (&str, &str),
    ) -> Result<Value> {
        let (wn, bn) = (self.fresh(wname), self.fresh(bname));
        let kind = self.float_kind();
        let wv = self.tensor_init(&wn, w, kind)?;
        let bv = self.tensor_init(&bn, b, kind)?;
        self.conv_values(x, &wv, Some(&bv), spec)
    }

    fn conv_values(&mut self, x: &Value, wv: &Value, bv: Option<&Value>, spec: ConvSpec) -> Result<Value> {
        let (Some(cout), Some(k)) = (wv.dim(0), wv.dim(2)) else {
            return Err(OnnxError::Unsupported(format!("convolution weight {} has no static shape", wv.name())));
        };
        let k_eff = (k - 1) * spec.dilation + 1;
        let s = spec.stride;
        let pads = match spec.padding {
            Padding::Symmetric(p) => [p, p, p, p],
            Padding::TfSame => {
                let total = |d: Option<i64>| -> Result<i64> {
                    let i = d.ok_or_else(|| {
                        OnnxError::Unsupported("TensorFlow 'SAME' padding needs a fixed input size (--img-size)".into())
                    })?;
                    Ok((((i + s - 1) / s - 1) * s + k_eff - i).max(0))
                };
                let (ph, pw) = (total(x.dim(2))?, total(x.dim(3))?);
                // [top, left, bottom, right]: the odd pixel goes to the bottom/right, as in TensorFlow.
                [ph / 2, pw / 2, ph - ph / 2, pw - pw / 2]
            }
        };
        let out = |d: Option<i64>, lo: i64, hi: i64| d.map(|i| (i + lo + hi - k_eff) / s + 1);
        let dims = vec![x.dims()[0], Some(cout), out(x.dim(2), pads[0], pads[2]), out(x.dim(3), pads[1], pads[3])];
        let mut ins = vec![x, wv];
        ins.extend(bv);
        let attrs = [
            Attr::Ints("kernel_shape", vec![k, k]),
            Attr::Ints("strides", vec![s, s]),
            Attr::Ints("dilations", vec![spec.dilation, spec.dilation]),
            Attr::Int("group", spec.groups),
            Attr::Ints("pads", pads.to_vec()),
        ];
        Ok(self.op("Conv", &ins, &attrs, dims))
    }

    /// `Gemm(x, W^T) + b`: `[N, in]` -> `[N, out]` for a PyTorch `Linear` weight `[out, in]`.
    pub fn linear(&mut self, x: &Value, w: &Tensor, b: &Tensor) -> Result<Value> {
        let out = w.size()[0];
        let dims = vec![x.dims()[0], Some(out)];
        if self.float_kind() == FloatKind::F16 {
            // tract types a float16 Gemm's output as float32; MatMul + Add is the same product.
            let name = self.param_name(w).map_or_else(|| "weight_t".to_string(), |n| format!("{n}_t"));
            let name = self.fresh(&name);
            let wt = self.tensor_init(&name, &w.f_transpose(0, 1)?, FloatKind::F16)?;
            let bv = self.param(b, "bias")?;
            let y = self.op("MatMul", &[x, &wt], &[], dims.clone());
            return Ok(self.op("Add", &[&y, &bv], &[], dims));
        }
        let wv = self.param(w, "weight")?;
        let bv = self.param(b, "bias")?;
        Ok(self.op("Gemm", &[x, &wv, &bv], &[Attr::Int("transB", 1)], dims))
    }

    /// An elementwise unary operator (`Relu`, `Sigmoid`, `Exp`, ...).
    pub fn unary(&mut self, op: &str, x: &Value) -> Value {
        self.op(op, &[x], &[], x.dims().to_vec())
    }

    /// An elementwise binary operator with broadcasting (`Add`, `Sub`, `Mul`, `Div`).
    pub fn binary(&mut self, op: &str, a: &Value, b: &Value) -> Value {
        let dims = broadcast(a.dims(), b.dims());
        self.op(op, &[a, b], &[], dims)
    }

    /// `x * sigmoid(x)`.
    pub fn silu(&mut self, x: &Value) -> Value {
        let s = self.unary("Sigmoid", x);
        self.binary("Mul", x, &s)
    }

    /// `min(max(x, lo), hi)`.
    pub fn clip(&mut self, x: &Value, lo: f32, hi: f32) -> Result<Value> {
        let (l, h) = (self.const_float(&[lo], &[])?, self.const_float(&[hi], &[])?);
        Ok(self.op("Clip", &[x, &l, &h], &[], x.dims().to_vec()))
    }

    /// `x (op) c` with a float scalar `c` in the network's float kind.
    pub fn scalar(&mut self, op: &str, x: &Value, c: f32) -> Result<Value> {
        let cv = self.const_float(&[c], &[])?;
        Ok(self.binary(op, x, &cv))
    }

    /// `[N, C, H, W]` -> `[N, C, 1, 1]`.
    pub fn global_avg_pool(&mut self, x: &Value) -> Value {
        self.op("GlobalAveragePool", &[x], &[], vec![x.dims()[0], x.dims()[1], Some(1), Some(1)])
    }

    /// `MaxPool` (or `AveragePool` with `avg`) with a square `(kernel, stride, padding)` window and
    /// symmetric padding, floor mode; an average excludes the padding.
    pub fn pool(&mut self, x: &Value, avg: bool, (k, s, p): (i64, i64, i64)) -> Value {
        let out = |d: Option<i64>| d.map(|i| (i + 2 * p - k) / s + 1);
        let dims = vec![x.dims()[0], x.dims()[1], out(x.dim(2)), out(x.dim(3))];
        let attrs =
            [Attr::Ints("kernel_shape", vec![k, k]), Attr::Ints("strides", vec![s, s]), Attr::Ints("pads", vec![p; 4])];
        self.op(if avg { "AveragePool" } else { "MaxPool" }, &[x], &attrs, dims)
    }

    /// `Flatten` at `axis`: `[d0..d_{a-1}, rest]` -> 2-d.
    pub fn flatten(&mut self, x: &Value, axis: usize) -> Value {
        let prod = |ds: &[Option<i64>]| ds.iter().try_fold(1i64, |a, d| d.map(|d| a * d));
        let dims = vec![prod(&x.dims()[..axis]), prod(&x.dims()[axis..])];
        self.op("Flatten", &[x], &[Attr::Int("axis", axis as i64)], dims)
    }

    /// `Reshape` to `shape` (ONNX rules: 0 copies the input's dimension, -1 is inferred).
    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let mut dims: Vec<Option<i64>> =
            shape.iter().enumerate().map(|(i, &s)| if s == 0 { x.dims()[i] } else { (s > 0).then_some(s) }).collect();
        if let Some(pos) = shape.iter().position(|&s| s == -1) {
            // The product of the input's dimensions that no 0 copies, over the given positive sizes.
            let copied = |i: usize| shape.get(i) == Some(&0);
            let total: Option<i64> =
                x.dims().iter().enumerate().filter(|(i, _)| !copied(*i)).try_fold(1i64, |a, (_, d)| d.map(|d| a * d));
            let rest: i64 = shape.iter().filter(|&&s| s > 0).product();
            dims[pos] = total.filter(|_| rest > 0).map(|t| t / rest);
        }
        let sv = self.ints(shape);
        self.op("Reshape", &[x, &sv], &[], dims)
    }

    /// `Transpose` with permutation `perm`.
    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        let dims = perm.iter().map(|&p| x.dims()[p as usize]).collect();
        self.op("Transpose", &[x], &[Attr::Ints("perm", perm.to_vec())], dims)
    }

    /// `Concat` along `axis` (non-negative).
    pub fn concat(&mut self, xs: &[&Value], axis: usize) -> Value {
        let mut dims = xs[0].dims().to_vec();
        dims[axis] = xs.iter().try_fold(0i64, |a, v| v.dims()[axis].map(|d| a + d));
        for v in xs {
            for (i, d) in dims.iter_mut().enumerate() {
                if i != axis && d.is_none() {
                    *d = v.dims()[i];
                }
            }
        }
        self.op("Concat", xs, &[Attr::Int("axis", axis as i64)], dims)
    }

    /// `x[..., start:end, ...]` on `axis` (non-negative), step 1.
    pub fn slice(&mut self, x: &Value, axis: usize, start: i64, end: i64) -> Value {
        let mut dims = x.dims().to_vec();
        dims[axis] = dims[axis].map(|d| (end.min(d) - start.min(d)).max(0));
        let (s, e, a) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[axis as i64]));
        self.op("Slice", &[x, &s, &e, &a], &[], dims)
    }

    /// `Softmax` over `axis`.
    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.op("Softmax", &[x], &[Attr::Int("axis", axis)], x.dims().to_vec())
    }

    /// A reduction (`ReduceMax`, `ReduceSum`, `ReduceMean`) over `axes` (non-negative): the axes
    /// are an attribute before opset 18 and an input from 18 on.
    pub fn reduce(&mut self, op: &str, x: &Value, axes: &[i64], keepdims: bool) -> Value {
        let dims: Vec<Option<i64>> = x
            .dims()
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&(i as i64)), keepdims) {
                (true, true) => Some(Some(1)),
                (true, false) => None,
                (false, _) => Some(*d),
            })
            .collect();
        let kd = Attr::Int("keepdims", i64::from(keepdims));
        // ReduceSum took its axes as an input already in opset 13.
        if self.opset() >= 18 || op == "ReduceSum" {
            let av = self.ints(axes);
            self.op(op, &[x, &av], &[kd], dims)
        } else {
            self.op(op, &[x], &[kd, Attr::Ints("axes", axes.to_vec())], dims)
        }
    }

    /// `Cast` to an ONNX data type.
    pub fn cast(&mut self, x: &Value, to: DataType) -> Value {
        self.op("Cast", &[x], &[Attr::Int("to", to as i64)], x.dims().to_vec())
    }

    /// `Cast` to the network's float kind (a no-op value when that is float32 and `x` is float32).
    pub fn cast_float(&mut self, x: &Value, from: FloatKind) -> Value {
        match (from, self.float_kind()) {
            (a, b) if a == b => x.clone(),
            (_, FloatKind::F16) => self.cast(x, DataType::Float16),
            (_, FloatKind::F32) => self.cast(x, DataType::Float),
        }
    }

    /// `Shape` of `x`, `[rank]` int64.
    pub fn shape_of(&mut self, x: &Value) -> Value {
        self.op("Shape", &[x], &[], vec![Some(x.rank() as i64)])
    }

    /// Zero, reflection or edge padding `[top, left, bottom, right]` of an NCHW value.
    pub fn pad(&mut self, x: &Value, tlbr: [i64; 4], mode: &str) -> Value {
        let [t, l, b, r] = tlbr;
        let pv = self.ints(&[0, 0, t, l, 0, 0, b, r]);
        let d = x.dims();
        let dims = vec![d[0], d[1], d[2].map(|h| h + t + b), d[3].map(|w| w + l + r)];
        self.op("Pad", &[x, &pv], &[Attr::Str("mode", mode.into())], dims)
    }

    /// Resizes the spatial axes of an NCHW value to `size` with PyTorch's interpolation rule.
    pub fn resize(&mut self, x: &Value, size: SizeOf<'_>, interp: Interp) -> Value {
        let (hw, fixed): (Value, Option<(i64, i64)>) = match size {
            SizeOf::Fixed(h, w) => (self.ints(&[h, w]), Some((h, w))),
            SizeOf::Like(v) => {
                let fixed = v.dim(2).zip(v.dim(3));
                match fixed {
                    Some((h, w)) => (self.ints(&[h, w]), fixed),
                    None => {
                        let s = self.shape_of(v);
                        (self.slice(&s, 0, 2, 4), None)
                    }
                }
            }
            SizeOf::Computed(v, fixed) => (v.clone(), fixed),
        };
        let nc = match (x.dim(0), x.dim(1)) {
            (Some(n), Some(c)) => self.ints(&[n, c]),
            _ => {
                let s = self.shape_of(x);
                self.slice(&s, 0, 0, 2)
            }
        };
        let sizes = self.concat(&[&nc, &hw], 0);
        let attrs = match interp {
            Interp::BilinearHalfPixel => vec![
                Attr::Str("mode", "linear".into()),
                Attr::Str("coordinate_transformation_mode", "pytorch_half_pixel".into()),
            ],
            Interp::NearestFloor => vec![
                Attr::Str("mode", "nearest".into()),
                Attr::Str("coordinate_transformation_mode", "asymmetric".into()),
                Attr::Str("nearest_mode", "floor".into()),
            ],
        };
        let dims = vec![x.dims()[0], x.dims()[1], fixed.map(|f| f.0), fixed.map(|f| f.1)];
        self.op_opt("Resize", &[Some(x), None, None, Some(&sizes)], &attrs, dims)
    }

    /// `Unsqueeze` at `axis` (non-negative; the axes are an input from opset 13 on).
    pub fn unsqueeze(&mut self, x: &Value, axis: usize) -> Value {
        let mut dims = x.dims().to_vec();
        dims.insert(axis, Some(1));
        let av = self.ints(&[axis as i64]);
        self.op("Unsqueeze", &[x, &av], &[], dims)
    }

    /// `TopK` along `axis` (largest first, sorted): `(values, int64 indices)`.
    pub fn topk(&mut self, x: &Value, k: i64, axis: usize) -> (Value, Value) {
        let mut dims = x.dims().to_vec();
        dims[axis] = Some(k);
        let kv = self.ints(&[k]);
        let (vals, idx) = (self.fresh("topk_values"), self.fresh("topk_indices"));
        self.node_multi("TopK", &[x.name(), kv.name()], &[&vals, &idx], &[Attr::Int("axis", axis as i64)]);
        (Value::new(vals, dims.clone()), Value::new(idx, dims))
    }
}
