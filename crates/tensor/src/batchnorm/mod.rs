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
//! tensors on the input's device. On the CPU the latter run [`fast`] (ReLU fused,
//! one-pass statistics) where the CPU has AVX-512, else the former (same bits); on a GPU
//! they launch `batchnorm.cu` (training: two launches each way over a grid of 4096-value chunks
//! x channels, per-chunk f32 partials in a per-call workspace, combined in a fixed order).

use crate::elementwise::{add_relu, relu_backward, relu_forward};
use crate::{check, cuda_of, Tensor};

pub mod cuda;
pub(crate) mod fast;
#[cfg(target_arch = "x86_64")]
mod fast_avx2;
#[cfg(target_arch = "x86_64")]
mod fast_avx512;
mod planes;
mod reference;

pub use cuda::BnShape;

use reference::backward_cpu;
pub use reference::{batchnorm_backward, batchnorm_eval_forward, batchnorm_train_forward};

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
    /// The CPU fast path's affine map (`scale`, `shift` per channel), from which its backward
    /// recomputes a fused ReLU's mask instead of reading the output (`fast::ReluMask`).
    pub(crate) affine: Option<(Vec<f32>, Vec<f32>)>,
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
        if let Some((y, mean, invstd, affine)) =
            fast::train_forward(x, g, b, rm, rv, momentum, eps, relu, None)
        {
            let c = mean.len();
            let stats = BnStats {
                mean: Tensor::from_vec(&[c], mean),
                invstd: Tensor::from_vec(&[c], invstd),
                affine: Some(affine),
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
            affine: None,
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
    let shape = BnShape::of(x);
    // The per-chunk partial statistics; the first launch writes all of it before the second
    // reads it, so it needs no zeroing. Allocated per call for now.
    let mut workspace = check(OP, gpu.uninit_f32(shape.stats_workspace_len()));
    let r = cuda::batchnorm_forward_train(
        &gpu,
        &shape,
        &x.cu().as_view(),
        &mut y.cu_mut().as_view_mut(),
        &cuda::BnParams {
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
    let affine = None;
    (
        y,
        BnStats {
            mean,
            invstd,
            affine,
        },
    )
}

/// `relu(bn(x) + residual)` in training mode: the end of a residual block. On the CPU fast
/// path one pass writes it (the normalised values never stored); elsewhere
/// [`train_forward_relu`] without ReLU, then [`add_relu`]. The statistics are for `x` alone,
/// as [`train_forward`]'s: its backward takes `dy` already masked by the block's ReLU.
#[allow(clippy::too_many_arguments)]
pub fn train_forward_add_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    momentum: f32,
    eps: f32,
    residual: &Tensor,
) -> (Tensor, BnStats) {
    let _span = crate::profile::span(|| "bn fwd+add+relu".into());
    assert_eq!(x.shape(), residual.shape(), "batchnorm residual shape");
    let all = [x, gamma, beta, &*running_mean, &*running_var, residual];
    if cuda_of("batchnorm train_forward_add_relu", &all).is_none() {
        let (rm, rv) = (running_mean.data_mut(), running_var.data_mut());
        let (g, b, r) = (gamma.data(), beta.data(), Some(residual));
        if let Some((y, mean, invstd, _)) =
            fast::train_forward(x, g, b, rm, rv, momentum, eps, true, r)
        {
            let c = mean.len();
            let stats = BnStats {
                mean: Tensor::from_vec(&[c], mean),
                invstd: Tensor::from_vec(&[c], invstd),
                affine: None,
            };
            return (y, stats);
        }
    }
    let (rm, rv) = (running_mean, running_var);
    let (y, stats) = train_forward_relu(x, gamma, beta, rm, rv, momentum, eps, false);
    (add_relu(&y, residual), stats)
}

/// `relu(bn(x) + residual)` in evaluation mode (see [`train_forward_add_relu`]).
pub fn eval_forward_add_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
    residual: &Tensor,
) -> Tensor {
    let _span = crate::profile::span(|| "bn eval+add+relu".into());
    assert_eq!(x.shape(), residual.shape(), "batchnorm residual shape");
    let all = [x, gamma, beta, running_mean, running_var, residual];
    if cuda_of("batchnorm eval_forward_add_relu", &all).is_none() {
        let (g, b, rm, rv) = (
            gamma.data(),
            beta.data(),
            running_mean.data(),
            running_var.data(),
        );
        if let Some(y) = fast::eval_forward(x, g, b, rm, rv, eps, true, Some(residual)) {
            return y;
        }
    }
    let y = eval_forward_relu(x, gamma, beta, running_mean, running_var, eps, false);
    add_relu(&y, residual)
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
        if let Some(y) = fast::eval_forward(x, g, b, rm, rv, eps, relu, None) {
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
    let r = cuda::batchnorm_forward_eval(
        &gpu,
        &BnShape::of(x),
        &x.cu().as_view(),
        &mut y.cu_mut().as_view_mut(),
        &cuda::BnParams {
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
        let mask = match (relu_out, &saved.affine) {
            (None, _) => fast::ReluMask::None,
            (Some(_), Some((scale, shift))) => fast::ReluMask::Affine(scale, shift),
            (Some(out), None) => fast::ReluMask::Output(out),
        };
        if let Some(dx) = fast::backward(x, dy, gamma.data(), stats, mask, dg, db) {
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
    let shape = BnShape::of(x);
    // Per-chunk partial sums, written in full by the first launch (no zeroing needed).
    let mut workspace = check(OP, gpu.uninit_f32(shape.stats_workspace_len()));
    // The kernels accumulate into dgamma / dbeta directly.
    let r = cuda::batchnorm_backward(
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
mod tests;
