//! `cuda-standin`: a stand-in for the CUDA driver library (`libcuda.so`) that runs the project's
//! real GPU host code — cudarc, contexts, streams, allocation, module loading, typed launches,
//! CUDA-graph capture and replay, the out-of-memory path — against the kernels of
//! `kernels/cuda`, executed by the CPU emulator (`kernels/emu`).
//!
//! It is loaded only when asked for: `RESNET_CUDA_STANDIN=/path/to/libcuda_standin.so` makes the
//! project's driver probe (`kernels::probe`) load it before cudarc looks for `libcuda.so` (its
//! SONAME is `libcuda.so`, so the loader hands cudarc this copy). `scripts/emulated-gpu.sh CMD`
//! builds it and runs CMD that way.
//!
//! Modules come from the real nvrtc; a launch runs the kernel of that name from the emulator's
//! table with the launch's grid, block and parameter buffer. Where the project could be wrong
//! it is as strict as a real driver, and says what went wrong on stderr:
//!
//! * launches: parameter buffers checked against the kernel's C signature, block and grid
//!   limits, `__launch_bounds__`, registers, shared memory ([`launch`]);
//! * memory: every kernel access bounds-checked against live allocations (freed memory,
//!   out of bounds, misaligned), with compute-sanitizer-style reports; double frees; a device
//!   size (`CUDA_STANDIN_MEMORY`) and `CUDA_ERROR_OUT_OF_MEMORY` ([`memory`]);
//! * capture: the calls CUDA forbids while capturing fail and invalidate the capture; replays
//!   run exactly the captured work ([`api_stream`]);
//! * faults are sticky, as on a GPU: every later call returns the same error;
//! * fault injection: `CUDA_STANDIN_FAIL=launch:N|alloc:N|copy:N` ([`config`]);
//! * an H100's properties (sm_90, 132 SMs, 228 KiB shared memory per SM, ...) ([`props`]).
//!
//! Execution is eager: work runs when queued (one device, in-order streams), which preserves
//! every ordering the API promises; timing means nothing here. What the host sees is not: a
//! device-to-host copy lands in host memory only at a synchronisation that covers it, its
//! destination reading NaN until then (`CUDA_STANDIN_EAGER_COPIES=1` turns that off), so a read
//! before synchronising is caught ([`config`]).
#![allow(non_snake_case, clippy::missing_safety_doc)]

// Modules import downward only (a test checks there is no import circle): `status`, `config`,
// `props`, `ffi`, `inflight`, `memory`, `module` and `ops` at the bottom; `driver` holds the
// state; `exec` queues and runs work, `sync` lands what a synchronisation completes, `launch`
// validates launches; the `api_*` modules are the exported entry points on top
// (kernels/standin/tests/modules.rs).
mod api_device;
mod api_memory;
mod api_stream;
pub mod config;
pub mod driver;
mod exec;
mod ffi;
mod inflight;
mod launch;
pub mod memory;
pub mod module;
mod ops;
pub mod props;
pub mod status;
mod sync;

pub use api_device::*;
pub use api_memory::*;
pub use api_stream::*;

/// Marks this library as the stand-in (the project's probe checks for it before trusting a
/// library named by `RESNET_CUDA_STANDIN`).
#[no_mangle]
pub extern "C" fn cuda_standin_version() -> u32 {
    1
}
