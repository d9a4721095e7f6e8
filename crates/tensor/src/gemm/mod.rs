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

#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16;
#[cfg(target_arch = "x86_64")]
pub(crate) mod fp32;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
mod strided;

pub(crate) use strided::{gemm, Mat};
