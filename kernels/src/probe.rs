//! Find out, without panicking, whether the CUDA driver and nvrtc can be used.
//!
//! cudarc (with `dynamic-loading`) `dlopen`s `libcuda` / `libnvrtc` on first use and **panics**
//! when a library or one of its symbols is missing. Every entry point of this crate that touches
//! cudarc calls [`driver`] or [`nvrtc`] first, so a machine without CUDA gets a clean
//! [`KernelError`] ("no CUDA driver found: ...") instead. The search mirrors cudarc's exactly:
//! the same candidate names from [`cudarc::get_lib_name_candidates`], tried in the same order,
//! first one that loads wins, so the library checked here is the one cudarc will use.
//!
//! Results are cached for the process (a library does not appear or vanish mid-run).
//!
//! **The stand-in driver.** When [`STANDIN_ENV`] names a file, that library (`kernels/standin`,
//! which runs the kernels under the CPU emulator) is loaded first and kept loaded; its SONAME is
//! `libcuda.so`, so the search below, and then cudarc, get it instead of any real driver. Only
//! an explicit setting does this: without it the search is the plain one, and a machine without
//! a GPU has no driver.

use std::sync::OnceLock;

use crate::error::{KernelError, Result};

/// Driver symbols this crate (through cudarc) needs. A driver too old to have them would make
/// cudarc panic at the first call, so check up front.
const DRIVER_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGet",
    "cuDeviceGetCount",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuStreamCreate",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuLaunchKernel",
    "cuMemAlloc_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuGetErrorString",
];

/// nvrtc symbols used by [`crate::nvrtc`] (through cudarc's `nvrtc::result` / `nvrtc::sys`).
const NVRTC_SYMBOLS: &[&str] = &[
    "nvrtcVersion",
    "nvrtcCreateProgram",
    "nvrtcCompileProgram",
    "nvrtcGetProgramLogSize",
    "nvrtcGetProgramLog",
    "nvrtcGetPTXSize",
    "nvrtcGetPTX",
    "nvrtcGetCUBINSize",
    "nvrtcGetCUBIN",
    "nvrtcDestroyProgram",
    "nvrtcGetErrorString",
];

/// The environment variable that names the stand-in driver library to use instead of libcuda.
pub const STANDIN_ENV: &str = "RESNET_CUDA_STANDIN";

/// What the driver probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The library name that loaded (e.g. `libcuda.so.1`).
    pub library: String,
    /// `Some(path)` when that library is the stand-in named by [`STANDIN_ENV`] (no GPU: the
    /// kernels run on the CPU under the emulator).
    pub standin: Option<String>,
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    pub version: i32,
    /// Number of CUDA devices (at least 1, else the probe fails).
    pub device_count: i32,
}

/// What the nvrtc probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvrtcInfo {
    /// The library name that loaded (e.g. `libnvrtc.so.13`).
    pub library: String,
    /// `(major, minor)` from `nvrtcVersion`.
    pub version: (i32, i32),
}

/// Both probes. Either may fail independently: nvrtc alone is enough to compile-check kernels.
#[derive(Debug)]
pub struct ProbeReport {
    /// The driver probe.
    pub driver: Result<DriverInfo>,
    /// The nvrtc probe.
    pub nvrtc: Result<NvrtcInfo>,
}

/// Runs both probes; never panics.
pub fn probe() -> ProbeReport {
    ProbeReport {
        driver: driver(),
        nvrtc: nvrtc(),
    }
}

/// Tries cudarc's candidate names for `lib_names` in cudarc's order; returns the first that
/// loads, after checking it exports every symbol in `symbols`.
fn find_library(lib_names: &[&str], symbols: &[&str]) -> std::result::Result<String, String> {
    let candidates: Vec<String> = lib_names
        .iter()
        .flat_map(|l| cudarc::get_lib_name_candidates(l))
        .collect();
    let mut first_error = None;
    for name in &candidates {
        // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's CUDA
        // libraries, which cudarc would load the same way moments later.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                let missing: Vec<&str> = symbols
                    .iter()
                    .copied()
                    // SAFETY: only looks the symbol up; the pointer is never called here.
                    .filter(|sym| unsafe { lib.get::<*const ()>(sym.as_bytes()) }.is_err())
                    .collect();
                return if missing.is_empty() {
                    Ok(name.clone())
                } else {
                    Err(format!(
                        "{name} loaded but lacks {missing:?} (library too old for CUDA 13 bindings?)"
                    ))
                };
            }
            Err(e) => {
                // libloading's Display is just "dlopen failed"; the dlerror text is the source.
                first_error.get_or_insert_with(|| match std::error::Error::source(&e) {
                    Some(src) => format!("{e}: {src}"),
                    None => e.to_string(),
                });
            }
        }
    }
    Err(format!(
        "none of {candidates:?} could be loaded (first error: {}); set LD_LIBRARY_PATH to the \
         directory that holds the library",
        first_error.unwrap_or_else(|| "no candidates".into())
    ))
}

/// Checks that the CUDA driver library loads, has the symbols we need, initialises, and sees at
/// least one device. Only after `Ok` is it safe to call into `cudarc::driver`.
pub fn driver() -> Result<DriverInfo> {
    static CACHE: OnceLock<std::result::Result<DriverInfo, String>> = OnceLock::new();
    CACHE
        .get_or_init(probe_driver_uncached)
        .clone()
        .map_err(KernelError::NoDriver)
}

/// Loads the stand-in named by [`STANDIN_ENV`], if set, and keeps it loaded for the process.
fn load_standin() -> std::result::Result<Option<String>, String> {
    let Some(path) = std::env::var_os(STANDIN_ENV).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let shown = path.to_string_lossy().into_owned();
    // SAFETY: loading the stand-in runs no initialisers beyond Rust's and the C++ runtime's.
    let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
        format!(
            "{STANDIN_ENV}={shown} could not be loaded ({}); build it with `cargo build -p \
             cuda-standin` or run through scripts/emulated-gpu.sh",
            std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
        )
    })?;
    // SAFETY: only looks the symbol up.
    if unsafe { lib.get::<*const ()>(b"cuda_standin_version") }.is_err() {
        return Err(format!(
            "{STANDIN_ENV}={shown} is not the stand-in driver (no cuda_standin_version)"
        ));
    }
    // Keep it loaded: cudarc's dlopen("libcuda.so") must find this copy by its SONAME.
    std::mem::forget(lib);
    Ok(Some(shown))
}

fn probe_driver_uncached() -> std::result::Result<DriverInfo, String> {
    let standin = load_standin()?;
    let library = find_library(&["cuda", "nvcuda"], DRIVER_SYMBOLS)?;
    // The library and symbols exist, so cudarc will not panic from here on; the guard is a
    // second line of defence against anything unforeseen.
    let checked = crate::error::guard("initialising the CUDA driver", || {
        use cudarc::driver::{result, sys};
        result::init().map_err(|e| KernelError::driver("calling cuInit", e))?;
        let mut version = 0;
        // SAFETY: plain out-parameter call into the loaded driver.
        unsafe { sys::cuDriverGetVersion(&mut version) }
            .result()
            .map_err(|e| KernelError::driver("calling cuDriverGetVersion", e))?;
        let count = result::device::get_count()
            .map_err(|e| KernelError::driver("calling cuDeviceGetCount", e))?;
        Ok((version, count))
    });
    match checked {
        Ok((version, device_count)) if device_count > 0 => Ok(DriverInfo {
            library,
            standin,
            version,
            device_count,
        }),
        Ok(_) => Err(format!("{library} loaded but reports no CUDA device")),
        Err(e) => Err(format!("{library} loaded but {e}")),
    }
}

/// Checks that libnvrtc loads and has the symbols we need. Only after `Ok` is it safe to call
/// into `cudarc::nvrtc`.
pub fn nvrtc() -> Result<NvrtcInfo> {
    static CACHE: OnceLock<std::result::Result<NvrtcInfo, String>> = OnceLock::new();
    CACHE
        .get_or_init(probe_nvrtc_uncached)
        .clone()
        .map_err(KernelError::NoNvrtc)
}

fn probe_nvrtc_uncached() -> std::result::Result<NvrtcInfo, String> {
    let library = find_library(&["nvrtc"], NVRTC_SYMBOLS)?;
    let version = crate::error::guard("querying the nvrtc version", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain out-parameter call into the loaded library.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        if rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            Ok((major, minor))
        } else {
            Err(KernelError::NoNvrtc(format!("nvrtcVersion failed: {rc:?}")))
        }
    })
    .map_err(|e| format!("{library} loaded but {e}"))?;
    Ok(NvrtcInfo { library, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Must pass on every machine: with or without CUDA, the probe returns instead of panicking,
    /// and a failure says what was searched for.
    #[test]
    fn probe_returns_without_panicking() {
        let report = probe();
        match &report.driver {
            Ok(info) => assert!(info.device_count > 0 && !info.library.is_empty()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("no CUDA driver found: "), "{msg}");
                assert!(
                    msg.contains("cuda"),
                    "message should name the library: {msg}"
                );
            }
        }
        match &report.nvrtc {
            Ok(info) => assert!(info.version.0 >= 12, "{info:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("nvrtc not available: "), "{msg}");
                assert!(msg.contains("nvrtc"), "{msg}");
            }
        }
        // Cached: a second call agrees with the first.
        assert_eq!(driver().is_ok(), report.driver.is_ok());
    }

    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let err = find_library(&["definitely_not_a_cuda_library_xyz"], &[]).unwrap_err();
        assert!(err.contains("definitely_not_a_cuda_library_xyz"), "{err}");
        assert!(err.contains("LD_LIBRARY_PATH"), "{err}");
    }
}
