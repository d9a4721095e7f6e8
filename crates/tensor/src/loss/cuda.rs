//! Softmax cross-entropy on the GPU (`loss.cu`): one block over the batch, the loss sum and hit
//! count added into the meter's device accumulators.

use kernels::launch::{arg::*, check_len, check_positive, to_int, Kernel, LaunchConfig};
use kernels::{launch, CudaView, CudaViewMut, Gpu, Result};

const FORWARD_BACKWARD: Kernel = Kernel {
    name: "softmax_xent_forward_backward",
    params: &[F32_IN, I32_IN, F32_OUT, F64_OUT, I32_OUT, I32, I32],
};
const FORWARD: Kernel = Kernel {
    name: "softmax_xent_forward",
    params: &[F32_IN, I32_IN, F64_OUT, I32_OUT, I32, I32],
};

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 2] = [FORWARD_BACKWARD, FORWARD];

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
/// 0..classes (not checked on the device). CPU twin:
/// [`super::softmax_cross_entropy_into`].
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
    const K: &str = FORWARD_BACKWARD.name;
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
    launch!(FORWARD_BACKWARD, gpu, xent_config(); logits, labels, dlogits, loss_acc, correct_acc,
        n_i, k_i)
}

/// Evaluation: loss_acc[0] += sum of losses, correct_acc[0] += hits; no gradient. CPU twin:
/// [`super::softmax_cross_entropy_loss_into`].
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
    const K: &str = FORWARD.name;
    let (n_i, k_i) = xent_check(
        K,
        n,
        classes,
        logits.len(),
        labels.len(),
        loss_acc.len(),
        correct_acc.len(),
    )?;
    launch!(FORWARD, gpu, xent_config(); logits, labels, loss_acc, correct_acc, n_i, k_i)
}
