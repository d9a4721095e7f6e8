//! A GPU failure inside an op, as a value the caller can report.
//!
//! Ops keep their infallible signatures, so a GPU failure inside one panics (see the crate
//! docs), with a typed payload instead of a message: [`OutOfMemory`] when the driver says
//! `CUDA_ERROR_OUT_OF_MEMORY`, [`GpuFailure`] for anything else (a kernel fault, which loses
//! the context, names the kernel). A command line wraps its GPU work in [`catch`] and turns
//! either into an error naming the model and batch size, and installs
//! [`install_quiet_panic_hook`] so that the panic itself prints nothing. Every other panic
//! passes through [`catch`] unchanged.
//!
//! Host memory is the same story: Rust's infallible allocation aborts the process when the
//! allocator refuses (`memory allocation of N bytes failed`, exit 134). Host tensors are
//! allocated through [`host_zeros`] / [`host_vec`] instead, which raise the same typed
//! payload (with `host: true`), so an allocation larger than the machine can give ends in an
//! error like a full GPU does.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// The GPU ran out of memory in `op`. Raised with `std::panic::panic_any` by the ops; caught by
/// [`catch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// The op (or the step) that could not allocate, e.g. `conv2d_forward`.
    pub op: String,
    /// What the driver said and what was being done, e.g. `CUDA_ERROR_OUT_OF_MEMORY while
    /// allocating 1.00 GiB of device memory`.
    pub detail: String,
    /// Host memory ran out (a refused allocation), not the GPU's.
    pub host: bool,
}

impl OutOfMemory {
    /// `Some` when `e` is the driver's out-of-memory error, with `op` as the step.
    pub fn from_kernel_error(op: &str, e: &kernels::KernelError) -> Option<OutOfMemory> {
        e.is_out_of_memory().then(|| OutOfMemory {
            op: op.to_string(),
            detail: e.brief(),
            host: false,
        })
    }

    /// The host allocator refused `bytes` for `op`.
    pub fn host(op: &str, bytes: usize) -> OutOfMemory {
        OutOfMemory {
            op: op.to_string(),
            detail: format!(
                "the host allocator refused {:.2} GiB",
                bytes as f64 / (1u64 << 30) as f64
            ),
            host: true,
        }
    }

    /// Raises `self` as a panic with this typed payload (what the ops do).
    pub fn raise(self) -> ! {
        panic::panic_any(self)
    }
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} could not allocate ({})", self.op, self.detail)
    }
}

impl std::error::Error for OutOfMemory {}

/// Any other GPU failure in `op`: the driver's error, e.g. a kernel fault (`GPU fault in
/// kernel `conv2d_forward`: CUDA_ERROR_ILLEGAL_ADDRESS ...`). Raised like [`OutOfMemory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuFailure {
    /// The op that noticed, e.g. `batchnorm_forward`.
    pub op: String,
    /// The error, as `kernels::KernelError` describes it.
    pub message: String,
}

impl GpuFailure {
    /// Raises `self` as a panic with this typed payload.
    pub fn raise(self) -> ! {
        panic::panic_any(self)
    }
}

impl fmt::Display for GpuFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on the GPU failed: {}", self.op, self.message)
    }
}

impl std::error::Error for GpuFailure {}

/// What [`catch`] caught.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caught {
    OutOfMemory(OutOfMemory),
    Failed(GpuFailure),
}

/// Runs `f`; an [`OutOfMemory`] or [`GpuFailure`] panic inside it becomes `Err`. Any other
/// panic is re-raised unchanged (with `resume_unwind`, so the panic hook does not run a second
/// time).
///
/// `f` is treated as unwind-safe: after an `Err`, whatever `f` was changing (a model half way
/// through a step) must be considered garbage; the caller reports the error and stops.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Caught> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => match payload.downcast::<OutOfMemory>() {
            Ok(oom) => Err(Caught::OutOfMemory(*oom)),
            Err(other) => match other.downcast::<GpuFailure>() {
                Ok(failure) => Err(Caught::Failed(*failure)),
                Err(other) => panic::resume_unwind(other),
            },
        },
    }
}

/// `n` zeros in host memory, allocated fallibly (zeroed pages from the allocator, as
/// `vec![0.0; n]`): a refusal raises [`OutOfMemory::host`] naming `op` instead of aborting.
#[track_caller]
pub fn host_zeros(op: &str, n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let refused = || OutOfMemory::host(op, n.saturating_mul(4));
    let layout = std::alloc::Layout::array::<f32>(n).unwrap_or_else(|_| refused().raise());
    // SAFETY: `layout` has a non-zero size (n > 0). A non-null result is a zeroed block of
    // `n` f32s from the global allocator with exactly this layout, which is what
    // `Vec::from_raw_parts` requires (capacity n, length n, all values initialised: 0.0 is
    // all-zero bits).
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if ptr.is_null() {
            refused().raise()
        }
        Vec::from_raw_parts(ptr, n, n)
    }
}

/// `n` copies of `value` in host memory, allocated fallibly like [`host_zeros`].
#[track_caller]
pub fn host_vec<T: Clone>(op: &str, n: usize, value: T) -> Vec<T> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        OutOfMemory::host(op, n.saturating_mul(std::mem::size_of::<T>())).raise()
    }
    v.resize(n, value);
    v
}

/// Installs (once per process) a panic hook that prints nothing for an [`OutOfMemory`] or
/// [`GpuFailure`] payload, which [`catch`] turns into an error for the user, and defers to the
/// previous hook (the default: `thread '…' panicked at …`) for every other panic.
pub fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            if !p.is::<OutOfMemory>() && !p.is::<GpuFailure>() {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::{CUresult, DriverError, KernelError};

    fn fabricated(code: CUresult) -> kernels::Result<()> {
        Err(KernelError::driver(
            "allocating 2.00 GiB of device memory",
            DriverError(code),
        ))
    }

    #[test]
    fn an_out_of_memory_failure_in_an_op_is_caught_as_a_value() {
        install_quiet_panic_hook();
        let r = catch(|| {
            crate::check(
                "conv2d_forward",
                fabricated(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
            )
        });
        let Err(Caught::OutOfMemory(oom)) = r else {
            panic!("check should have raised OutOfMemory: {r:?}");
        };
        assert_eq!(oom.op, "conv2d_forward");
        assert_eq!(
            oom.detail,
            "CUDA_ERROR_OUT_OF_MEMORY while allocating 2.00 GiB of device memory"
        );
        assert_eq!(
            oom.to_string(),
            "conv2d_forward could not allocate (CUDA_ERROR_OUT_OF_MEMORY while allocating 2.00 GiB of device memory)"
        );
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn other_panics_pass_through_unchanged() {
        let n = std::hint::black_box(42);
        let r = panic::catch_unwind(|| catch(|| -> () { panic!("boom {n}") }));
        let payload = r.expect_err("a non-OOM panic must not be swallowed");
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("boom 42")
        );
        let r = panic::catch_unwind(|| catch(|| std::panic::panic_any(7u8)));
        let payload = r.expect_err("any payload passes through");
        assert_eq!(payload.downcast_ref::<u8>(), Some(&7));
        // A GPU failure other than OOM is caught too, as a value naming the op and the error.
        install_quiet_panic_hook();
        let r = catch(|| {
            crate::check(
                "relu_forward",
                Err::<(), _>(KernelError::invalid("relu_forward", "bad length")),
            )
        });
        let Err(Caught::Failed(failure)) = r else {
            panic!("a GPU failure must be caught: {r:?}");
        };
        assert_eq!(failure.op, "relu_forward");
        assert!(failure.message.contains("bad length"), "{failure}");
        assert!(
            failure
                .to_string()
                .starts_with("relu_forward on the GPU failed: "),
            "{failure}"
        );
    }

    #[test]
    fn a_refused_host_allocation_is_caught_as_a_value_not_an_abort() {
        install_quiet_panic_hook();
        // More than any address space holds: the allocator must refuse.
        let huge = usize::MAX / 8;
        fn oom<T>(r: Result<T, Caught>) -> OutOfMemory {
            match r {
                Err(Caught::OutOfMemory(oom)) => oom,
                Err(other) => panic!("expected a refused allocation: {other:?}"),
                Ok(_) => panic!("expected a refused allocation"),
            }
        }
        let o = oom(catch(|| host_zeros("activations", huge)));
        assert!(o.host && o.op == "activations", "{o:?}");
        assert!(o.detail.contains("host allocator refused"), "{o}");
        let o = oom(catch(|| host_vec("weights", huge, 1.5f32)));
        assert!(o.host && o.op == "weights", "{o:?}");
        let o = oom(catch(|| crate::Tensor::zeros(&[1 << 40, 1 << 20])));
        assert!(o.host, "{o:?}");
        // Ordinary sizes are plain buffers.
        assert_eq!(host_zeros("x", 3), vec![0.0; 3]);
        assert!(host_zeros("x", 0).is_empty());
        assert_eq!(host_vec("x", 2, 7u8), vec![7, 7]);
        assert_eq!(crate::Tensor::full(&[2], 0.5).data(), &[0.5, 0.5]);
    }

    #[test]
    fn out_of_memory_is_recognised_in_device_errors() {
        let e = KernelError::driver("x", DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        let oom = OutOfMemory::from_kernel_error("moving the model", &e).unwrap();
        assert_eq!(oom.op, "moving the model");
        let e = KernelError::driver("x", DriverError(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert!(OutOfMemory::from_kernel_error("y", &e).is_none());
        let te = crate::Error::Cuda(KernelError::driver(
            "x",
            DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        ));
        assert!(te.is_out_of_memory());
    }
}
