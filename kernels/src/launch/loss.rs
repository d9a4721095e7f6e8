//! Softmax cross-entropy launchers (`loss.cu`).

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};

use super::{
    check_len, check_positive, f32_in, f32_out, f64_out, i32_in, i32_out, i32_val, to_int,
};
use crate::error::Result;
use crate::Gpu;

/// Block size of the loss kernel (must equal `XENT_THREADS` in loss.cu).
pub const XENT_THREADS: u32 = 256;

fn xent_config() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (XENT_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn xent_check(
    k: &'static str,
    n: usize,
    classes: usize,
    logits: usize,
    labels: usize,
    loss_acc: usize,
    correct_acc: usize,
) -> Result<(i32, i32)> {
    check_positive(k, &[("n", n), ("classes", classes)])?;
    check_len(k, "logits", logits, n * classes)?;
    check_len(k, "labels", labels, n)?;
    check_len(k, "loss_acc", loss_acc, 1)?;
    check_len(k, "correct_acc", correct_acc, 1)?;
    to_int(k, "N*K", n * classes)?;
    Ok((to_int(k, "n", n)?, to_int(k, "classes", classes)?))
}

/// Training loss step: dlogits = (softmax - onehot)/N (overwritten); loss_acc[0] += sum of
/// per-sample losses (f64); correct_acc[0] += number of argmax hits. Labels must be in
/// 0..classes (not checked on the device). CPU twin: tensor's softmax cross-entropy
/// forward+backward.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_forward_backward(
    gpu: &Gpu,
    n: usize,
    classes: usize,
    logits: &CudaView<'_, f32>,
    labels: &CudaView<'_, i32>,
    dlogits: &mut CudaViewMut<'_, f32>,
    loss_acc: &mut CudaViewMut<'_, f64>,
    correct_acc: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    const K: &str = "softmax_xent_forward_backward";
    let (n_i, k_i) = xent_check(
        K,
        n,
        classes,
        logits.len(),
        labels.len(),
        loss_acc.len(),
        correct_acc.len(),
    )?;
    check_len(K, "dlogits", dlogits.len(), n * classes)?;
    launch!(gpu, "softmax_xent_forward_backward", xent_config(),
        [f32_in logits, i32_in labels, f32_out dlogits, f64_out loss_acc, i32_out correct_acc,
         i32 n_i, i32 k_i])
}

/// Evaluation: loss_acc[0] += sum of losses, correct_acc[0] += hits; no gradient. CPU twin:
/// tensor's softmax cross-entropy forward.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_forward(
    gpu: &Gpu,
    n: usize,
    classes: usize,
    logits: &CudaView<'_, f32>,
    labels: &CudaView<'_, i32>,
    loss_acc: &mut CudaViewMut<'_, f64>,
    correct_acc: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    const K: &str = "softmax_xent_forward";
    let (n_i, k_i) = xent_check(
        K,
        n,
        classes,
        logits.len(),
        labels.len(),
        loss_acc.len(),
        correct_acc.len(),
    )?;
    launch!(gpu, "softmax_xent_forward", xent_config(),
        [f32_in logits, i32_in labels, f64_out loss_acc, i32_out correct_acc, i32 n_i, i32 k_i])
}
