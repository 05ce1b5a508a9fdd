//! Limited-memory BFGS (Nocedal & Wright, "Numerical Optimization", algorithms 7.4 and 3.1) on tch
//! tensors: the two-loop recursion over the last `history` curvature pairs, scaled by
//! `γ = sᵀy / yᵀy`, and a backtracking line search with the Armijo condition and quadratic
//! interpolation. tch has no L-BFGS; this one works on any tensor shape (the pixels of an image).

use std::collections::VecDeque;

use tch::{Kind, Tensor};

use crate::{Result, StyleError};

/// Settings of [`minimize`].
#[derive(Debug, Clone)]
pub struct LbfgsOptions {
    /// Iterations (each one line search).
    pub max_iters: usize,
    /// Curvature pairs kept.
    pub history: usize,
    /// First trial step of each line search (scaled by `1 / |g|₁` on the first iteration, as PyTorch does).
    pub lr: f64,
    /// Stop when `max |g| <= tol_grad`.
    pub tol_grad: f64,
    /// Stop when the loss changes by less than this (absolute) in one iteration.
    pub tol_change: f64,
    /// Armijo constant `c₁`.
    pub c1: f64,
    /// Function evaluations allowed per line search.
    pub max_ls: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        Self { max_iters: 100, history: 10, lr: 1.0, tol_grad: 1e-9, tol_change: 1e-12, c1: 1e-4, max_ls: 20 }
    }
}

/// Why [`minimize`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `max_iters` reached.
    MaxIters,
    /// The gradient is below `tol_grad`.
    Gradient,
    /// The loss stopped changing.
    Change,
    /// No step length gave a decrease.
    LineSearch,
}

/// What [`minimize`] returns.
#[derive(Debug)]
pub struct LbfgsResult {
    /// The best point found (same shape as `x0`).
    pub x: Tensor,
    /// Loss at `x`.
    pub loss: f64,
    /// Loss after each iteration (`losses[0]` is the loss at `x0`).
    pub losses: Vec<f64>,
    /// Function evaluations used.
    pub evaluations: usize,
    /// Why it stopped.
    pub stop: Stop,
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.flatten(0, -1).dot(&b.flatten(0, -1)).double_value(&[])
}

/// Minimises `f` from `x0`. `f(x)` returns the loss and its gradient (shaped like `x`).
/// `on_iter(iteration, loss)` is called after each iteration. Works under `no_grad` itself; `f` must
/// enable gradients where it needs them.
pub fn minimize(
    x0: &Tensor,
    opts: &LbfgsOptions,
    mut f: impl FnMut(&Tensor) -> Result<(f64, Tensor)>,
    mut on_iter: impl FnMut(usize, f64),
) -> Result<LbfgsResult> {
    let mut x = x0.detach().to_kind(Kind::Float);
    let (mut loss, mut g) = f(&x)?;
    let mut evaluations = 1usize;
    if !loss.is_finite() {
        return Err(StyleError::NonFinite(loss));
    }
    let mut losses = vec![loss];
    // (s, y, 1 / yᵀs), oldest first.
    let mut pairs: VecDeque<(Tensor, Tensor, f64)> = VecDeque::with_capacity(opts.history);
    let mut stop = Stop::MaxIters;
    for iter in 0..opts.max_iters {
        let gmax = g.abs().max().double_value(&[]);
        if gmax <= opts.tol_grad {
            stop = Stop::Gradient;
            break;
        }
        let mut d = tch::no_grad(|| direction(&g, &pairs));
        let mut gtd = dot(&g, &d);
        if gtd >= 0.0 || !gtd.is_finite() {
            // Lost positive definiteness: restart from steepest descent.
            pairs.clear();
            d = -&g;
            gtd = dot(&g, &d);
        }
        let mut t =
            if iter == 0 { opts.lr * (1.0 / g.abs().sum(Kind::Float).double_value(&[])).min(1.0) } else { opts.lr };
        // Backtracking line search (Armijo), quadratic interpolation clamped to [0.1 t, 0.5 t].
        let mut accepted = None;
        for _ in 0..opts.max_ls {
            let x_new = tch::no_grad(|| &x + &d * t);
            let (l_new, g_new) = f(&x_new)?;
            evaluations += 1;
            if l_new.is_finite() && l_new <= loss + opts.c1 * t * gtd {
                accepted = Some((x_new, l_new, g_new, t));
                break;
            }
            let denom = 2.0 * (l_new - loss - gtd * t);
            let t_q = if l_new.is_finite() && denom > 0.0 { -gtd * t * t / denom } else { 0.5 * t };
            t = t_q.clamp(0.1 * t, 0.5 * t);
        }
        let Some((x_new, l_new, g_new, t_used)) = accepted else {
            stop = Stop::LineSearch;
            break;
        };
        let s = &d * t_used;
        let y = &g_new - &g;
        let ys = dot(&y, &s);
        if ys > 1e-10 {
            if pairs.len() == opts.history.max(1) {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / ys));
        }
        let change = (loss - l_new).abs();
        x = x_new;
        g = g_new;
        loss = l_new;
        losses.push(loss);
        on_iter(iter, loss);
        if change < opts.tol_change {
            stop = Stop::Change;
            break;
        }
    }
    Ok(LbfgsResult { x, loss, losses, evaluations, stop })
}

/// The two-loop recursion: `-H g` from the stored pairs (steepest descent when there are none).
fn direction(g: &Tensor, pairs: &VecDeque<(Tensor, Tensor, f64)>) -> Tensor {
    let mut q = -g;
    let mut alphas = Vec::with_capacity(pairs.len());
    for (s, y, rho) in pairs.iter().rev() {
        let a = rho * dot(s, &q);
        q -= y * a;
        alphas.push(a);
    }
    if let Some((s, y, _)) = pairs.back() {
        let yy = dot(y, y);
        if yy > 0.0 {
            q *= dot(s, y) / yy; // initial Hessian γ I
        }
    }
    for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
        let b = rho * dot(y, &q);
        q += s * (a - b);
    }
    q
}
