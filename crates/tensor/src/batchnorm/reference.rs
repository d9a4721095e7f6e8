//! The reference CPU batch norm: plain loops, per-channel sums in f64 (two passes for the
//! variance), one channel per task. The oracle of the tests, and what runs on a CPU without
//! AVX-512.

use super::BnSaved;
use crate::Tensor;
use rayon::prelude::*;

/// `Σ f(i)` for `i in 0..n` in f64, over 8 independent lanes so the loop vectorises; the
/// lane order is fixed, so the result is deterministic.
#[inline]
fn sum8(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let full = n / 8 * 8;
    for base in (0..full).step_by(8) {
        for (l, acc) in lanes.iter_mut().enumerate() {
            *acc += f(base + l);
        }
    }
    let tail: f64 = (full..n).map(&f).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Per channel, the sum over its `n` planes of `plane_sum(channel, x_plane, dy_plane)`.
fn per_channel(
    x: &Tensor,
    dy: Option<&Tensor>,
    plane_sum: impl Fn(usize, &[f32], &[f32]) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    let (n, c, h, w) = x.dims4();
    let hw = h * w;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold((0.0, 0.0), |acc, img| {
                let at = (img * c + ch) * hw;
                let g = dy.map_or(&[][..], |d| &d.data()[at..at + hw]);
                let (a, b) = plane_sum(ch, &x.data()[at..at + hw], g);
                (acc.0 + a, acc.1 + b)
            })
        })
        .collect()
}

/// `out = scale[ch]·x + shift[ch]` (+ `dscale[ch]·dy` when given), plane by plane in parallel.
fn affine_planes(
    x: &Tensor,
    scale: &[f32],
    shift: &[f32],
    dy: Option<(&Tensor, &[f32])>,
) -> Tensor {
    let (_, c, h, w) = x.dims4();
    let hw = h * w;
    let mut y = Tensor::zeros(x.shape());
    y.data_mut()
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(plane, out)| {
            let ch = plane % c;
            let src = &x.data()[plane * hw..][..hw];
            let (a, b) = (scale[ch], shift[ch]);
            match dy {
                None => out.iter_mut().zip(src).for_each(|(o, &v)| *o = a * v + b),
                Some((dy, k)) => {
                    let (k, g) = (k[ch], &dy.data()[plane * hw..][..hw]);
                    out.iter_mut()
                        .zip(src.iter().zip(g))
                        .for_each(|(o, (&v, &g))| *o = k * g + a * v + b)
                }
            }
        });
    y
}

/// Training-mode forward. Updates `running_mean` / `running_var` in place.
pub fn batchnorm_train_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
) -> (Tensor, BnSaved) {
    let (n, c, h, w) = x.dims4();
    let count = (n * h * w) as f64;
    assert!(
        count > 1.0,
        "batchnorm needs more than one value per channel, got shape {:?}",
        x.shape()
    );
    assert!(
        gamma.len() == c && beta.len() == c && running_mean.len() == c && running_var.len() == c
    );
    let means: Vec<f64> = per_channel(x, None, |_, p, _| (sum8(p.len(), |i| p[i] as f64), 0.0))
        .into_iter()
        .map(|(s, _)| s / count)
        .collect();
    // Two passes (mean, then squared deviations): exact enough even when |mean| >> std.
    let sq = per_channel(x, None, |ch, p, _| {
        (sum8(p.len(), |i| (p[i] as f64 - means[ch]).powi(2)), 0.0)
    });
    let mut saved = BnSaved {
        mean: vec![0.0; c],
        invstd: vec![0.0; c],
    };
    for ch in 0..c {
        let var = sq[ch].0 / count;
        saved.mean[ch] = means[ch] as f32;
        saved.invstd[ch] = (1.0 / (var + eps as f64).sqrt()) as f32;
        let unbiased = var * count / (count - 1.0);
        running_mean[ch] = ((1.0 - momentum) * running_mean[ch]) + momentum * means[ch] as f32;
        running_var[ch] = ((1.0 - momentum) * running_var[ch]) + momentum * unbiased as f32;
    }
    // y = γ·(x − mean)·invstd + β = scale·x + shift
    let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * saved.invstd[ch]).collect();
    let shift: Vec<f32> = (0..c)
        .map(|ch| beta[ch] - scale[ch] * saved.mean[ch])
        .collect();
    (affine_planes(x, &scale, &shift, None), saved)
}

/// Evaluation-mode forward: a per-channel affine map from the running statistics.
pub fn batchnorm_eval_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Tensor {
    let c = gamma.len();
    let scale: Vec<f32> = (0..c)
        .map(|ch| gamma[ch] / (running_var[ch] + eps).sqrt())
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|ch| beta[ch] - scale[ch] * running_mean[ch])
        .collect();
    affine_planes(x, &scale, &shift, None)
}

/// Backward of the training-mode forward: returns `dx`, accumulates `dgamma`, `dbeta`.
/// With `x̂ = (x − mean)·invstd`: `dγ = Σ dy·x̂`, `dβ = Σ dy`,
/// `dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂))`.
pub fn batchnorm_backward(
    x: &Tensor,
    dy: &Tensor,
    gamma: &[f32],
    saved: &BnSaved,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Tensor {
    backward_cpu(x, dy, gamma, &saved.mean, &saved.invstd, dgamma, dbeta)
}

/// The CPU body of both backward functions.
pub(super) fn backward_cpu(
    x: &Tensor,
    dy: &Tensor,
    gamma: &[f32],
    save_mean: &[f32],
    save_invstd: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Tensor {
    let (n, c, h, w) = x.dims4();
    assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
    let count = (n * h * w) as f64;
    let sums = per_channel(x, Some(dy), |ch, p, g| {
        let (m, k) = (save_mean[ch] as f64, save_invstd[ch] as f64);
        (
            sum8(p.len(), |i| g[i] as f64),
            sum8(p.len(), |i| g[i] as f64 * (p[i] as f64 - m) * k),
        )
    });
    // dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)) = k·dy + a·x + b per channel, with
    // k = γ·invstd, a = −k·invstd·mean(dy·x̂), b = −k·mean(dy) − a·mean.
    let (mut k, mut a, mut b) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
    for ch in 0..c {
        dbeta[ch] += sums[ch].0 as f32;
        dgamma[ch] += sums[ch].1 as f32;
        let (mean_dy, mean_dy_xhat) = (sums[ch].0 / count, sums[ch].1 / count);
        let (kk, inv, m) = (
            gamma[ch] as f64 * save_invstd[ch] as f64,
            save_invstd[ch] as f64,
            save_mean[ch] as f64,
        );
        let aa = -kk * inv * mean_dy_xhat;
        k[ch] = kk as f32;
        a[ch] = aa as f32;
        b[ch] = (-kk * mean_dy - aa * m) as f32;
    }
    affine_planes(x, &a, &b, Some((dy, &k)))
}
