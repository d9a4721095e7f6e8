//! The convolution against its definition and finite differences (whichever CPU path the
//! dispatch picks), and the fast paths against the reference.

use super::*;
use crate::testutil::{assert_close, check_grad, rand_tensor, rng};

/// The definition, six loops deep: the reference the im2col path must equal.
fn conv_naive(x: &Tensor, w: &Tensor, stride: usize) -> Tensor {
    let g = ConvShape::new(x.shape(), w.shape(), stride);
    let mut y = Tensor::zeros(&[g.n, g.c_out, g.oh, g.ow]);
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0.0f64;
                    for ci in 0..g.c_in {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * stride + ky) as isize - g.pad as isize;
                                let ix = (ox * stride + kx) as isize - g.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w
                                {
                                    let xv = x.data()[((n * g.c_in + ci) * g.h + iy as usize)
                                        * g.w
                                        + ix as usize];
                                    let wv = w.data()[((co * g.c_in + ci) * g.k + ky) * g.k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                    }
                    y.data_mut()[((n * g.c_out + co) * g.oh + oy) * g.ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

// Awkward shapes: batch 1 and 3, odd sizes, both kernel sizes, both strides.
const CASES: [([usize; 4], [usize; 4], usize); 6] = [
    ([1, 3, 5, 7], [4, 3, 3, 3], 1),
    ([3, 2, 7, 5], [5, 2, 3, 3], 2),
    ([3, 5, 6, 6], [3, 5, 3, 3], 2),
    ([1, 4, 5, 5], [6, 4, 1, 1], 1),
    ([3, 3, 7, 6], [5, 3, 1, 1], 2),
    ([2, 16, 8, 8], [32, 16, 3, 3], 2),
];

#[test]
fn forward_matches_the_definition() {
    let mut r = rng(1);
    for (xs, ws, s) in CASES {
        let x = rand_tensor(&mut r, &xs);
        let w = rand_tensor(&mut r, &ws);
        // f32 sums of at most 144 products of O(1) values: 1e-5 relative is ample.
        assert_close(&conv2d_forward(&x, &w, s), &conv_naive(&x, &w, s), 1e-5);
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut r = rng(2);
    for (xs, ws, s) in CASES {
        let x = rand_tensor(&mut r, &xs);
        let w = rand_tensor(&mut r, &ws);
        let y_shape = conv2d_forward(&x, &w, s).shape().to_vec();
        let probe = rand_tensor(&mut r, &y_shape);
        let dx = conv2d_backward_data(&probe, &w, &xs, s);
        let mut dw = Tensor::zeros(&ws);
        conv2d_backward_weight(&x, &probe, s, &mut dw);
        let loss = |x: &Tensor, w: &Tensor| crate::testutil::dot(&conv2d_forward(x, w, s), &probe);
        check_grad("conv dx", &x, &dx, |x| loss(x, &w));
        check_grad("conv dw", &w, &dw, |w| loss(&x, w));
    }
}

#[test]
fn weight_gradient_accumulates() {
    let mut r = rng(3);
    let x = rand_tensor(&mut r, &[3, 2, 5, 5]);
    let dy = rand_tensor(&mut r, &[3, 4, 5, 5]);
    let mut once = Tensor::zeros(&[4, 2, 3, 3]);
    conv2d_backward_weight(&x, &dy, 1, &mut once);
    let mut twice = once.clone();
    conv2d_backward_weight(&x, &dy, 1, &mut twice);
    let doubled = Tensor::from_vec(once.shape(), once.data().iter().map(|v| 2.0 * v).collect());
    assert_close(&twice, &doubled, 1e-6);
}

/// The existing awkward cases, plus shapes that reach the fast kernels' tails: rows of C
/// beyond a whole tile (13, 7 channels), pixel counts off the vector multiple, odd k for the
/// bf16 pairs, more images than one weight-gradient group (17 of 8x8), and rows of 16 or more
/// pixels (read in place, a masked vector at each row's end for 19 and 17), input channels in
/// whole vectors (the channels-last weight gradient) with ragged rows and output channels, and
/// rows of 8 and 4 (the narrow layout: 4 images per tile, the last group short).
fn fast_cases() -> Vec<([usize; 4], [usize; 4], usize)> {
    let mut cases = CASES.to_vec();
    cases.extend([
        ([2, 8, 9, 11], [13, 8, 3, 3], 1),
        ([17, 4, 8, 8], [7, 4, 3, 3], 1),
        ([2, 6, 16, 16], [20, 6, 1, 1], 2),
        ([3, 16, 16, 16], [16, 16, 3, 3], 1),
        ([2, 3, 5, 19], [5, 3, 3, 3], 1),
        ([2, 5, 4, 17], [3, 5, 1, 1], 1),
        ([2, 32, 5, 7], [11, 32, 3, 3], 1),
        ([3, 16, 6, 9], [5, 16, 1, 1], 2),
        ([6, 16, 4, 4], [20, 16, 3, 3], 1),
        ([5, 8, 2, 8], [3, 8, 1, 1], 1),
    ]);
    cases
}

/// One pass of every case through the fast path and the reference (on bf16-rounded operands
/// for bf16: the twin), compared at `tol`; `None` when this CPU has no fast path for it.
fn fast_vs_reference(precision: Precision, tol: f64) -> Option<()> {
    use crate::cpu::conv as fast;
    if !fast::available(precision) {
        eprintln!("skipped: this CPU has no fast {precision} convolution");
        return None;
    }
    let twin = |t: &Tensor| match precision {
        Precision::Fp32 => t.clone(),
        Precision::Bf16 => round_tensor(t),
    };
    let mut r = rng(11);
    for (xs, ws, s) in fast_cases() {
        let x = rand_tensor(&mut r, &xs);
        let w = rand_tensor(&mut r, &ws);
        let want = reference::forward(&twin(&x), &twin(&w), s);
        let got = fast::forward(&x, &w, s, precision)?;
        assert_close(&got, &want, tol);
        let dy = rand_tensor(&mut r, want.shape());
        let want = reference::backward_data(&twin(&dy), &twin(&w), &xs, s);
        assert_close(
            &fast::backward_data(&dy, &w, &xs, s, precision)?,
            &want,
            tol,
        );
        // Accumulates onto what is there.
        let start = rand_tensor(&mut r, &ws);
        let (mut got, mut want) = (start.clone(), start);
        reference::backward_weight(&twin(&x), &twin(&dy), s, &mut want);
        assert!(fast::backward_weight(&x, &dy, s, &mut got, precision));
        assert_close(&got, &want, tol);
    }
    Some(())
}

// The fast path sums the same products in another order: f32 sums of at most a few thousand
// products of O(1) values differ by well under 1e-5 relative.
#[test]
fn fast_fp32_path_matches_the_reference() {
    fast_vs_reference(Precision::Fp32, 1e-5);
}

// Same operands (rounded to bf16 identically), exact products, f32 sums in another order: the
// twin's tolerance. The twin itself is ~1e-3 away from fp32, so a path that forgot to round
// (or rounded differently) fails here.
#[test]
fn fast_bf16_path_matches_the_twin() {
    fast_vs_reference(Precision::Bf16, 1e-5);
}
