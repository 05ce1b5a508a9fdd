//! AdamW and SGD with momentum, written on tch tensors so that their state can be saved and restored
//! exactly for `--resume` (libtorch's optimisers behind `tch::nn::Optimizer` keep theirs out of reach).
//! The update rules follow `torch.optim.AdamW` and `torch.optim.SGD` term by term.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn::VarStore};

use crate::{Error, Result};

/// Which optimiser to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw,
    /// SGD with (optionally Nesterov) momentum and L2 weight decay.
    Sgd,
}

/// Hyper-parameters shared by both optimisers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerParams {
    /// Which update rule.
    pub kind: OptimizerKind,
    /// Weight decay.
    pub weight_decay: f64,
    /// SGD momentum, or AdamW's beta1.
    pub momentum: f64,
    /// AdamW's beta2.
    pub beta2: f64,
    /// AdamW's epsilon.
    pub eps: f64,
    /// Nesterov momentum for SGD.
    pub nesterov: bool,
}

/// One trainable tensor, its name (the state-dict key) and its parameter group.
#[derive(Debug)]
pub struct Param {
    /// State-dict name.
    pub name: String,
    /// The variable.
    pub tensor: Tensor,
    /// Parameter group (0 = backbone, 1 = head by convention).
    pub group: usize,
}

/// The trainable variables of `vs` (requires_grad set) with their names and groups.
pub fn trainable_params(vs: &VarStore) -> Vec<Param> {
    let Ok(vars) = vs.variables_.lock() else {
        return Vec::new();
    };
    let groups: HashMap<usize, usize> =
        vars.trainable_variables.iter().map(|v| (v.tensor.data_ptr() as usize, v.group)).collect();
    let mut params: Vec<Param> = vars
        .named_variables
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .filter_map(|(name, t)| {
            let group = *groups.get(&(t.data_ptr() as usize))?;
            Some(Param { name: name.clone(), tensor: t.shallow_clone(), group })
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

/// An optimiser whose state is plain named tensors.
#[derive(Debug)]
pub struct Optimizer {
    params: OptimizerParams,
    /// Per-parameter step counts (AdamW's bias correction counts the steps each tensor took part in).
    steps: HashMap<String, i64>,
    /// Per-parameter buffers: `exp_avg`/`exp_avg_sq` (AdamW) or `momentum_buffer` (SGD).
    buffers: HashMap<String, Vec<Tensor>>,
}

impl Optimizer {
    /// A fresh optimiser.
    pub fn new(params: OptimizerParams) -> Self {
        Self { params, steps: HashMap::new(), buffers: HashMap::new() }
    }

    /// Sets every gradient of `params` to zero (undefined gradients stay undefined).
    pub fn zero_grad(params: &[Param]) {
        for p in params {
            let mut grad = p.tensor.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(params: &[Param], max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(tch::Kind::Float).norm()).collect();
            Tensor::stack(&norms, 0).norm().double_value(&[])
        });
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for g in &grads {
                    let mut g = g.shallow_clone();
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        total
    }

    /// One update of every parameter with a defined gradient, `params[i]` at learning rate `lrs[i]`.
    pub fn step(&mut self, params: &[Param], lrs: &[f64]) {
        tch::no_grad(|| {
            for (p, &lr) in params.iter().zip(lrs) {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                match self.params.kind {
                    OptimizerKind::Adamw => self.adamw(p, &grad, lr),
                    OptimizerKind::Sgd => self.sgd(p, &grad, lr),
                }
            }
        });
    }

    fn adamw(&mut self, p: &Param, grad: &Tensor, lr: f64) {
        let o = self.params;
        let step = self.steps.entry(p.name.clone()).or_insert(0);
        *step += 1;
        let t = *step as f64;
        let bufs =
            self.buffers.entry(p.name.clone()).or_insert_with(|| vec![p.tensor.zeros_like(), p.tensor.zeros_like()]);
        let mut param = p.tensor.shallow_clone();
        let _ = param.g_mul_scalar_(1.0 - lr * o.weight_decay);
        let (exp_avg, exp_avg_sq) = (&mut bufs[0].shallow_clone(), &mut bufs[1].shallow_clone());
        let _ = exp_avg.lerp_(grad, 1.0 - o.momentum);
        let _ = exp_avg_sq.g_mul_scalar_(o.beta2).addcmul_(grad, &grad.g_mul_scalar(1.0 - o.beta2));
        let bias1 = 1.0 - o.momentum.powf(t);
        let bias2 = 1.0 - o.beta2.powf(t);
        let denom = exp_avg_sq.sqrt().g_div_scalar(bias2.sqrt()).g_add_scalar(o.eps);
        let _ = param.addcdiv_(exp_avg, &denom.g_mul_scalar(-bias1 / lr));
    }

    fn sgd(&mut self, p: &Param, grad: &Tensor, lr: f64) {
        let o = self.params;
        let mut d_p =
            if o.weight_decay != 0.0 { grad + p.tensor.g_mul_scalar(o.weight_decay) } else { grad.shallow_clone() };
        if o.momentum != 0.0 {
            let entry = self.buffers.entry(p.name.clone());
            let buf = match entry {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let mut b = e.get()[0].shallow_clone();
                    let _ = b.g_mul_scalar_(o.momentum).g_add_(&d_p);
                    b
                }
                std::collections::hash_map::Entry::Vacant(e) => e.insert(vec![d_p.detach().copy()])[0].shallow_clone(),
            };
            d_p = if o.nesterov { d_p + buf.g_mul_scalar(o.momentum) } else { buf };
        }
        let mut param = p.tensor.shallow_clone();
        let _ = param.g_add_(&d_p.g_mul_scalar(-lr));
    }

    /// The state as named tensors (`<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.momentum_buffer`,
    /// `<param>.step`), for saving next to the weights.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names: &[&str] = match self.params.kind {
            OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd => &["momentum_buffer"],
        };
        let mut out = Vec::new();
        let mut keys: Vec<&String> = self.buffers.keys().collect();
        keys.sort();
        for key in keys {
            for (buf, suffix) in self.buffers[key].iter().zip(names) {
                out.push((format!("{key}.{suffix}"), buf.shallow_clone()));
            }
            if let Some(step) = self.steps.get(key) {
                out.push((format!("{key}.step"), Tensor::from(*step)));
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`].
    pub fn load_state_tensors(&mut self, tensors: Vec<(String, Tensor)>, device: tch::Device) -> Result<()> {
        let names: &[&str] = match self.params.kind {
            OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd => &["momentum_buffer"],
        };
        let mut parts: HashMap<String, Vec<Option<Tensor>>> = HashMap::new();
        for (name, tensor) in tensors {
            let (param, suffix) =
                name.rsplit_once('.').ok_or_else(|| Error::Invalid(format!("optimizer state: bad entry `{name}`")))?;
            if suffix == "step" {
                self.steps.insert(param.to_string(), tensor.int64_value(&[]));
                continue;
            }
            let slot = names.iter().position(|n| *n == suffix).ok_or_else(|| {
                Error::Invalid(format!("optimizer state: `{name}` does not belong to this optimizer"))
            })?;
            let entry = parts.entry(param.to_string()).or_insert_with(|| (0..names.len()).map(|_| None).collect());
            entry[slot] = Some(tensor.to_device(device));
        }
        for (param, slots) in parts {
            let bufs: Option<Vec<Tensor>> = slots.into_iter().collect();
            let bufs =
                bufs.ok_or_else(|| Error::Invalid(format!("optimizer state: incomplete entry for `{param}`")))?;
            self.buffers.insert(param, bufs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn param(value: f64) -> Param {
        let t = Tensor::from_slice(&[value]).to_kind(Kind::Double).set_requires_grad(true);
        Param { name: "w".into(), tensor: t, group: 1 }
    }

    /// loss = g * w gives gradient g.
    fn backward(p: &Param, g: f64) {
        Optimizer::zero_grad(std::slice::from_ref(p));
        (&p.tensor * g).sum(Kind::Double).backward();
    }

    fn value(p: &Param) -> f64 {
        p.tensor.double_value(&[0])
    }

    #[test]
    fn adamw_matches_hand_computed_steps() {
        let (lr, wd, b1, b2, eps) = (0.1, 0.01, 0.9, 0.999, 1e-8);
        let params = OptimizerParams {
            kind: OptimizerKind::Adamw,
            weight_decay: wd,
            momentum: b1,
            beta2: b2,
            eps,
            nesterov: false,
        };
        let mut opt = Optimizer::new(params);
        let p = param(1.0);
        let (mut w, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for (t, g) in [(1, 0.5), (2, -2.0), (3, 0.25)] {
            backward(&p, g);
            opt.step(std::slice::from_ref(&p), &[lr]);
            w *= 1.0 - lr * wd;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let m_hat = m / (1.0 - b1.powi(t));
            let v_hat_sqrt = v.sqrt() / (1.0 - b2.powi(t)).sqrt();
            w -= lr * m_hat / (v_hat_sqrt + eps);
            assert!((value(&p) - w).abs() < 1e-12, "step {t}: {} vs {w}", value(&p));
        }
        let _ = Device::Cpu;
    }

    #[test]
    fn sgd_momentum_matches_hand_computed_steps() {
        let (lr, wd, mu) = (0.1, 0.01, 0.9);
        let params = OptimizerParams {
            kind: OptimizerKind::Sgd,
            weight_decay: wd,
            momentum: mu,
            beta2: 0.0,
            eps: 0.0,
            nesterov: false,
        };
        let mut opt = Optimizer::new(params);
        let p = param(2.0);
        let (mut w, mut buf) = (2.0f64, None::<f64>);
        for g in [1.0, -0.5, 3.0] {
            backward(&p, g);
            opt.step(std::slice::from_ref(&p), &[lr]);
            let d = g + wd * w;
            let b = match buf {
                None => d,
                Some(b) => mu * b + d,
            };
            buf = Some(b);
            w -= lr * b;
            assert!((value(&p) - w).abs() < 1e-12, "{} vs {w}", value(&p));
        }
    }

    #[test]
    fn state_round_trips() -> Result<()> {
        let params = OptimizerParams {
            kind: OptimizerKind::Adamw,
            weight_decay: 0.0,
            momentum: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            nesterov: false,
        };
        let mut a = Optimizer::new(params);
        let p = param(1.0);
        backward(&p, 0.3);
        a.step(std::slice::from_ref(&p), &[0.1]);
        let mut b = Optimizer::new(params);
        b.load_state_tensors(a.state_tensors(), Device::Cpu)?;
        assert_eq!(b.steps, a.steps);
        assert!(b.buffers["w"][1].equal(&a.buffers["w"][1]));
        Ok(())
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let p = param(0.0);
        backward(&p, 30.0);
        let before = Optimizer::clip_grad_norm(std::slice::from_ref(&p), 3.0);
        assert!((before - 30.0).abs() < 1e-6);
        assert!((p.tensor.grad().double_value(&[0]) - 3.0).abs() < 1e-5);
    }
}
