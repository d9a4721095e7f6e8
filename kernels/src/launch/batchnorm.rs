//! BatchNorm2d launchers (`batchnorm.cu`).

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::{check_len, check_positive, f32_in, f32_out, f32_val, grid_1d, i32_val, to_i32};
use crate::error::{KernelError, Result};
use crate::Gpu;

/// Block size of the per-channel batchnorm kernels (multiple of 32, see `block_sum`).
pub const BN_THREADS: u32 = 256;

/// Shape of a BatchNorm2d input: N, C and H*W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// H * W.
    pub hw: usize,
}

impl BnShape {
    /// N*C*HW.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// True when any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn ints(&self, kernel: &'static str) -> Result<(i32, i32, i32)> {
        check_positive(kernel, &[("n", self.n), ("c", self.c), ("hw", self.hw)])?;
        to_i32(kernel, "N*C*HW", self.len())?;
        Ok((
            to_i32(kernel, "n", self.n)?,
            to_i32(kernel, "c", self.c)?,
            to_i32(kernel, "hw", self.hw)?,
        ))
    }
    /// One block per channel.
    pub fn per_channel_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.c as u32, 1, 1),
            block_dim: (BN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Per-channel buffers of one BatchNorm2d layer (all of length C).
pub struct BnParams<'a, 'b> {
    /// gamma (weight).
    pub gamma: &'a CudaView<'b, f32>,
    /// beta (bias).
    pub beta: &'a CudaView<'b, f32>,
}

/// Training-mode forward: normalises with batch statistics, updates running stats in place and
/// saves mean / invstd for backward; `relu` applies ReLU to the output in the same pass. CPU
/// twin: tensor's batchnorm2d forward (training), then relu.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    shape: &BnShape,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    params: &BnParams<'_, '_>,
    running_mean: &mut CudaViewMut<'_, f32>,
    running_var: &mut CudaViewMut<'_, f32>,
    save_mean: &mut CudaViewMut<'_, f32>,
    save_invstd: &mut CudaViewMut<'_, f32>,
    momentum: f32,
    eps: f32,
    relu: bool,
) -> Result<()> {
    const K: &str = "batchnorm_forward_train";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "y", y.len(), shape.len())?;
    for (what, len) in [
        ("gamma", params.gamma.len()),
        ("beta", params.beta.len()),
        ("running_mean", running_mean.len()),
        ("running_var", running_var.len()),
        ("save_mean", save_mean.len()),
        ("save_invstd", save_invstd.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    let gamma = params.gamma;
    let beta = params.beta;
    let relu = i32::from(relu);
    launch!(gpu, "batchnorm_forward_train", shape.per_channel_config(),
        [f32_in x, f32_out y, f32_in gamma, f32_in beta, f32_out running_mean,
         f32_out running_var, f32_out save_mean, f32_out save_invstd, i32 n, i32 c, i32 hw,
         f32 momentum, f32 eps, i32 relu])
}

/// Eval-mode forward with running statistics, ReLU fused when `relu`. CPU twin: tensor's
/// batchnorm2d forward (eval), then relu.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    shape: &BnShape,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    params: &BnParams<'_, '_>,
    running_mean: &CudaView<'_, f32>,
    running_var: &CudaView<'_, f32>,
    eps: f32,
    relu: bool,
) -> Result<()> {
    const K: &str = "batchnorm_forward_eval";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "y", y.len(), shape.len())?;
    for (what, len) in [
        ("gamma", params.gamma.len()),
        ("beta", params.beta.len()),
        ("running_mean", running_mean.len()),
        ("running_var", running_var.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    let gamma = params.gamma;
    let beta = params.beta;
    let relu = i32::from(relu);
    launch!(gpu, "batchnorm_forward_eval", grid_1d(shape.len()),
        [f32_in x, f32_out y, f32_in gamma, f32_in beta, f32_in running_mean,
         f32_in running_var, i32 n, i32 c, i32 hw, f32 eps, i32 relu])
}

/// Backward: dx (overwritten), dgamma and dbeta (accumulated). With `relu_out` (the fused
/// forward's output) ReLU's backward is applied to `dy` first. CPU twin: relu backward, then
/// tensor's batchnorm2d backward.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    shape: &BnShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    gamma: &CudaView<'_, f32>,
    save_mean: &CudaView<'_, f32>,
    save_invstd: &CudaView<'_, f32>,
    relu_out: Option<&CudaView<'_, f32>>,
    dx: &mut CudaViewMut<'_, f32>,
    dgamma: &mut CudaViewMut<'_, f32>,
    dbeta: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "batchnorm_backward";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.len())?;
    if let Some(out) = relu_out {
        check_len(K, "relu_out", out.len(), shape.len())?;
    }
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "dx", dx.len(), shape.len())?;
    for (what, len) in [
        ("gamma", gamma.len()),
        ("save_mean", save_mean.len()),
        ("save_invstd", save_invstd.len()),
        ("dgamma", dgamma.len()),
        ("dbeta", dbeta.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    // Without ReLU the kernel never reads relu_out: any valid pointer will do.
    let relu = i32::from(relu_out.is_some());
    let relu_out = relu_out.unwrap_or(dy);
    launch!(gpu, "batchnorm_backward", shape.per_channel_config(),
        [f32_in dy, f32_in x, f32_in gamma, f32_in save_mean, f32_in save_invstd,
         f32_in relu_out, f32_out dx, f32_out dgamma, f32_out dbeta, i32 n, i32 c, i32 hw,
         i32 relu])
}
