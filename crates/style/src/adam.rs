//! Adam (Kingma & Ba 2015) on one tensor, for optimising an image without a `VarStore`.

use tch::Tensor;

/// Adam state for one parameter tensor.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    m: Tensor,
    v: Tensor,
    t: i32,
}

impl Adam {
    /// Adam with `lr` and the usual betas (0.9, 0.999), eps 1e-8, for tensors shaped like `like`.
    pub fn new(like: &Tensor, lr: f64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, m: like.zeros_like(), v: like.zeros_like(), t: 0 }
    }

    /// Returns `x` moved one step against `grad` (no autograd).
    pub fn step(&mut self, x: &Tensor, grad: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.t += 1;
            self.m = &self.m * self.beta1 + grad * (1.0 - self.beta1);
            self.v = &self.v * self.beta2 + grad.square() * (1.0 - self.beta2);
            let mhat = &self.m / (1.0 - self.beta1.powi(self.t));
            let vhat = &self.v / (1.0 - self.beta2.powi(self.t));
            x - mhat / (vhat.sqrt() + self.eps) * self.lr
        })
    }
}
