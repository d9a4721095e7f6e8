//! How arguments reach a CUDA kernel, in plain std so that every side that launches kernels
//! agrees on it: the runtime (`kernels`, real launches through `cuLaunchKernel`), the emulator
//! (`kernels-emu`, whose build script generates its kernel table and typed wrappers from the
//! same parse) and the stand-in driver that runs one on the other.
//!
//! * [`ParamBuffer`]: a kernel's parameters packed as CUDA lays them out.
//! * [`signature`]: the kinds of a kernel's parameters ([`Param`]), parsed from the
//!   `extern "C" __global__` heads of the CUDA sources.

mod param_buffer;
pub mod signature;

pub use param_buffer::ParamBuffer;
pub use signature::{parse_kernels, strip_comments, Elem, KernelSignature, Param};
