//! The runtime facts that `train doctor` reports: the devices, the prebuilt kernels file and
//! the kernel cache (the driver and nvrtc are [`crate::probe`]'s). Each is gathered without
//! panicking on any machine: no driver, the stand-in, a library path that holds something else.

use std::path::PathBuf;

use crate::error::{guard, KernelError, Result};
use crate::nvrtc::{count_cached, DiskCache};
use crate::prebuilt::Prebuilt;
use crate::probe::DriverInfo;
use crate::supply;

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Its ordinal.
    pub ordinal: usize,
    /// Its name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `(major, minor)` compute capability.
    pub capability: (i32, i32),
    /// Free and total device memory, bytes.
    pub free: usize,
    /// Total device memory, bytes.
    pub total: usize,
}

/// Every device the driver reports, each described or the reason it could not be.
pub fn devices(driver: &DriverInfo) -> Vec<Result<DeviceFacts>> {
    (0..driver.device_count.max(0) as usize)
        .map(|ordinal| guard("describing a CUDA device", || describe(ordinal)))
        .collect()
}

fn describe(ordinal: usize) -> Result<DeviceFacts> {
    let ctx = cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| KernelError::driver(format!("creating a context on device {ordinal}"), e))?;
    let name = ctx
        .name()
        .map_err(|e| KernelError::driver("querying the device name", e))?;
    let capability = ctx
        .compute_capability()
        .map_err(|e| KernelError::driver("querying the compute capability", e))?;
    let (free, total) = ctx
        .mem_get_info()
        .map_err(|e| KernelError::driver("querying free device memory", e))?;
    Ok(DeviceFacts {
        ordinal,
        name,
        capability,
        free,
        total,
    })
}

/// What is known of the prebuilt kernels file.
#[derive(Debug)]
pub enum PrebuiltState {
    /// In none of the places it is looked for.
    Missing {
        /// Where it was looked for.
        places: Vec<PathBuf>,
        /// Whether [`supply::FILE_ENV`] named the place.
        named: bool,
    },
    /// Found, but refused: unreadable, stale or damaged.
    Refused {
        /// The file.
        path: PathBuf,
        /// Why ([`KernelError::Prebuilt`]).
        error: KernelError,
    },
    /// Found, and built from this program's kernel sources.
    Fresh(Prebuilt),
}

/// Looks for the prebuilt kernels file where [`supply`] would, and checks it.
pub fn prebuilt() -> PrebuiltState {
    let (places, named) = supply::prebuilt_places();
    let Some(path) = supply::find_prebuilt(&places).map(PathBuf::from) else {
        return PrebuiltState::Missing { places, named };
    };
    match Prebuilt::read(&path) {
        Ok(file) => PrebuiltState::Fresh(file),
        Err(error) => PrebuiltState::Refused { path, error },
    }
}

/// The kernel cache, for a device architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFacts {
    /// The directory, `None` when [`crate::nvrtc::CACHE_ENV`] turns the cache off.
    pub dir: Option<PathBuf>,
    /// How many of the sources it holds an image of for the architecture asked about, with
    /// the nvrtc that loads here; `Err` when that cannot be known (no nvrtc).
    pub cached: std::result::Result<usize, String>,
}

/// The cache the environment selects, and how much of it is warm for `arch` (e.g. `sm_90`).
pub fn cache(arch: &str) -> CacheFacts {
    let cache = DiskCache::from_env();
    let cached = match cache.dir() {
        None => Err("the cache is off".to_string()),
        Some(_) => guard("reading the kernel cache", || count_cached(arch, &cache))
            .map_err(|e| e.to_string()),
    };
    CacheFacts {
        dir: cache.dir().map(PathBuf::from),
        cached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On any machine: each fact comes back, none panics. Where there is a driver every device
    /// is described; the file and the cache say something either way.
    #[test]
    fn every_fact_is_gathered_without_panicking() {
        if let Ok(driver) = crate::probe::driver() {
            let devices = devices(&driver);
            assert_eq!(devices.len(), driver.device_count as usize);
            for d in devices.into_iter().flatten() {
                assert!(d.total >= d.free && d.capability.0 > 0, "{d:?}");
            }
        }
        match prebuilt() {
            PrebuiltState::Missing { places, named } => assert!(named || places.len() <= 2),
            PrebuiltState::Refused { error, .. } => {
                assert!(error.to_string().starts_with("prebuilt kernels file "))
            }
            PrebuiltState::Fresh(file) => assert!(!file.archs().is_empty()),
        }
        let facts = cache("sm_90");
        match (&facts.dir, &facts.cached, crate::probe::nvrtc()) {
            (None, Err(why), _) => assert_eq!(why, "the cache is off"),
            (Some(_), Ok(n), Ok(_)) => assert!(*n <= crate::SOURCES.len()),
            (Some(_), Err(why), Err(_)) => assert!(why.contains("nvrtc"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
