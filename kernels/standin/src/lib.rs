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
//! every ordering the API promises; timing means nothing here.
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod api_device;
mod api_memory;
mod api_stream;
pub mod config;
pub mod driver;
mod exec;
mod launch;
pub mod memory;
pub mod module;
pub mod props;
pub mod status;

pub use api_device::*;
pub use api_memory::*;
pub use api_stream::*;

use status::*;

/// Defines exported driver entry points: each body returns `Result<(), CUresult>`; a panic
/// inside becomes `CUDA_ERROR_UNKNOWN` (never an unwind into C).
#[macro_export]
#[doc(hidden)]
macro_rules! entry {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block)*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $crate::status::CUresult {
                $crate::guard(stringify!($name), || -> Result<(), $crate::status::CUresult> { $body })
            }
        )*
    };
}

/// Runs an entry point's body, turning its result (or a panic) into a `CUresult`.
pub fn guard(name: &str, f: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => {
            eprintln!("cuda-standin: internal error (panic) in {name}");
            CUDA_ERROR_UNKNOWN
        }
    }
}

/// Writes an out-parameter; a null pointer is `CUDA_ERROR_INVALID_VALUE`, as in the driver.
///
/// # Safety
/// A non-null `p` must be writable (the entry point's caller's contract).
pub unsafe fn out<T>(p: *mut T, v: T) -> Result<(), CUresult> {
    if p.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null, and the API contract makes it writable.
    unsafe { p.write(v) };
    Ok(())
}

/// `bytes` for people.
pub fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

/// Marks this library as the stand-in (the project's probe checks for it before trusting a
/// library named by `RESNET_CUDA_STANDIN`).
#[no_mangle]
pub extern "C" fn cuda_standin_version() -> u32 {
    1
}
