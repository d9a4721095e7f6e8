//! Batch normalisation (training and evaluation forward, backward), each with the ReLU that
//! may follow it fused in (and, at a block's end, the residual add before it): two passes over
//! the activations each way (statistics, then the per-channel affine map), where the reference
//! takes four to five, and outputs written without a zero-fill first. The backward recomputes
//! a fused ReLU's mask from the forward's affine map rather than reading its output. The same
//! formulas as the reference ([`crate::batchnorm`]); the per-channel sums still run in f64, but
//! in one pass (shifted by the channel's first value, so a mean far from zero costs no
//! precision) and image by image, added in image order.
//!
//! The passes over whole tensors are `planes.rs`, on the per-plane kernels of the body this CPU
//! runs: `fast_avx512.rs` or `fast_avx2.rs`. Each function returns `None` without either, and
//! the caller runs the reference.

// Off x86-64 the fast bodies compile out, leaving their helpers unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

#[cfg(target_arch = "x86_64")]
use super::fast_avx2::Avx2;
#[cfg(target_arch = "x86_64")]
use super::fast_avx512::Avx512;
#[cfg(target_arch = "x86_64")]
use super::planes;
pub(crate) use super::planes::ReluMask;
use crate::cpu::{kernels, Kernels};
use crate::Tensor;

/// The body that runs: AVX-512 or AVX2 + FMA; `None`: the reference.
#[derive(Clone, Copy)]
enum Body {
    Avx512,
    Avx2,
}

fn body() -> Option<Body> {
    match kernels() {
        Kernels::Reference => None,
        Kernels::Avx2 => Some(Body::Avx2),
        _ => Some(Body::Avx512),
    }
}

/// `planes::$f(args)` on the body's per-plane kernels.
#[cfg(target_arch = "x86_64")]
macro_rules! on {
    ($body:expr, $f:ident($($arg:expr),*)) => {
        match $body {
            Body::Avx512 => planes::$f::<Avx512>($($arg),*),
            Body::Avx2 => planes::$f::<Avx2>($($arg),*),
        }
    };
}

/// The fused forward's results: output, batch mean, `1/sqrt(var + eps)`, and the affine map it
/// applied (`scale`, `shift` per channel).
pub(crate) type TrainForward = (Tensor, Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>));

/// Training-mode forward, plus `residual` if given, then ReLU if `relu`: the output, the batch
/// mean and `1/sqrt(var + eps)`, and the affine map; updates the running statistics as the
/// reference does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
    relu: bool,
    residual: Option<&Tensor>,
) -> Option<TrainForward> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let (n, c, h, w) = x.dims4();
        let count = (n * h * w) as f64;
        assert!(
            count > 1.0,
            "batchnorm needs more than one value per channel, got shape {:?}",
            x.shape()
        );
        // SAFETY: the body's instructions were detected.
        let (means, vars) = unsafe { on!(body, moments(x)) };
        let (mut mean, mut invstd) = (vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let var = vars[ch];
            mean[ch] = means[ch] as f32;
            invstd[ch] = (1.0 / (var + eps as f64).sqrt()) as f32;
            let unbiased = var * count / (count - 1.0);
            running_mean[ch] = ((1.0 - momentum) * running_mean[ch]) + momentum * means[ch] as f32;
            running_var[ch] = ((1.0 - momentum) * running_var[ch]) + momentum * unbiased as f32;
        }
        let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * invstd[ch]).collect();
        let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - scale[ch] * mean[ch]).collect();
        // SAFETY: as above.
        let y = unsafe { on!(body, affine(x, &scale, &shift, relu, residual)) };
        return Some((y, mean, invstd, (scale, shift)));
    }
    let _ = (
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        momentum,
        eps,
        relu,
        residual,
    );
    None
}

/// Evaluation-mode forward (+ `residual`) (+ ReLU) from the running statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eval_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    relu: bool,
    residual: Option<&Tensor>,
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let c = gamma.len();
        let scale: Vec<f32> = (0..c)
            .map(|ch| gamma[ch] / (running_var[ch] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|ch| beta[ch] - scale[ch] * running_mean[ch])
            .collect();
        // SAFETY: the body's instructions were detected.
        return Some(unsafe { on!(body, affine(x, &scale, &shift, relu, residual)) });
    }
    let _ = (
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        eps,
        relu,
        residual,
    );
    None
}

/// Backward of [`train_forward`]: `dx`; accumulates `dgamma`, `dbeta`. ReLU's mask, if one
/// followed, is applied to `dy` on the fly.
pub(crate) fn backward(
    x: &Tensor,
    dy: &Tensor,
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    relu: ReluMask<'_>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let (n, c, h, w) = x.dims4();
        assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
        if let ReluMask::Output(out) = relu {
            assert_eq!(out.shape(), x.shape(), "batchnorm relu output shape");
        }
        let count = (n * h * w) as f64;
        // SAFETY: the body's instructions were detected.
        let sums = unsafe { on!(body, grad_sums(x, dy, relu, mean)) };
        // As the reference: dx = k·g + a·x + b per channel.
        let (mut k, mut a, mut b) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let inv = invstd[ch] as f64;
            let (sum_g, sum_gxm) = sums[ch];
            dbeta[ch] += sum_g as f32;
            dgamma[ch] += (sum_gxm * inv) as f32;
            let (mean_dy, mean_dy_xhat) = (sum_g / count, sum_gxm * inv / count);
            let kk = gamma[ch] as f64 * inv;
            let aa = -kk * inv * mean_dy_xhat;
            k[ch] = kk as f32;
            a[ch] = aa as f32;
            b[ch] = (-kk * mean_dy - aa * mean[ch] as f64) as f32;
        }
        // SAFETY: as above.
        return Some(unsafe { on!(body, backward_apply(x, dy, relu, &k, &a, &b)) });
    }
    let _ = (x, dy, gamma, mean, invstd, relu, dgamma, dbeta);
    None
}
