//! The launch machinery every launcher is built on (the launchers themselves live with their
//! ops, in the `tensor` crate):
//!
//! * a kernel is named by data: a [`Kernel`] (its name and the kinds of its C parameters), or a
//!   [`KernelTable`] of variants that share one C signature, each selected by a tag (the conv
//!   kernels by precision and tile), so that a launch site is one call whatever the variant;
//! * [`Kernel::launch`] packs the arguments into the kernel's parameter buffer ([`Launch`]),
//!   refusing any whose Rust type is not the kind the kernel's entry says, and queues it on
//!   [`Gpu::stream`](crate::Gpu::stream); nothing synchronises;
//! * the entries themselves are held to the `.cu` sources by [`crate::signature::check`], so every
//!   variant is checked against its C signature, GPU or not;
//! * the checks every launcher makes before it queues anything: lengths ([`check_len`]),
//!   non-zero dimensions ([`check_positive`]) and the kernels' 32-bit index range ([`to_int`],
//!   [`MAX_LEN`]). An out-of-bounds GPU write is silent corruption, so a wrong length is an
//!   `Err`, never a launch.
//!
//! Launcher conventions: inputs are `&CudaView<T>`, outputs `&mut CudaViewMut<T>` (call
//! `.as_view()` / `.as_view_mut()` on a `CudaSlice`, or slice a flat parameter buffer). `beta`
//! arguments: `0.0` overwrites the output (which is then never read, so it may be
//! uninitialised), `1.0` accumulates into it.

/// A launch's grid, block and shared memory (cudarc's).
pub use cudarc::driver::LaunchConfig;

use crate::error::{KernelError, Result};

/// Threads per block for the 1-D grid-stride kernels.
pub const BLOCK_1D: u32 = 256;
/// Grid cap for 1-D grid-stride kernels (they loop, so any grid size is correct).
pub const MAX_GRID_1D: u32 = 65_535;

/// Launch configuration for a 1-D grid-stride kernel over `n` elements.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK_1D as usize).clamp(1, MAX_GRID_1D as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The most any count a kernel indexes with `int` may be: 2^31 − 2^24 = 2,130,706,432. Every
/// launcher checks every length and dimension it passes against it ([`to_int`]), and it leaves
/// the margin the kernels' own index arithmetic needs below `INT_MAX`: a grid-stride loop
/// `for (int i = ..; i < n; i += gridDim.x * blockDim.x)` computes indices up to n − 1 + its
/// stride, at most [`MAX_GRID_1D`] × [`BLOCK_1D`] < 2^24 (with n = `INT_MAX`, as the launchers
/// used to allow, the last step wrapped to a negative index); the conv tiles step up to one
/// tile (≤ 256 columns, 32 k) past their GEMM's edge, and BatchNorm's chunks up to 4095 values
/// past a channel's end.
///
/// Refusing, rather than indexing in 64 bits, for speed: the kernels decode indices with
/// integer division and modulo (shortcut, augment, BN eval, pooling; the conv tiles' pixel
/// decode divides by multiply-high on 32-bit operands, `conv_ops.cuh`'s `FastDiv`), and a
/// 64-bit division is a software routine several times the cost of a 32-bit one on NVIDIA
/// GPUs, while 64-bit indices take two registers each in kernels kept free of spills. The
/// project's tensors are far below the limit (the largest, a ResNet-34 width-64 activation at
/// batch 128, has 8.4M elements), and one rule checked in one place is clearer than widened
/// arithmetic in every kernel.
pub const MAX_LEN: usize = (1 << 31) - (1 << 24);
const _: () = assert!(MAX_GRID_1D as usize * BLOCK_1D as usize <= (1 << 31) - MAX_LEN);

/// `v` as the kernels' `int`, refused past [`MAX_LEN`] (not merely past `i32::MAX`).
pub fn to_int(kernel: &'static str, what: &str, v: usize) -> Result<i32> {
    if v > MAX_LEN {
        return Err(KernelError::invalid(
            kernel,
            format!(
                "{what} = {v} is past the kernels' 32-bit index range (at most {MAX_LEN} = \
                 2^31 - 2^24, so that no index a kernel computes passes INT_MAX)"
            ),
        ));
    }
    Ok(v as i32)
}

/// `Err` naming `what` unless it has exactly `want` elements.
pub fn check_len(kernel: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            kernel,
            format!("{what} has {got} elements, expected {want}"),
        ))
    }
}

/// `Err` naming the first of `dims` that is zero.
pub fn check_positive(kernel: &'static str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((what, _)) => Err(KernelError::invalid(kernel, format!("{what} must be > 0"))),
        None => Ok(()),
    }
}

mod params;
mod table;

pub use kernel_abi::{Elem, Param, ParamBuffer};
pub use table::{arg, DeviceElem, Kernel, KernelArg, KernelTable, Launch};

#[cfg(test)]
mod tests {
    use super::*;

    /// The last index a grid-stride loop over `n` computes with `grid_1d(n)`'s grid (the first
    /// value past `n - 1` of the thread whose sequence reaches furthest), in 64 bits.
    fn last_loop_index(n: usize) -> i64 {
        let cfg = grid_1d(n);
        let stride = i64::from(cfg.grid_dim.0) * i64::from(cfg.block_dim.0);
        let n = n as i64;
        // Thread g steps g, g + stride, ...: its last index is the first one >= n.
        let last = |g: i64| g + ((n - g).max(0) + stride - 1) / stride * stride;
        let closed_form = (n - 1) + stride; // thread (n - 1) % stride, the worst
        let brute = [0, 1, (n - 1) % stride, stride - 1]
            .into_iter()
            .map(last)
            .max()
            .unwrap();
        assert_eq!(brute, closed_form);
        closed_form
    }

    #[test]
    fn counts_up_to_max_len_keep_every_grid_stride_index_within_int() {
        // At the boundary: accepted, and the loop's last index still fits in int.
        assert_eq!(to_int("k", "n", MAX_LEN).unwrap() as usize, MAX_LEN);
        assert!(last_loop_index(MAX_LEN) <= i64::from(i32::MAX));
        assert!(last_loop_index(MAX_LEN - 1) <= i64::from(i32::MAX));
        // One past it: refused, naming the count and the limit.
        let err = to_int("relu_forward", "n", MAX_LEN + 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("relu_forward") && err.contains("2130706433") && err.contains("2^31"),
            "{err}"
        );
        // What the launchers accepted before (any count up to i32::MAX) wrapped: the last step
        // of the loop passed INT_MAX.
        assert!(last_loop_index(i32::MAX as usize) > i64::from(i32::MAX));
        assert!(to_int("k", "n", i32::MAX as usize).is_err());
        // The margin must be a whole grid stride: one count more than 2^31 - stride wraps.
        let stride = MAX_GRID_1D as usize * BLOCK_1D as usize;
        assert!(last_loop_index((1 << 31) - stride + 1) > i64::from(i32::MAX));
    }

    #[test]
    fn grid_1d_caps_and_covers() {
        assert_eq!(grid_1d(0).grid_dim.0, 1);
        assert_eq!(grid_1d(1).grid_dim.0, 1);
        assert_eq!(grid_1d(257).grid_dim.0, 2);
        assert_eq!(grid_1d(usize::MAX / 2).grid_dim.0, MAX_GRID_1D);
    }
}
