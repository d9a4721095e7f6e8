//! The GEMM layer under the ops: matrix products and the vector helpers they are built from,
//! shared by every op that needs them, and knowing nothing of any op.
//!
//! - [`gemm`] / [`Mat`] (`strided.rs`): single-threaded f32 GEMM on strided matrices (the `gemm`
//!   crate), portable; the reference convolution and the linear layer run on it.
//! - `fp32.rs`, `bf16.rs` (x86-64): the CPU fast path's micro-kernels, AVX-512 fp32 and
//!   AVX512-BF16 `vdpbf16ps`, both reading their B operand through a table of offsets (so a
//!   convolution can feed them its padded image in place); the conv fast path
//!   (`crate::conv::fast`) packs operands and plans walks for them.
//! - `simd.rs` (x86-64): the AVX-512 vector helpers (masked loads and stores, the ragged end of
//!   a loop) that the micro-kernels and the fused batch norm and elementwise passes share.
//! - `avx2_f32.rs` (x86-64): fp32 micro-kernels on AVX2 + FMA, for CPUs without AVX-512 (the
//!   conv fast path packs their operands in `conv/fast/pack_avx2.rs`, optionally rounding to
//!   bf16).
//! - `amx/` (x86-64): bf16 on AMX tiles (`TDPBF16PS`), the tile logic behind a few tile
//!   operations with a plain-Rust model of each, so that every machine tests it.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_f32;
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16;
#[cfg(target_arch = "x86_64")]
pub(crate) mod fp32;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
mod strided;

pub(crate) use strided::{gemm, Mat};
