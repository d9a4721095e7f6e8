//! Error type for everything on the GPU path: no `unwrap`, no panic reaches the caller.

use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;

/// Result alias used across the crate.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// What can go wrong between "is there a GPU?" and "the kernel was queued".
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// libcuda could not be loaded, lacks a needed symbol, or reports no usable device.
    #[error("no CUDA driver found: {0}")]
    NoDriver(String),

    /// libnvrtc could not be loaded or lacks a needed symbol.
    #[error("nvrtc not available: {0}")]
    NoNvrtc(String),

    /// The prebuilt kernels file ([`crate::prebuilt`]) cannot be used: missing, unreadable,
    /// stale, damaged, or without an image this device can run. The text starts with its path.
    #[error("prebuilt kernels file {0}")]
    Prebuilt(String),

    /// Neither nvrtc nor a usable prebuilt kernels file: the kernels cannot be had at all. The
    /// text says what to install ([`crate::supply`]).
    #[error("no GPU kernels: {0}")]
    NoKernels(String),

    /// nvrtc rejected a source file; `log` is nvrtc's own program log.
    #[error("nvrtc failed to compile {file} for {arch}: {message}\n--- nvrtc log ---\n{log}")]
    Compile {
        /// Source file name, e.g. `conv.cu`.
        file: String,
        /// Target architecture, e.g. `compute_90` or `sm_80`.
        arch: String,
        /// nvrtc's error code, as text.
        message: String,
        /// nvrtc's program log (warnings and errors with line numbers).
        log: String,
    },

    /// A CUDA driver call failed; `context` says which step.
    #[error("CUDA driver error while {context}: {source}")]
    Driver {
        /// What was being done, e.g. "loading module conv for compute_90".
        context: String,
        /// The driver's error.
        #[source]
        source: DriverError,
    },

    /// A kernel (or copy) faulted on the device (an illegal address, a trap, ...): the context
    /// is lost and every later call fails. Names the operation (see [`crate::fault`]), not the
    /// call that happened to notice.
    #[error(
        "GPU fault in {suspect}: {code:?} ({}; the error surfaced while {noticed}). The CUDA \
         context is lost; CUDA_LAUNCH_BLOCKING=1 makes every launch report its own fault",
        if *queued == 1 { "the only operation since the stream was last synchronised".to_string() } else { format!("the last of {queued} operations since the stream was last synchronised") }
    )]
    KernelFault {
        /// The last operation queued before the error surfaced.
        suspect: crate::fault::Suspect,
        /// Operations queued since the last clean synchronisation (1: no doubt about it).
        queued: u64,
        /// The driver's error.
        code: CUresult,
        /// What was being done when the error surfaced.
        noticed: String,
    },

    /// A kernel name that no compiled module defines.
    #[error("unknown kernel `{0}` (not in kernels::KERNELS)")]
    UnknownKernel(String),

    /// A launcher was given buffers or shapes that do not fit together.
    #[error("invalid arguments for kernel `{kernel}`: {reason}")]
    InvalidArgument {
        /// The kernel being launched.
        kernel: &'static str,
        /// What does not fit.
        reason: String,
    },

    /// cudarc panicked (a second guard behind [`crate::probe`]); the payload is kept as text.
    #[error("cudarc panicked while {context}: {message}")]
    Panic {
        /// What was being done.
        context: String,
        /// The panic payload, if it was a string.
        message: String,
    },
}

impl KernelError {
    /// Wraps a driver error with what was being done. A kernel fault (which surfaces at some
    /// later call) becomes [`KernelError::KernelFault`], naming the kernel.
    pub fn driver(context: impl Into<String>, source: DriverError) -> Self {
        if crate::fault::is_kernel_fault(source.0) {
            if let Some((suspect, queued)) = crate::fault::suspect() {
                return KernelError::KernelFault {
                    suspect,
                    queued,
                    code: source.0,
                    noticed: context.into(),
                };
            }
        }
        KernelError::Driver {
            context: context.into(),
            source,
        }
    }

    /// Whether the driver said `CUDA_ERROR_OUT_OF_MEMORY` (an allocation, or a launch that
    /// needed memory, did not fit on the device).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, KernelError::Driver { source, .. } if source.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY)
    }

    /// A one-line description that never calls into the driver: for a driver error the
    /// result code's name and the step, e.g. `CUDA_ERROR_OUT_OF_MEMORY while allocating 1.00
    /// GiB of device memory`. (`Display` of cudarc's `DriverError` asks libcuda for the
    /// error string, which panics where libcuda cannot be loaded.)
    pub fn brief(&self) -> String {
        match self {
            KernelError::Driver { context, source } => format!("{:?} while {context}", source.0),
            other => other.to_string(),
        }
    }

    /// An [`KernelError::InvalidArgument`] for `kernel`.
    pub fn invalid(kernel: &'static str, reason: impl Into<String>) -> Self {
        KernelError::InvalidArgument {
            kernel,
            reason: reason.into(),
        }
    }
}

/// `bytes` for people: `512 B`, `12.0 MiB`, `1.50 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Runs `f`, turning a panic inside it (cudarc's way of reporting a missing library or
/// symbol) into [`KernelError::Panic`].
pub(crate) fn guard<T>(context: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            Err(KernelError::Panic {
                context: context.to_string(),
                message,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_recognised_without_touching_the_driver() {
        let oom = KernelError::driver(
            "allocating 1.00 GiB of device memory",
            DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        );
        assert!(oom.is_out_of_memory());
        assert_eq!(
            oom.brief(),
            "CUDA_ERROR_OUT_OF_MEMORY while allocating 1.00 GiB of device memory"
        );
        let other =
            KernelError::driver("launching", DriverError(CUresult::CUDA_ERROR_LAUNCH_FAILED));
        assert!(!other.is_out_of_memory());
        assert!(!KernelError::invalid("k", "bad").is_out_of_memory());
        assert_eq!(
            KernelError::invalid("k", "bad").brief(),
            "invalid arguments for kernel `k`: bad"
        );
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 10), "3.0 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.50 GiB");
    }
}
