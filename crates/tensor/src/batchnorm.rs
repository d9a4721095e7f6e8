//! Batch normalisation over (N, H, W) per channel, PyTorch's `BatchNorm2d`.
//!
//! Training: normalise with the batch's mean and *biased* variance, and move the running
//! statistics toward the batch's mean and *unbiased* variance by `momentum`.
//! Evaluation: normalise with the running statistics.
//! Per-channel sums run in f64, one channel per task, so they are exact enough and
//! deterministic.
//!
//! Two APIs: the slice functions (`batchnorm_train_forward`, `batchnorm_eval_forward`,
//! `batchnorm_backward`: host-only, the CPU reference) and the tensor functions
//! ([`train_forward`], [`eval_forward`], [`backward`]) whose parameters and statistics are
//! tensors on the input's device. On the CPU the latter run [`crate::cpu::bn`] (ReLU fused,
//! one-pass statistics) where the CPU has AVX-512, else the former (same bits); on a GPU
//! they launch `batchnorm.cu` (training: two launches each way over a grid of 4096-value chunks
//! x channels, per-chunk f32 partials in a per-call workspace, combined in a fixed order).

use crate::elementwise::{relu_backward, relu_forward};
use crate::{check, cpu, cuda_of, Tensor};
use kernels::launch as kl;
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

/// What the backward pass needs from a training-mode forward pass, as tensors `[c]` on the
/// input's device (the device-agnostic form of [`BnSaved`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BnStats {
    pub mean: Tensor,
    /// `1 / sqrt(var + eps)`, with the biased batch variance.
    pub invstd: Tensor,
}

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
fn backward_cpu(
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

fn bn_shape(x: &Tensor) -> kl::BnShape {
    let (n, c, h, w) = x.dims4();
    kl::BnShape { n, c, hw: h * w }
}

/// Training-mode forward on the input's device; updates `running_mean` / `running_var` in
/// place. `gamma`, `beta` and the running statistics are `[c]` tensors on the same device.
pub fn train_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    momentum: f32,
    eps: f32,
) -> (Tensor, BnStats) {
    let (rm, rv) = (running_mean, running_var);
    train_forward_relu(x, gamma, beta, rm, rv, momentum, eps, false)
}

/// [`train_forward`], followed by ReLU when `relu` (one fused kernel on a GPU; on the CPU,
/// [`relu_forward`] after the normalisation, which is what the kernel computes).
#[allow(clippy::too_many_arguments)]
pub fn train_forward_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    momentum: f32,
    eps: f32,
    relu: bool,
) -> (Tensor, BnStats) {
    let _span = crate::profile::span(|| format!("bn fwd{}", if relu { "+relu" } else { "" }));
    const OP: &str = "batchnorm train_forward";
    let Some(gpu) = cuda_of(OP, &[x, gamma, beta, &*running_mean, &*running_var]) else {
        let (rm, rv) = (running_mean.data_mut(), running_var.data_mut());
        let (g, b) = (gamma.data(), beta.data());
        if let Some((y, mean, invstd)) =
            cpu::bn::train_forward(x, g, b, rm, rv, momentum, eps, relu)
        {
            let c = mean.len();
            let stats = BnStats {
                mean: Tensor::from_vec(&[c], mean),
                invstd: Tensor::from_vec(&[c], invstd),
            };
            return (y, stats);
        }
        let (y, saved) = batchnorm_train_forward(
            x,
            gamma.data(),
            beta.data(),
            running_mean.data_mut(),
            running_var.data_mut(),
            momentum,
            eps,
        );
        let c = saved.mean.len();
        let stats = BnStats {
            mean: Tensor::from_vec(&[c], saved.mean),
            invstd: Tensor::from_vec(&[c], saved.invstd),
        };
        let y = if relu { relu_forward(&y) } else { y };
        return (y, stats);
    };
    let (n, c, h, w) = x.dims4();
    assert!(
        n * h * w > 1,
        "batchnorm needs more than one value per channel, got shape {:?}",
        x.shape()
    );
    let mut y = Tensor::cuda_output(OP, &gpu, x.shape());
    let mut mean = Tensor::cuda_output(OP, &gpu, &[c]);
    let mut invstd = Tensor::cuda_output(OP, &gpu, &[c]);
    let shape = bn_shape(x);
    // The per-chunk partial statistics; the first launch writes all of it before the second
    // reads it, so it needs no zeroing. Allocated per call for now.
    let mut workspace = check(OP, gpu.uninit_f32(shape.stats_workspace_len()));
    let r = kl::batchnorm_forward_train(
        &gpu,
        &shape,
        &x.cu().as_view(),
        &mut y.cu_mut().as_view_mut(),
        &kl::BnParams {
            gamma: &gamma.cu().as_view(),
            beta: &beta.cu().as_view(),
        },
        &mut running_mean.cu_mut().as_view_mut(),
        &mut running_var.cu_mut().as_view_mut(),
        &mut mean.cu_mut().as_view_mut(),
        &mut invstd.cu_mut().as_view_mut(),
        &mut workspace.as_view_mut(),
        momentum,
        eps,
        relu,
    );
    check(OP, r);
    (y, BnStats { mean, invstd })
}

/// Evaluation-mode forward on the input's device, from the running statistics.
pub fn eval_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Tensor {
    eval_forward_relu(x, gamma, beta, running_mean, running_var, eps, false)
}

/// [`eval_forward`], followed by ReLU when `relu` (fused on a GPU).
pub fn eval_forward_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
    relu: bool,
) -> Tensor {
    let _span = crate::profile::span(|| "bn eval".into());
    const OP: &str = "batchnorm eval_forward";
    let Some(gpu) = cuda_of(OP, &[x, gamma, beta, running_mean, running_var]) else {
        let (g, b, rm, rv) = (
            gamma.data(),
            beta.data(),
            running_mean.data(),
            running_var.data(),
        );
        if let Some(y) = cpu::bn::eval_forward(x, g, b, rm, rv, eps, relu) {
            return y;
        }
        let y = batchnorm_eval_forward(
            x,
            gamma.data(),
            beta.data(),
            running_mean.data(),
            running_var.data(),
            eps,
        );
        return if relu { relu_forward(&y) } else { y };
    };
    let mut y = Tensor::cuda_output(OP, &gpu, x.shape());
    let r = kl::batchnorm_forward_eval(
        &gpu,
        &bn_shape(x),
        &x.cu().as_view(),
        &mut y.cu_mut().as_view_mut(),
        &kl::BnParams {
            gamma: &gamma.cu().as_view(),
            beta: &beta.cu().as_view(),
        },
        &running_mean.cu().as_view(),
        &running_var.cu().as_view(),
        eps,
        relu,
    );
    check(OP, r);
    y
}

/// Backward of [`train_forward`] on the input's device: returns `dx`, accumulates `dgamma`
/// and `dbeta`.
pub fn backward(
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    saved: &BnStats,
    dgamma: &mut Tensor,
    dbeta: &mut Tensor,
) -> Tensor {
    backward_relu(x, dy, gamma, saved, None, dgamma, dbeta)
}

/// Backward of [`train_forward_relu`]: with `relu_out` (its output) ReLU's backward is applied
/// to `dy` first (fused on a GPU; on the CPU, [`relu_backward`] then the BN backward).
pub fn backward_relu(
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    saved: &BnStats,
    relu_out: Option<&Tensor>,
    dgamma: &mut Tensor,
    dbeta: &mut Tensor,
) -> Tensor {
    let _span =
        crate::profile::span(|| format!("bn bwd{}", if relu_out.is_some() { "+relu" } else { "" }));
    const OP: &str = "batchnorm backward";
    let mut all = vec![x, dy, gamma, &saved.mean, &saved.invstd, &*dgamma, &*dbeta];
    all.extend(relu_out);
    let Some(gpu) = cuda_of(OP, &all) else {
        let stats = (saved.mean.data(), saved.invstd.data());
        let (dg, db) = (dgamma.data_mut(), dbeta.data_mut());
        if let Some(dx) = cpu::bn::backward(x, dy, gamma.data(), stats, relu_out, dg, db) {
            return dx;
        }
        let masked = relu_out.map(|out| relu_backward(dy, out));
        return backward_cpu(
            x,
            masked.as_ref().unwrap_or(dy),
            gamma.data(),
            saved.mean.data(),
            saved.invstd.data(),
            dgamma.data_mut(),
            dbeta.data_mut(),
        );
    };
    assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
    let mut dx = Tensor::cuda_output(OP, &gpu, x.shape());
    let relu_view = relu_out.map(|t| t.cu().as_view());
    let shape = bn_shape(x);
    // Per-chunk partial sums, written in full by the first launch (no zeroing needed).
    let mut workspace = check(OP, gpu.uninit_f32(shape.stats_workspace_len()));
    // The kernels accumulate into dgamma / dbeta directly.
    let r = kl::batchnorm_backward(
        &gpu,
        &shape,
        &dy.cu().as_view(),
        &x.cu().as_view(),
        &gamma.cu().as_view(),
        &saved.mean.cu().as_view(),
        &saved.invstd.cu().as_view(),
        relu_view.as_ref(),
        &mut dx.cu_mut().as_view_mut(),
        &mut dgamma.cu_mut().as_view_mut(),
        &mut dbeta.cu_mut().as_view_mut(),
        &mut workspace.as_view_mut(),
    );
    check(OP, r);
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, dot, rand_tensor, rng};

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

    /// The fast path (one-pass statistics, ReLU fused, AVX-512) against the reference slice
    /// functions, with and without ReLU, on the awkward shapes above plus planes off the vector
    /// multiple and a mean far from zero (the shifted sums must not lose the variance).
    #[test]
    fn fast_path_matches_the_reference() {
        use crate::cpu::{self, Kernels};
        if cpu::supported() < Kernels::Avx512 {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let mut r = rng(12);
        for (shape, offset) in [
            ([1, 3, 3, 5], 0.0),
            ([3, 2, 5, 5], 0.0),
            ([3, 5, 1, 1], 0.0),
            ([4, 3, 7, 9], 0.0),
            ([2, 3, 6, 6], 300.0),
        ] {
            let c = shape[1];
            let mut x = rand_tensor(&mut r, &shape);
            x.data_mut().iter_mut().for_each(|v| *v += offset);
            let (gamma, beta) = (rand_tensor(&mut r, &[c]), rand_tensor(&mut r, &[c]));
            let dy = rand_tensor(&mut r, &shape);
            for relu in [false, true] {
                // The reference: BN, then ReLU; ReLU's mask, then BN's backward.
                let (mut rm, mut rv) = (vec![0.5; c], vec![2.0; c]);
                let (want, saved) = batchnorm_train_forward(
                    &x,
                    gamma.data(),
                    beta.data(),
                    &mut rm,
                    &mut rv,
                    0.1,
                    1e-5,
                );
                let want = if relu { relu_forward(&want) } else { want };
                let (mut frm, mut frv) = (vec![0.5; c], vec![2.0; c]);
                let (got, mean, invstd) = cpu::bn::train_forward(
                    &x,
                    gamma.data(),
                    beta.data(),
                    &mut frm,
                    &mut frv,
                    0.1,
                    1e-5,
                    relu,
                )
                .unwrap();
                // Same formulas; f64 sums in another order, f32 FMAs for the affine map: the
                // results differ by f32 roundings only, of terms as large as |x - mean| / std
                // times the output (~300 with the offset: 300 · 2^-24 ≈ 2e-5).
                let tol = if offset > 0.0 { 5e-5 } else { 1e-6 };
                assert_close(&got, &want, tol);
                for (a, b) in [
                    (&mean, &saved.mean),
                    (&invstd, &saved.invstd),
                    (&frm, &rm),
                    (&frv, &rv),
                ] {
                    assert_close(
                        &Tensor::from_vec(&[c], a.clone()),
                        &Tensor::from_vec(&[c], b.clone()),
                        1e-6,
                    );
                }
                let masked = if relu {
                    relu_backward(&dy, &want)
                } else {
                    dy.clone()
                };
                let (mut dg, mut db) = (vec![0.25; c], vec![-0.5; c]);
                let want_dx =
                    batchnorm_backward(&x, &masked, gamma.data(), &saved, &mut dg, &mut db);
                let (mut fdg, mut fdb) = (vec![0.25; c], vec![-0.5; c]);
                let out = relu.then_some(&got);
                let got_dx = cpu::bn::backward(
                    &x,
                    &dy,
                    gamma.data(),
                    (&mean, &invstd),
                    out,
                    &mut fdg,
                    &mut fdb,
                )
                .unwrap();
                assert_close(&got_dx, &want_dx, 10.0 * tol);
                assert_close(
                    &Tensor::from_vec(&[c], fdg),
                    &Tensor::from_vec(&[c], dg),
                    1e-5,
                );
                assert_close(
                    &Tensor::from_vec(&[c], fdb),
                    &Tensor::from_vec(&[c], db),
                    1e-5,
                );
                let want = batchnorm_eval_forward(&x, gamma.data(), beta.data(), &rm, &rv, 1e-5);
                let want = if relu { relu_forward(&want) } else { want };
                let got =
                    cpu::bn::eval_forward(&x, gamma.data(), beta.data(), &rm, &rv, 1e-5, relu)
                        .unwrap();
                assert_close(&got, &want, tol);
            }
        }
    }
}
