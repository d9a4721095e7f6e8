//! Running out of GPU memory inside an op, as a value the caller can report.
//!
//! Ops keep their infallible signatures, so a GPU failure inside one panics (see the crate
//! docs). When the driver says `CUDA_ERROR_OUT_OF_MEMORY` the panic carries a typed payload,
//! [`OutOfMemory`], instead of a message: a command line wraps its GPU work in [`catch`] and
//! turns it into an error naming the model and batch size, and installs
//! [`install_quiet_panic_hook`] so that the panic itself prints nothing. Every other panic
//! passes through [`catch`] unchanged.

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
}

impl OutOfMemory {
    /// `Some` when `e` is the driver's out-of-memory error, with `op` as the step.
    pub fn from_kernel_error(op: &str, e: &kernels::KernelError) -> Option<OutOfMemory> {
        e.is_out_of_memory().then(|| OutOfMemory {
            op: op.to_string(),
            detail: e.brief(),
        })
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

/// Runs `f`; an [`OutOfMemory`] panic inside it becomes `Err`. Any other panic is re-raised
/// unchanged (with `resume_unwind`, so the panic hook does not run a second time).
///
/// `f` is treated as unwind-safe: after an `Err`, whatever `f` was changing (a model half way
/// through a step) must be considered garbage; the caller reports the error and stops.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, OutOfMemory> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => match payload.downcast::<OutOfMemory>() {
            Ok(oom) => Err(*oom),
            Err(other) => panic::resume_unwind(other),
        },
    }
}

/// Installs (once per process) a panic hook that prints nothing for an [`OutOfMemory`]
/// payload, which [`catch`] turns into an error for the user, and defers to the previous hook
/// (the default: `thread '…' panicked at …`) for every other panic.
pub fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<OutOfMemory>().is_none() {
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
        let oom = r.expect_err("check should have raised OutOfMemory");
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
        // A non-OOM driver failure stays the usual panic naming the op.
        let r = panic::catch_unwind(|| {
            catch(|| {
                crate::check(
                    "relu_forward",
                    Err::<(), _>(KernelError::invalid("relu_forward", "bad length")),
                )
            })
        });
        let payload = r.expect_err("a non-OOM GPU failure must panic through");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(msg.contains("relu_forward on the GPU failed"), "{msg}");
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
