//! Which operation a GPU fault belongs to.
//!
//! A kernel (or copy) that faults does not fail its own call: work is queued asynchronously,
//! so the error surfaces at whatever driver call comes next — often a buffer's free in a
//! destructor, or the next launch — and from then on every call returns it (the context is
//! lost). Naming that call would blame the wrong thing. So every queued kernel and copy is
//! noted here, the list is cleared whenever the stream has been synchronised without error,
//! and a fault is reported with what was queued since: on the stand-in driver (which runs each
//! operation when it is queued) the last one is exactly the one that faulted; on a GPU it is
//! the last candidate, and with `CUDA_LAUNCH_BLOCKING=1` (each launch waits for its kernel
//! and returns its fault) the launch that fails names its own kernel.

use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys::CUresult;

/// A queued operation that can fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// A kernel launch, by kernel name.
    Kernel(&'static str),
    /// The replay of a captured CUDA graph (one of its kernels).
    GraphReplay,
    /// A copy or memset, described (`a host-to-device copy`).
    Transfer(&'static str),
}

impl std::fmt::Display for Suspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Suspect::Kernel(k) => write!(f, "kernel `{k}`"),
            Suspect::GraphReplay => f.write_str("a kernel of the CUDA graph replay"),
            Suspect::Transfer(what) => f.write_str(what),
        }
    }
}

/// Operations since the last clean synchronisation: the total and the most recent.
struct Pending {
    count: u64,
    recent: Vec<Suspect>,
}

const KEPT: usize = 8;

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    count: 0,
    recent: Vec::new(),
});

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes a queued operation.
pub(crate) fn queued(what: Suspect) {
    let mut p = pending();
    p.count += 1;
    if p.recent.len() == KEPT {
        p.recent.remove(0);
    }
    p.recent.push(what);
}

/// The stream has been synchronised without error: nothing is pending.
pub(crate) fn synchronised() {
    let mut p = pending();
    p.count = 0;
    p.recent.clear();
}

/// Whether `code` means a kernel faulted and the context is lost.
pub fn is_kernel_fault(code: CUresult) -> bool {
    use CUresult::*;
    matches!(
        code,
        CUDA_ERROR_ILLEGAL_ADDRESS
            | CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUDA_ERROR_MISALIGNED_ADDRESS
            | CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUDA_ERROR_INVALID_PC
            | CUDA_ERROR_LAUNCH_FAILED
            | CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUDA_ERROR_ASSERT
    )
}

/// The operation to blame: `(last queued, operations since the last clean synchronisation)`,
/// or `None` if nothing was queued since.
pub(crate) fn suspect() -> Option<(Suspect, u64)> {
    let p = pending();
    p.recent.last().map(|&k| (k, p.count))
}

/// `CUDA_LAUNCH_BLOCKING=1`: every launch waits for its kernel, so a fault returned by a launch
/// is that kernel's own.
pub(crate) fn launches_block() -> bool {
    static BLOCKING: OnceLock<bool> = OnceLock::new();
    *BLOCKING.get_or_init(|| std::env::var("CUDA_LAUNCH_BLOCKING").is_ok_and(|v| v == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_read_as_what_they_are() {
        assert_eq!(
            Suspect::Kernel("relu_forward").to_string(),
            "kernel `relu_forward`"
        );
        assert_eq!(
            Suspect::Transfer("a host-to-device copy").to_string(),
            "a host-to-device copy"
        );
        assert!(Suspect::GraphReplay.to_string().contains("graph"));
    }
}
