//! Softmax cross-entropy on the GPU (`loss.cu`): one block over the batch, the loss sum and hit
//! count added into the meter's device accumulators.

use kernels::launch::{arg::*, check_len, check_positive, to_int, Kernel, LaunchConfig};
use kernels::{launch, CudaView, CudaViewMut, Gpu, Result};

const FORWARD_BACKWARD: Kernel = Kernel::new(
    "softmax_xent_forward_backward",
    &[F32_IN, I32_IN, F32_OUT, F64_OUT, I32_OUT, I32, I32],
);
const FORWARD: Kernel = Kernel::new(
    "softmax_xent_forward",
    &[F32_IN, I32_IN, F64_OUT, I32_OUT, I32, I32],
);

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

/// Softmax cross-entropy over `n` rows of `classes` logits: loss_acc[0] += the sum of the
/// per-row losses (f64), correct_acc[0] += the number of argmax hits. With `dlogits` (training)
/// it is also overwritten with (softmax - onehot)/N; without it (evaluation) no gradient is
/// computed. Labels must be in 0..classes (not checked on the device). CPU twins:
/// [`super::softmax_cross_entropy_into`], [`super::softmax_cross_entropy_loss_into`].
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    gpu: &Gpu,
    n: usize,
    classes: usize,
    logits: &CudaView<'_, f32>,
    labels: &CudaView<'_, i32>,
    dlogits: Option<&mut CudaViewMut<'_, f32>>,
    loss_acc: &mut CudaViewMut<'_, f64>,
    correct_acc: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    let kernel = if dlogits.is_some() {
        FORWARD_BACKWARD
    } else {
        FORWARD
    };
    let k = kernel.name;
    check_positive(k, &[("n", n), ("classes", classes)])?;
    check_len(k, "logits", logits.len(), n * classes)?;
    check_len(k, "labels", labels.len(), n)?;
    check_len(k, "loss_acc", loss_acc.len(), 1)?;
    check_len(k, "correct_acc", correct_acc.len(), 1)?;
    to_int(k, "N*K", n * classes)?;
    let (n_i, k_i) = (to_int(k, "n", n)?, to_int(k, "classes", classes)?);
    match dlogits {
        Some(dlogits) => {
            check_len(k, "dlogits", dlogits.len(), n * classes)?;
            launch!(kernel, gpu, xent_config(); logits, labels, dlogits, loss_acc, correct_acc,
                n_i, k_i)
        }
        None => launch!(kernel, gpu, xent_config(); logits, labels, loss_acc, correct_acc, n_i,
            k_i),
    }
}
