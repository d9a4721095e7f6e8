//! The fast CPU convolution: the input read in place from padded copies, or im2col'd where it
//! cannot be (`pack.rs`, `plan.rs`), on the AVX-512 micro-kernels of `crate::gemm` (fp32 and
//! `vdpbf16ps`) and this folder's channels-last weight gradient (`wgrad.rs`), image by image
//! or in fixed groups of images; `x86.rs` holds the three passes.
//! - forward: `y_i = W · col(x_i)`;
//! - input gradient, stride 1: the forward conv of `dy` with the turned weights
//!   (`W'[ci][co][ky][kx] = W[co][ci][k-1-ky][k-1-kx]`), so it gathers instead of scattering;
//!   stride 2: `col2im(Wᵀ · dy_i)`;
//! - weight gradient: `dW += Σ_i dy_i · col(x_i)ᵀ` over fixed groups of images, the groups'
//!   sums added in order: from a channels-last copy of the input where the input channels come
//!   in whole vectors (bf16: two images per lane), else lane-sum tiles over im2col rows.
//!
//! Each function returns `None` (or `false`) when the CPU lacks the instructions, and the
//! caller runs the reference.

// Off x86-64 the fast bodies compile out, leaving their helpers unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use crate::cpu::{kernels, Kernels};
use crate::{Precision, Tensor};

/// Whether the fast path runs `precision` with the kernels in use.
pub fn available(precision: Precision) -> bool {
    usable(kernels(), precision)
}

fn usable(k: Kernels, precision: Precision) -> bool {
    match precision {
        Precision::Fp32 => k >= Kernels::Avx512,
        Precision::Bf16 => k >= Kernels::Avx512Bf16,
    }
}

/// The shapes the fast path takes: strides 1 and 2 (every ResNet convolution).
fn fits(stride: usize) -> bool {
    stride == 1 || stride == 2
}

/// `y = conv(x, weight)`, or `None` without the instructions.
pub fn forward(x: &Tensor, weight: &Tensor, stride: usize, precision: Precision) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if available(precision) && fits(stride) {
        // SAFETY: the instructions were detected.
        return Some(unsafe { x86::forward(x, weight, stride, precision) });
    }
    let _ = (x, weight, stride);
    None
}

/// The input gradient of `y = conv(x, weight)`, or `None` without the instructions.
pub fn backward_data(
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
    precision: Precision,
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if available(precision) && fits(stride) {
        // SAFETY: the instructions were detected.
        return Some(unsafe { x86::backward_data(dy, weight, x_shape, stride, precision) });
    }
    let _ = (dy, weight, x_shape, stride);
    None
}

/// Accumulates the weight gradient of `y = conv(x, weight)` into `dweight`; `false` (nothing
/// done) without the instructions.
pub fn backward_weight(
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if available(precision) && fits(stride) {
        // SAFETY: the instructions were detected.
        unsafe { x86::backward_weight(x, dy, stride, dweight, precision) };
        return true;
    }
    let _ = (x, dy, stride, dweight);
    false
}

#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(target_arch = "x86_64")]
mod plan;
#[cfg(target_arch = "x86_64")]
mod wgrad;
#[cfg(target_arch = "x86_64")]
mod x86;
