//! Batch normalisation over (N, H, W) per channel, PyTorch's `BatchNorm2d`.
//!
//! Training: normalise with the batch's mean and *biased* variance, and move the running
//! statistics toward the batch's mean and *unbiased* variance by `momentum`.
//! Evaluation: normalise with the running statistics.
//! Per-channel sums run in f64, one channel per task, so they are exact enough and
//! deterministic.

use crate::Tensor;
use rayon::prelude::*;

pub const BN_EPS: f32 = 1e-5;
pub const BN_MOMENTUM: f32 = 0.1;

/// What the backward pass needs from a training-mode forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct BnSaved {
    pub mean: Vec<f32>,
    /// `1 / sqrt(var + eps)`, with the biased batch variance.
    pub invstd: Vec<f32>,
}

/// Per-channel `(Σ a(v), Σ b(v))` over one channel's `n` planes of `hw` values.
fn channel_sums(
    c: usize,
    n: usize,
    hw: usize,
    data: &[f32],
    f: impl Fn(usize, usize, f32) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = (0.0, 0.0);
            for img in 0..n {
                let plane = (img * c + ch) * hw;
                for (j, &v) in data[plane..plane + hw].iter().enumerate() {
                    let (a, b) = f(ch, plane + j, v);
                    acc.0 += a;
                    acc.1 += b;
                }
            }
            acc
        })
        .collect()
}

/// `out[i] = f(channel, i, x[i])` over an NCHW tensor, plane by plane in parallel.
fn map_planes(x: &Tensor, f: impl Fn(usize, usize, f32) -> f32 + Sync) -> Tensor {
    let (_, c, h, w) = x.dims4();
    let hw = h * w;
    let mut y = Tensor::zeros(x.shape());
    y.data_mut()
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(plane, out)| {
            let src = &x.data()[plane * hw..][..hw];
            for (j, (o, &v)) in out.iter_mut().zip(src).enumerate() {
                *o = f(plane % c, plane * hw + j, v);
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
    let means: Vec<f64> = channel_sums(c, n, h * w, x.data(), |_, _, v| (v as f64, 0.0))
        .into_iter()
        .map(|(s, _)| s / count)
        .collect();
    let sq = channel_sums(c, n, h * w, x.data(), |ch, _, v| {
        ((v as f64 - means[ch]).powi(2), 0.0)
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
    let y = map_planes(x, |ch, _, v| {
        gamma[ch] * (v - saved.mean[ch]) * saved.invstd[ch] + beta[ch]
    });
    (y, saved)
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
    let invstd: Vec<f32> = running_var
        .iter()
        .map(|&v| 1.0 / (v + eps).sqrt())
        .collect();
    map_planes(x, |ch, _, v| {
        gamma[ch] * (v - running_mean[ch]) * invstd[ch] + beta[ch]
    })
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
    let (n, c, h, w) = x.dims4();
    assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
    let count = (n * h * w) as f64;
    let xhat = |ch: usize, v: f32| (v - saved.mean[ch]) * saved.invstd[ch];
    let sums = channel_sums(c, n, h * w, x.data(), |ch, i, v| {
        let g = dy.data()[i] as f64;
        (g, g * xhat(ch, v) as f64)
    });
    let mut mean_dy = vec![0.0f32; c];
    let mut mean_dy_xhat = vec![0.0f32; c];
    for ch in 0..c {
        dbeta[ch] += sums[ch].0 as f32;
        dgamma[ch] += sums[ch].1 as f32;
        mean_dy[ch] = (sums[ch].0 / count) as f32;
        mean_dy_xhat[ch] = (sums[ch].1 / count) as f32;
    }
    map_planes(x, |ch, i, v| {
        gamma[ch] * saved.invstd[ch] * (dy.data()[i] - mean_dy[ch] - xhat(ch, v) * mean_dy_xhat[ch])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, dot, rand_tensor, rng};

    #[test]
    fn training_forward_and_running_stats_match_hand_computed_values() {
        // One channel, values 1, 2, 3, 6 (batch 2 of 1x2 maps): mean 3, biased var 3.5,
        // unbiased var 14/3.
        let x = Tensor::from_vec(&[2, 1, 1, 2], vec![1.0, 2.0, 3.0, 6.0]);
        let (mut rm, mut rv) = (vec![0.0], vec![1.0]);
        let (y, saved) = batchnorm_train_forward(&x, &[2.0], &[0.5], &mut rm, &mut rv, 0.1, 1e-5);
        let invstd = 1.0 / (3.5f32 + 1e-5).sqrt();
        assert!((saved.mean[0] - 3.0).abs() < 1e-6 && (saved.invstd[0] - invstd).abs() < 1e-6);
        for (got, v) in y.data().iter().zip([1.0f32, 2.0, 3.0, 6.0]) {
            assert!((got - (2.0 * (v - 3.0) * invstd + 0.5)).abs() < 1e-5);
        }
        assert!((rm[0] - 0.3).abs() < 1e-6, "running mean {}", rm[0]);
        assert!(
            (rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6,
            "running var {}",
            rv[0]
        );
    }

    #[test]
    fn eval_forward_uses_running_stats() {
        let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1.0, 3.0, -1.0, 5.0]);
        let y = batchnorm_eval_forward(&x, &[1.0, 2.0], &[0.0, 1.0], &[1.0, 2.0], &[4.0, 9.0], 0.0);
        assert_eq!(
            y.data(),
            &[0.0, 1.0, 2.0 * (-3.0 / 3.0) + 1.0, 2.0 * (3.0 / 3.0) + 1.0]
        );
    }

    #[test]
    fn train_output_is_normalised() {
        let mut r = rng(5);
        let x = rand_tensor(&mut r, &[3, 4, 5, 3]);
        let (mut rm, mut rv) = (vec![0.0; 4], vec![1.0; 4]);
        let (y, _) = batchnorm_train_forward(&x, &[1.0; 4], &[0.0; 4], &mut rm, &mut rv, 0.1, 1e-5);
        for ch in 0..4 {
            let vals: Vec<f64> = (0..3)
                .flat_map(|n| {
                    y.data()[(n * 4 + ch) * 15..][..15]
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>()
                })
                .collect();
            let mean = vals.iter().sum::<f64>() / 45.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 45.0;
            assert!(
                mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-3,
                "channel {ch}: mean {mean}, var {var}"
            );
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut r = rng(6);
        for shape in [[1, 3, 3, 5], [3, 2, 5, 5], [3, 5, 1, 1]] {
            let c = shape[1];
            let x = rand_tensor(&mut r, &shape);
            let gamma = rand_tensor(&mut r, &[c]);
            let beta = rand_tensor(&mut r, &[c]);
            let probe = rand_tensor(&mut r, &shape);
            let fwd = |x: &Tensor, gamma: &Tensor, beta: &Tensor| {
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                batchnorm_train_forward(x, gamma.data(), beta.data(), &mut rm, &mut rv, 0.1, 1e-5)
            };
            let (_, saved) = fwd(&x, &gamma, &beta);
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            let dx = batchnorm_backward(&x, &probe, gamma.data(), &saved, &mut dg, &mut db);
            let (dg, db) = (Tensor::from_vec(&[c], dg), Tensor::from_vec(&[c], db));
            check_grad("bn dx", &x, &dx, |x| dot(&fwd(x, &gamma, &beta).0, &probe));
            check_grad("bn dgamma", &gamma, &dg, |g| {
                dot(&fwd(&x, g, &beta).0, &probe)
            });
            check_grad("bn dbeta", &beta, &db, |b| {
                dot(&fwd(&x, &gamma, b).0, &probe)
            });
        }
    }
}
