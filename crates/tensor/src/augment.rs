//! The GPU batch maker's kernel (`augment.cu`): a batch cropped, flipped and normalised from
//! the uint8 images resident on the device, its labels gathered beside it. Its CPU twin is the
//! data crate's `write_sample`; the training loop adopts the result as a [`crate::Tensor`]
//! ([`crate::Tensor::from_cuda`]).

use kernels::launch::{arg::*, check_len, check_positive, grid_1d, to_int, Kernel};
use kernels::{launch, CudaView, CudaViewMut, Gpu, KernelError, Result};

const AUGMENT: Kernel = Kernel::new(
    "augment_batch",
    &[
        U8_IN, U8_IN, I32_IN, F32_OUT, I32_OUT, I32, I32, I32, F32, F32, F32, F32, F32, F32,
    ],
);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 1] = [AUGMENT];

/// Per-channel normalisation constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Mean per channel (of pixel/255).
    pub mean: [f32; 3],
    /// Standard deviation per channel.
    pub std: [f32; 3],
}

/// Builds an augmented, normalised batch on the device. `images`: u8 [Ndata, 3, h, w];
/// `labels`: u8 [Ndata]; `params`: i32 [batch, 4] = (index, ox, oy, flip) per sample — the host
/// must keep index < Ndata (not checked on the device). Writes `out` f32 [batch, 3, h, w] and
/// `out_labels` i32 [batch]. CPU twin: the data crate's batch builder (crop + flip + normalise).
#[allow(clippy::too_many_arguments)]
pub fn augment_batch(
    gpu: &Gpu,
    images: &CudaView<'_, u8>,
    labels: &CudaView<'_, u8>,
    params: &CudaView<'_, i32>,
    out: &mut CudaViewMut<'_, f32>,
    out_labels: &mut CudaViewMut<'_, i32>,
    (batch, h, w): (usize, usize, usize),
    norm: &Normalize,
) -> Result<()> {
    const K: &str = "augment_batch";
    check_positive(K, &[("batch", batch), ("h", h), ("w", w)])?;
    let img = 3 * h * w;
    if images.len() % img != 0 || images.is_empty() {
        return Err(KernelError::invalid(
            K,
            format!(
                "images has {} bytes, not a positive multiple of 3*{h}*{w}",
                images.len()
            ),
        ));
    }
    check_len(K, "labels", labels.len(), images.len() / img)?;
    check_len(K, "params", params.len(), 4 * batch)?;
    check_len(K, "out", out.len(), batch * img)?;
    check_len(K, "out_labels", out_labels.len(), batch)?;
    let total = batch * img;
    to_int(K, "batch*3*h*w", total)?;
    to_int(K, "params (4*batch)", 4 * batch)?; // the kernel reads params[4 * b + 3]
    let (b, hh, ww) = (
        to_int(K, "batch", batch)?,
        to_int(K, "h", h)?,
        to_int(K, "w", w)?,
    );
    if norm.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
        return Err(KernelError::invalid(K, "std must be finite and non-zero"));
    }
    let [m0, m1, m2] = norm.mean;
    let [s0, s1, s2] = norm.std;
    launch!(AUGMENT, gpu, grid_1d(total); images, labels, params, out, out_labels, b, hh, ww,
        m0, m1, m2, s0, s1, s2)
}
