//! Where a device's kernel images come from: nvrtc, compiling for the device's own
//! architecture through the disk cache ([`crate::nvrtc`]), or the prebuilt kernels file
//! ([`crate::prebuilt`], made by `cargo xtask cubins`).
//!
//! [`MODE_ENV`] chooses (`RESNET_KERNELS`):
//! * `auto` (the default): nvrtc when it loads, else the prebuilt file. A machine with only
//!   the driver installed trains from the file; with neither, the error says what to install.
//! * `nvrtc`: nvrtc only.
//! * `prebuilt`: the prebuilt file only; nvrtc is never loaded.
//!
//! The file is [`FILE_ENV`] (`RESNET_KERNELS_FILE`) if set, else [`crate::prebuilt::FILE_NAME`]
//! beside the running executable or in the directory above it
//! ([`crate::prebuilt::default_places`]), which is where `cargo xtask cubins` puts it for
//! cargo's `target/release/` and `target/debug/` binaries. A stale file (built from other
//! kernel sources) is refused, never loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{KernelError, Result};
use crate::nvrtc::{arch_for_capability, compile_all, CompiledModule};
use crate::prebuilt::{self, Prebuilt};

/// The environment variable that chooses where kernels come from: `auto`, `nvrtc`, `prebuilt`.
pub const MODE_ENV: &str = "RESNET_KERNELS";
/// The environment variable that names the prebuilt kernels file.
pub const FILE_ENV: &str = "RESNET_KERNELS_FILE";

/// What installs nvrtc, for messages.
pub const INSTALL_NVRTC: &str = "install nvrtc 13 (`pip install \"nvidia-cuda-nvrtc==13.0.*\"` \
     and put its nvidia/cu13/lib directory on LD_LIBRARY_PATH, or the CUDA 13 toolkit)";

/// Where kernels may come from ([`MODE_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// nvrtc when it loads, else the prebuilt file.
    Auto,
    /// nvrtc only.
    Nvrtc,
    /// The prebuilt file only.
    Prebuilt,
}

impl Mode {
    /// The mode [`MODE_ENV`] asks for (unset or empty: `auto`).
    pub fn from_env() -> Result<Mode> {
        match std::env::var(MODE_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Mode::Auto),
            Ok(v) => Mode::parse(&v),
            Err(std::env::VarError::NotUnicode(v)) => Mode::parse(&v.to_string_lossy()),
        }
    }

    /// `auto`, `nvrtc` or `prebuilt` (case-insensitive; empty is `auto`).
    pub fn parse(value: &str) -> Result<Mode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Mode::Auto),
            "nvrtc" => Ok(Mode::Nvrtc),
            "prebuilt" => Ok(Mode::Prebuilt),
            _ => Err(KernelError::NoKernels(format!(
                "{MODE_ENV}={value} is not a choice: auto (nvrtc when it loads, else the \
                 prebuilt file), nvrtc or prebuilt"
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Nvrtc => "nvrtc",
            Mode::Prebuilt => "prebuilt",
        })
    }
}

/// Where a device's modules came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled by nvrtc for the device's architecture (some or all read from the disk cache).
    Nvrtc {
        /// nvrtc's `(major, minor)`.
        version: (i32, i32),
        /// The architecture compiled for, e.g. `sm_90`.
        arch: String,
        /// How many of the modules came from the disk cache.
        from_cache: usize,
        /// How many modules there are.
        modules: usize,
    },
    /// Read from the prebuilt kernels file.
    Prebuilt {
        /// The file.
        path: PathBuf,
        /// The images' architecture (`sm_90`, or `compute_90` for PTX the driver compiles).
        arch: String,
        /// The nvrtc that compiled the file's images.
        nvrtc_version: (i32, i32),
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Nvrtc {
                version,
                arch,
                from_cache,
                modules,
            } => write!(
                f,
                "{arch} cubins from nvrtc {}.{} ({from_cache} of {modules} modules from the \
                 kernel cache)",
                version.0, version.1
            ),
            Origin::Prebuilt {
                path,
                arch,
                nvrtc_version,
            } => write!(
                f,
                "{arch} {} from the prebuilt file {} (nvrtc {}.{})",
                if arch.starts_with("sm_") {
                    "cubins"
                } else {
                    "PTX, compiled by the driver,"
                },
                path.display(),
                nvrtc_version.0,
                nvrtc_version.1
            ),
        }
    }
}

/// A device's modules, one per source of [`crate::SOURCES`], and where they came from.
#[derive(Debug, Clone)]
pub struct Supply {
    /// The modules, in [`crate::SOURCES`] order.
    pub modules: Arc<Vec<CompiledModule>>,
    /// Where they came from.
    pub origin: Origin,
}

/// The prebuilt file's possible places: [`FILE_ENV`] alone when set, else
/// [`prebuilt::default_places`]. The flag says whether the variable named it.
pub fn prebuilt_places() -> (Vec<PathBuf>, bool) {
    match std::env::var_os(FILE_ENV).filter(|v| !v.is_empty()) {
        Some(path) => (vec![PathBuf::from(path)], true),
        None => (prebuilt::default_places(), false),
    }
}

/// The first of `places` that exists.
pub fn find_prebuilt(places: &[PathBuf]) -> Option<&Path> {
    places.iter().map(PathBuf::as_path).find(|p| p.exists())
}

/// The prebuilt file, read and checked: `Err` when it is not found (naming where it was looked
/// for), unreadable, stale or damaged.
pub fn read_prebuilt() -> Result<Prebuilt> {
    let (places, named) = prebuilt_places();
    match find_prebuilt(&places) {
        Some(path) => Prebuilt::read(path),
        None if named => Err(KernelError::Prebuilt(format!(
            "{} ({FILE_ENV}) does not exist",
            places[0].display()
        ))),
        None => Err(KernelError::Prebuilt(format!(
            "{NOT_FOUND}: looked for {} (set {FILE_ENV} to use another place)",
            shown(&places)
        ))),
    }
}

/// How [`read_prebuilt`]'s error for a file that is nowhere begins.
const NOT_FOUND: &str = "is not here";

fn shown(places: &[PathBuf]) -> String {
    if places.is_empty() {
        return format!(
            "{} beside the executable, whose path is unknown",
            prebuilt::FILE_NAME
        );
    }
    places
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The modules of every source for a device of compute capability `capability` from nvrtc,
/// through the disk cache ([`compile_all`]).
pub fn from_nvrtc(capability: (i32, i32)) -> Result<Supply> {
    let nvrtc = crate::probe::nvrtc()?;
    let arch = arch_for_capability(capability.0, capability.1);
    let modules = compile_all(&arch)?;
    let from_cache = modules.iter().filter(|m| m.from_cache).count();
    Ok(Supply {
        origin: Origin::Nvrtc {
            version: nvrtc.version,
            arch,
            from_cache,
            modules: modules.len(),
        },
        modules: Arc::new(modules),
    })
}

/// The modules of every source for a device of compute capability `capability` from the
/// prebuilt file ([`read_prebuilt`]).
pub fn from_prebuilt(capability: (i32, i32)) -> Result<Supply> {
    let file = read_prebuilt()?;
    let modules = file.modules_for(capability)?;
    Ok(Supply {
        origin: Origin::Prebuilt {
            path: file.path.clone().unwrap_or_default(),
            arch: modules.first().map(|m| m.arch.clone()).unwrap_or_default(),
            nvrtc_version: file.nvrtc_version,
        },
        modules: Arc::new(modules),
    })
}

/// The modules for a device of compute capability `capability`, as `mode` says: in `auto`,
/// nvrtc when it loads, else the prebuilt file; with neither, [`KernelError::NoKernels`]
/// saying what to install.
pub fn resolve(mode: Mode, capability: (i32, i32)) -> Result<Supply> {
    match mode {
        Mode::Nvrtc => from_nvrtc(capability),
        Mode::Prebuilt => from_prebuilt(capability).map_err(|e| {
            let build = match &e {
                KernelError::Prebuilt(why) if why.starts_with(NOT_FOUND) => {
                    "; build it with `cargo xtask cubins` on a machine with nvrtc"
                }
                _ => "",
            };
            KernelError::NoKernels(format!(
                "{MODE_ENV}=prebuilt, but the {e}{build}; or unset {MODE_ENV} to compile with \
                 nvrtc"
            ))
        }),
        Mode::Auto => match crate::probe::nvrtc() {
            Ok(_) => from_nvrtc(capability),
            Err(no_nvrtc) => from_prebuilt(capability).map_err(|file| {
                KernelError::NoKernels(match file {
                    KernelError::Prebuilt(why) if why.starts_with(NOT_FOUND) => format!(
                        "neither nvrtc nor the prebuilt kernels file is here ({}). \
                         To fix: {INSTALL_NVRTC}; or build the file with `cargo xtask cubins` \
                         on a machine that has nvrtc and put it beside this program. The nvrtc \
                         probe said: {no_nvrtc}",
                        why.trim_start_matches(NOT_FOUND).trim_start_matches(": ")
                    ),
                    other => format!(
                        "nvrtc is not here, and the {other}. Or {INSTALL_NVRTC}. The nvrtc \
                         probe said: {no_nvrtc}"
                    ),
                })
            }),
        },
    }
}

/// [`resolve`] with the [`MODE_ENV`] mode, once per process and compute capability (compiling
/// takes seconds; every [`crate::Gpu`] of that capability shares the modules). Errors are not
/// kept: a later call tries again.
pub fn for_capability(capability: (i32, i32)) -> Result<Supply> {
    static SUPPLIES: OnceLock<Mutex<HashMap<(i32, i32), Supply>>> = OnceLock::new();
    let supplies = SUPPLIES.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
    let mut supplies = supplies.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = supplies.get(&capability) {
        return Ok(s.clone());
    }
    let supply = resolve(Mode::from_env()?, capability)?;
    supplies.insert(capability, supply.clone());
    Ok(supply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_a_typo_names_the_choices() {
        assert_eq!(Mode::parse("").unwrap(), Mode::Auto);
        assert_eq!(Mode::parse("AUTO").unwrap(), Mode::Auto);
        assert_eq!(Mode::parse(" nvrtc").unwrap(), Mode::Nvrtc);
        assert_eq!(Mode::parse("prebuilt").unwrap(), Mode::Prebuilt);
        let err = Mode::parse("cubins").unwrap_err().to_string();
        assert!(
            err.contains("RESNET_KERNELS=cubins")
                && err.contains("auto")
                && err.contains("prebuilt"),
            "{err}"
        );
    }

    #[test]
    fn origins_say_what_was_loaded_and_from_where() {
        let nvrtc = Origin::Nvrtc {
            version: (13, 0),
            arch: "sm_90".into(),
            from_cache: 10,
            modules: 10,
        };
        assert_eq!(
            nvrtc.to_string(),
            "sm_90 cubins from nvrtc 13.0 (10 of 10 modules from the kernel cache)"
        );
        let file = Origin::Prebuilt {
            path: "/opt/resnet-kernels.bin".into(),
            arch: "compute_90".into(),
            nvrtc_version: (13, 0),
        };
        assert_eq!(
            file.to_string(),
            "compute_90 PTX, compiled by the driver, from the prebuilt file \
             /opt/resnet-kernels.bin (nvrtc 13.0)"
        );
    }

    #[test]
    fn the_file_is_found_in_the_first_place_that_has_it() {
        let dir = std::env::temp_dir().join(format!("supply-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
        std::fs::write(&b, b"x").unwrap();
        assert_eq!(find_prebuilt(&[a.clone(), b.clone()]), Some(b.as_path()));
        std::fs::write(&a, b"x").unwrap();
        assert_eq!(find_prebuilt(&[a.clone(), b.clone()]), Some(a.as_path()));
        assert_eq!(find_prebuilt(&[dir.join("c.bin")]), None);
        assert!(shown(&[a.clone(), b]).contains(" and "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
