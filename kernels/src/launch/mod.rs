//! Typed launchers: one function per kernel family, validating every buffer length against the
//! shape before anything is queued (an out-of-bounds GPU write is silent corruption, so a wrong
//! length is an `Err` here, never a launch).
//!
//! **Compiled, not yet proven on a GPU.** Grid/block sizing and argument lists follow the comments
//! in `kernels/cuda/*.cu`; the argument list of every `launch!` in this module is checked against
//! the kernel's C signature by a host-only test (`signature::tests`), but no launcher has been run
//! on a device yet.
//!
//! Conventions: inputs are `&CudaView<T>`, outputs `&mut CudaViewMut<T>` (call `.as_view()` /
//! `.as_view_mut()` on a `CudaSlice`, or slice a flat parameter buffer). Everything is enqueued
//! on [`Gpu::stream`](crate::Gpu::stream); nothing synchronises. `beta` arguments: `0.0`
//! overwrites the output (which is then never read, so it may be uninitialised), `1.0`
//! accumulates into it.

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};

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
fn to_int(kernel: &'static str, what: &str, v: usize) -> Result<i32> {
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

fn check_len(kernel: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            kernel,
            format!("{what} has {got} elements, expected {want}"),
        ))
    }
}

fn check_positive(kernel: &'static str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((what, _)) => Err(KernelError::invalid(kernel, format!("{what} must be > 0"))),
        None => Ok(()),
    }
}

// Type witnesses: make the Rust type of each `launch!` argument match its tag, so the tag list
// (checked against the .cu signature by a test) really describes what is pushed.
fn f32_in<'a, 'b>(v: &'a CudaView<'b, f32>) -> &'a CudaView<'b, f32> {
    v
}
fn f32_out<'a, 'b>(v: &'a mut CudaViewMut<'b, f32>) -> &'a mut CudaViewMut<'b, f32> {
    v
}
fn f64_out<'a, 'b>(v: &'a mut CudaViewMut<'b, f64>) -> &'a mut CudaViewMut<'b, f64> {
    v
}
fn i32_in<'a, 'b>(v: &'a CudaView<'b, i32>) -> &'a CudaView<'b, i32> {
    v
}
fn i32_out<'a, 'b>(v: &'a mut CudaViewMut<'b, i32>) -> &'a mut CudaViewMut<'b, i32> {
    v
}
fn u8_in<'a, 'b>(v: &'a CudaView<'b, u8>) -> &'a CudaView<'b, u8> {
    v
}
fn u64_in<'a, 'b>(v: &'a CudaView<'b, u64>) -> &'a CudaView<'b, u64> {
    v
}
fn i32_val(v: &i32) -> &i32 {
    v
}
fn f32_val(v: &f32) -> &f32 {
    v
}

/// `launch!(gpu, "kernel", cfg, [tag arg, ...])` packs each argument in order into the kernel's
/// parameter buffer and launches ([`params`]). Tags: `f32_in f32_out f64_out i32_in i32_out u8_in
/// u64_in` (device pointers; `_in` = `const T*`, `_out` = `T*`) and `i32 f32` (scalars). The
/// test in `signature.rs` parses these invocations from the text of the files in `launch/`, and
/// the driver checks the buffer's size against the kernel's signature.
macro_rules! launch {
    ($gpu:expr, $name:literal, $cfg:expr, [$($tag:ident $arg:ident),* $(,)?]) => {{
        let gpu: &Gpu = $gpu;
        let mut params = $crate::launch::params::ParamBuffer::new();
        $( launch!(@push gpu, params, $tag, $arg); )*
        // The argument list matches the kernel's C signature (tags checked against the .cu
        // source by `signature::tests::launchers_match_kernel_signatures`), and every buffer
        // length was validated against the shape by the caller.
        gpu.launch_packed($name, $cfg, &params)
    }};
    (@push $g:ident, $p:ident, f32_in, $a:ident) => { $p.push($g.addr_of_view(f32_in($a))) };
    (@push $g:ident, $p:ident, f32_out, $a:ident) => { $p.push($g.addr_of_view_mut(f32_out($a))) };
    (@push $g:ident, $p:ident, f64_out, $a:ident) => { $p.push($g.addr_of_view_mut(f64_out($a))) };
    (@push $g:ident, $p:ident, i32_in, $a:ident) => { $p.push($g.addr_of_view(i32_in($a))) };
    (@push $g:ident, $p:ident, i32_out, $a:ident) => { $p.push($g.addr_of_view_mut(i32_out($a))) };
    (@push $g:ident, $p:ident, u8_in, $a:ident) => { $p.push($g.addr_of_view(u8_in($a))) };
    (@push $g:ident, $p:ident, u64_in, $a:ident) => { $p.push($g.addr_of_view(u64_in($a))) };
    (@push $g:ident, $p:ident, i32, $a:ident) => { $p.push(*i32_val(&$a)) };
    (@push $g:ident, $p:ident, f32, $a:ident) => { $p.push(*f32_val(&$a)) };
}

// One module per op family, mirroring `kernels/cuda/*.cu`; everything public is re-exported
// here, so callers keep using `kernels::launch::X`. Declared after `launch!` so the macro is in
// scope in each of them.
mod augment;
mod batchnorm;
mod conv;
mod conv_plan;
mod elementwise;
mod loss;
mod param_buffer;
pub mod params;
mod peak;
mod pool_fc;
mod sgd;
mod shortcut;

pub use augment::{augment_batch, Normalize};
pub use batchnorm::{
    batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, BnParams, BnShape,
    BN_CHUNK, BN_PER_THREAD, BN_THREADS,
};
pub use conv::{conv2d_backward_data, conv2d_backward_weight, conv2d_forward};
pub use conv_plan::{
    conv2d_backward_data_config, conv2d_backward_weight_config, conv2d_forward_config, ConvShape,
    ConvTile, CONV_BF16_THREADS, CONV_THREADS, CONV_TILE_K, CONV_TILE_M, CONV_TILE_N, FILL_BLOCKS,
    MIN_SPLIT_K,
};
pub use elementwise::{accumulate, add_forward, add_relu_forward, relu_backward, relu_forward};
pub use loss::{softmax_xent_forward, softmax_xent_forward_backward, XENT_THREADS};
pub use peak::{
    peak_fma_f32, peak_fma_f32_flops, peak_mma_bf16, peak_mma_bf16_flops, PEAK_CHAINS, PEAK_THREADS,
};
pub use pool_fc::{
    avgpool_backward, avgpool_forward, linear_backward_data, linear_backward_weight,
    linear_forward, LinearShape,
};
pub use sgd::{
    sgd_step, sgd_step_tensors, zero_tensors, SgdSegments, SgdTable, SgdTensorTable, ZeroTable,
};
pub use shortcut::{shortcut_backward, shortcut_forward, ShortcutShape};

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
