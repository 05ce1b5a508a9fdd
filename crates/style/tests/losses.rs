//! Gram matrix, content, style and total-variation losses against values worked out by hand.

use style::loss::{self, Targets, Weights};
use tch::{Kind, Tensor};

fn t(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).view(shape)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[test]
fn gram_of_a_2x2x1x2_map() {
    // F = [[1, 2], [3, 4]] (C = 2, H·W = 2): F Fᵀ = [[5, 11], [11, 25]], divided by C·H·W = 4.
    let f = t(&[1., 2., 3., 4.], &[1, 2, 1, 2]);
    let g = loss::gram(&f);
    assert_eq!(g.size(), [1, 2, 2]);
    let got: Vec<f32> = Vec::try_from(g.flatten(0, -1)).unwrap_or_default();
    assert_eq!(got, vec![1.25, 2.75, 2.75, 6.25]);
}

#[test]
fn content_loss_is_the_relative_squared_error() {
    // F - P = [1, -1, 0, 2]: mean square 6/4; P = [1, 2, 3, 4]: mean square 30/4 -> 6/30 = 0.2.
    let p = t(&[1., 2., 3., 4.], &[1, 1, 2, 2]);
    let f = t(&[2., 1., 3., 6.], &[1, 1, 2, 2]);
    let l = loss::content_loss(&f, &p).double_value(&[]);
    assert!(close(l, 0.2), "{l}");
    assert!(loss::content_loss(&p, &p).double_value(&[]).abs() < 1e-12);
}

#[test]
fn content_loss_of_a_batch_is_the_mean_of_its_images() {
    // Image 1 as above (0.2). Image 2: P = [1, 1, 1, 1], F - P = [1, 1, 1, 1] -> 1 / 1 = 1. Mean 0.6;
    // one ratio over the whole batch would give (6/4 + 1) / 2 / ((30/4 + 1) / 2) = 0.294.
    let p = t(&[1., 2., 3., 4., 1., 1., 1., 1.], &[2, 1, 2, 2]);
    let f = t(&[2., 1., 3., 6., 2., 2., 2., 2.], &[2, 1, 2, 2]);
    let l = loss::content_loss(&f, &p).double_value(&[]);
    assert!(close(l, 0.6), "{l}");
    // A target of batch 1 serves every image.
    let one = t(&[1., 2., 3., 4.], &[1, 1, 2, 2]);
    let l = loss::content_loss(&t(&[2., 1., 3., 6., 1., 2., 3., 4.], &[2, 1, 2, 2]), &one).double_value(&[]);
    assert!(close(l, 0.1), "{l}");
}

#[test]
fn style_loss_is_the_relative_gram_error() {
    // Target Gram A = gram([[1,2],[3,4]]) = [[1.25, 2.75], [2.75, 6.25]]; sum(A²) = 1.5625 + 2·7.5625 + 39.0625 = 55.75.
    // F = [[1, 0], [0, 1]]: G = I / 4 = [[0.25, 0], [0, 0.25]]; (G - A)² sums to 1 + 2·7.5625 + 36 = 52.125.
    let a = loss::gram(&t(&[1., 2., 3., 4.], &[1, 2, 1, 2]));
    let f = t(&[1., 0., 0., 1.], &[1, 2, 1, 2]);
    let l = loss::style_loss(&f, &a).double_value(&[]);
    assert!(close(l, 52.125 / 55.75), "{l}");
    // A batch of two identical maps gives the same value (batch mean, target broadcast).
    let f2 = Tensor::cat(&[&f, &f], 0);
    assert!(close(loss::style_loss(&f2, &a).double_value(&[]), 52.125 / 55.75));
}

#[test]
fn total_variation_of_a_tiny_image() {
    // One channel shown; the three channels are equal. x = [[0, 1], [1, 3]]:
    // vertical diffs (1, 2) -> mean square 2.5; horizontal diffs (1, 2) -> 2.5; total 5.
    let one = t(&[0., 1., 1., 3.], &[1, 1, 2, 2]);
    let img = one.repeat([1, 3, 1, 1]);
    let l = loss::tv_loss(&img).double_value(&[]);
    assert!(close(l, 5.0), "{l}");
}

#[test]
fn total_loss_weights_and_sums_the_terms() {
    let p = t(&[1., 2., 3., 4.], &[1, 1, 2, 2]);
    let f = t(&[2., 1., 3., 6.], &[1, 1, 2, 2]);
    let a = loss::gram(&t(&[1., 2., 3., 4.], &[1, 2, 1, 2]));
    let s = t(&[1., 0., 0., 1.], &[1, 2, 1, 2]);
    let img = t(&[0., 1., 1., 3.], &[1, 1, 2, 2]).repeat([1, 3, 1, 1]);
    let targets = Targets { content: vec![p], grams: vec![a.shallow_clone(), a] };
    let w = Weights { content: 2.0, style: 10.0, tv: 0.5, style_layers: vec![0.25, 0.75] };
    let terms = loss::total_loss(&img, &[f], &[s.shallow_clone(), s], &targets, &w);
    let style = 52.125 / 55.75; // both layers equal, weights sum to 1
    let want = 2.0 * 0.2 + 10.0 * style + 0.5 * 5.0;
    assert!(close(terms.content.double_value(&[]), 0.2));
    assert!(close(terms.style.double_value(&[]), style));
    assert!(close(terms.total.double_value(&[]), want), "{}", terms.total.double_value(&[]));
    assert_eq!(terms.total.kind(), Kind::Float);
}
