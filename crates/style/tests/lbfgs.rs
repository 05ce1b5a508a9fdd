//! L-BFGS on quadratics with a known minimum.

use style::lbfgs::{self, LbfgsOptions, Stop};
use tch::{Kind, Tensor};

/// f(x) = ½ xᵀAx - bᵀx with A symmetric positive definite: the minimum is A⁻¹b.
#[test]
fn converges_to_the_minimum_of_an_ill_conditioned_quadratic() -> style::Result<()> {
    let n = 20i64;
    // A = Q diag(1..1000) Qᵀ with a fixed orthogonal Q (condition number 1000).
    tch::manual_seed(3);
    let (q, _) = Tensor::linalg_qr(&Tensor::randn([n, n], (Kind::Double, tch::Device::Cpu)), "reduced");
    let d = Tensor::logspace(0.0, 3.0, n, 10.0, (Kind::Double, tch::Device::Cpu));
    let a = q.matmul(&d.diag(0)).matmul(&q.transpose(0, 1));
    let b = Tensor::randn([n], (Kind::Double, tch::Device::Cpu));
    let x_star = Tensor::linalg_solve(&a, &b, true);
    let f_star = -0.5 * b.dot(&x_star).double_value(&[]);
    let opts = LbfgsOptions { max_iters: 200, tol_grad: 1e-7, ..LbfgsOptions::default() };
    let x0 = Tensor::zeros([n], (Kind::Float, tch::Device::Cpu));
    let mut iters = 0usize;
    let r = lbfgs::minimize(
        &x0,
        &opts,
        |x| {
            let xd = x.to_kind(Kind::Double);
            let ax = a.mv(&xd);
            let f = 0.5 * xd.dot(&ax).double_value(&[]) - b.dot(&xd).double_value(&[]);
            Ok((f, (ax - &b).to_kind(Kind::Float)))
        },
        |_, _| iters += 1,
    )?;
    let err = (r.x.to_kind(Kind::Double) - &x_star).abs().max().double_value(&[]);
    let scale = x_star.abs().max().double_value(&[]);
    assert!(err <= 1e-3 * scale, "max |x - x*| = {err}, |x*| = {scale}, stop {:?}", r.stop);
    assert!((r.loss - f_star).abs() <= 1e-5 * f_star.abs(), "{} vs {f_star}", r.loss);
    // Gradient descent needs thousands of iterations at condition number 1000; L-BFGS (like
    // PyTorch's torch.optim.LBFGS with history 10 on this problem) is within 1e-6 after 100.
    let gap = r.losses[100] - f_star;
    assert!(gap <= 1e-6 * f_star.abs(), "after 100 iterations f - f* = {gap:e}");
    assert_eq!(iters + 1, r.losses.len());
    // Losses never increase (Armijo line search).
    assert!(r.losses.windows(2).all(|w| w[1] <= w[0]));
    Ok(())
}

#[test]
fn one_dimensional_quadratic_is_solved_exactly_and_stops_on_the_gradient() -> style::Result<()> {
    // f(x) = 3 (x - 2)², minimum at 2.
    let opts = LbfgsOptions { max_iters: 50, tol_grad: 1e-6, ..LbfgsOptions::default() };
    let r = lbfgs::minimize(
        &Tensor::from_slice(&[10.0f32]),
        &opts,
        |x| {
            let v = x.double_value(&[0]);
            Ok((3.0 * (v - 2.0).powi(2), Tensor::from_slice(&[(6.0 * (v - 2.0)) as f32])))
        },
        |_, _| {},
    )?;
    assert!((r.x.double_value(&[0]) - 2.0).abs() < 1e-5, "{}", r.x.double_value(&[0]));
    assert!(matches!(r.stop, Stop::Gradient | Stop::Change), "{:?}", r.stop);
    Ok(())
}
