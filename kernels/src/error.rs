//! Error type for everything on the GPU path: no `unwrap`, no panic reaches the caller.

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
    /// Wraps a driver error with what was being done.
    pub fn driver(context: impl Into<String>, source: DriverError) -> Self {
        KernelError::Driver {
            context: context.into(),
            source,
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
