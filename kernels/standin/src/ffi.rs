//! The C boundary every exported entry point shares: the `entry!` definitions (a body returning
//! `Result<(), CUresult>`, a panic turned into `CUDA_ERROR_UNKNOWN`) and out-parameters.

use crate::status::*;

/// Defines exported driver entry points: each body returns `Result<(), CUresult>`; a panic
/// inside becomes `CUDA_ERROR_UNKNOWN` (never an unwind into C).
macro_rules! entry {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block)*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $crate::status::CUresult {
                $crate::ffi::guard(stringify!($name), || -> Result<(), $crate::status::CUresult> { $body })
            }
        )*
    };
}
pub(crate) use entry;

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
