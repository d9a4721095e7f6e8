//! Which kernel a GPU fault belongs to.
//!
//! A kernel that faults (an illegal address, a trap) does not fail its own launch: launches are
//! asynchronous, so the error surfaces at whatever driver call comes next — often a buffer's
//! free in a destructor, or the next launch — and from then on every call returns it (the
//! context is lost). Naming that call would blame the wrong thing. So every launch is noted
//! here, the list is cleared whenever the stream has been synchronised without error, and a
//! sticky error is reported with the kernels launched since: on the stand-in driver (which runs
//! each kernel when it is queued) the last one is exactly the kernel that faulted; on a GPU it
//! is the last candidate, and `CUDA_LAUNCH_BLOCKING=1` makes it exact there too.

use std::sync::Mutex;

use cudarc::driver::sys::CUresult;

/// Launches since the last clean synchronisation: the total and the most recent names.
struct Pending {
    count: u64,
    recent: Vec<&'static str>,
}

const KEPT: usize = 8;

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    count: 0,
    recent: Vec::new(),
});

fn pending() -> std::sync::MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes a launch (a kernel name, or "a CUDA graph replay").
pub(crate) fn launched(what: &'static str) {
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

/// The kernel to blame: `(last launched, launches since the last clean synchronisation)`, or
/// `None` if nothing was launched since.
pub(crate) fn suspect() -> Option<(&'static str, u64)> {
    let p = pending();
    p.recent.last().map(|&k| (k, p.count))
}
