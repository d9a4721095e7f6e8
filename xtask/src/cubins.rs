//! `cargo xtask cubins`: every kernel compiled by nvrtc for the architectures asked for, into
//! the prebuilt kernels file (`kernels::prebuilt`), which `train` loads where nvrtc is missing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use kernels::nvrtc::{compile_all_with, DiskCache};
use kernels::prebuilt::{self, Prebuilt};

use crate::cli::CubinsArgs;

/// Set in the environment of the re-run that has nvrtc on its library path (never twice).
const RERUN_ENV: &str = "XTASK_CUBINS_NVRTC_RERUN";

/// Compiles, writes and reads back the file.
pub fn cubins(args: &CubinsArgs) -> anyhow::Result<()> {
    check_archs(&args.arch)?;
    let nvrtc = match kernels::probe::nvrtc() {
        Ok(info) => info,
        Err(e) => {
            return rerun_with_nvrtc().unwrap_or_else(|| {
                Err(anyhow::Error::new(e).context(format!(
                    "cargo xtask cubins needs nvrtc: {}",
                    kernels::supply::INSTALL_NVRTC
                )))
            })
        }
    };
    let out = args.out.clone().unwrap_or_else(default_out);
    let cache = DiskCache::from_env();
    let t0 = Instant::now();
    let mut modules = Vec::new();
    for arch in &args.arch {
        let t = Instant::now();
        let compiled = compile_all_with(arch, &cache)?;
        let cached = compiled.iter().filter(|m| m.from_cache).count();
        eprintln!(
            "{arch}: {} modules ({cached} from the kernel cache) in {:.1} s",
            compiled.len(),
            t.elapsed().as_secs_f64()
        );
        modules.extend(compiled);
    }
    let file = Prebuilt::from_modules(&modules, nvrtc.version)?;
    prebuilt::write_atomically(&out, &file.to_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    // What train will do with it: read and check it.
    let back = Prebuilt::read(&out)?;
    println!(
        "wrote {}: {} modules for {} from nvrtc {}.{}, {:.1} MiB, in {:.1} s",
        out.display(),
        kernels::SOURCES.len(),
        back.archs().join(" "),
        nvrtc.version.0,
        nvrtc.version.1,
        back.image_bytes() as f64 / (1u64 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `resnet-kernels.bin` in cargo's target directory (`CARGO_TARGET_DIR`, else the
/// workspace's `target/`): the directory above `target/release/train`, where it looks.
pub fn default_out() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
            xtask.parent().unwrap_or(xtask).join("target")
        });
    target.join(prebuilt::FILE_NAME)
}

/// Where nvrtc does not load: runs this command again with the directory of NVIDIA's wheel
/// (or `NVRTC_LIB_DIR`) first on `LD_LIBRARY_PATH`, and returns its outcome. `None` when
/// there is no such directory (or this already is the re-run).
fn rerun_with_nvrtc() -> Option<anyhow::Result<()>> {
    if std::env::var_os(RERUN_ENV).is_some() {
        return None;
    }
    let dir = nvrtc_dir().filter(|d| d.join("libnvrtc.so.13").exists())?;
    eprintln!("nvrtc: using {}", dir.display());
    let mut path = OsString::from(dir.as_os_str());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .env(RERUN_ENV, "1")
        .status();
    Some(match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => Err(e).context("running cargo xtask cubins again with nvrtc"),
    })
}

/// `NVRTC_LIB_DIR`, else the library directory of NVIDIA's nvrtc wheel for `python3`.
fn nvrtc_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("NVRTC_LIB_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib'))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    if !out.status.success() || dir.is_empty() {
        return None;
    }
    Some(PathBuf::from(dir))
}

/// Refuses architectures nvrtc would reject, before minutes of compiling the others.
pub fn check_archs(archs: &[String]) -> anyhow::Result<()> {
    if archs.is_empty() {
        bail!("--arch names no architecture");
    }
    for arch in archs {
        kernels::nvrtc::validate_arch(arch)
            .with_context(|| format!("--arch {arch}: expected sm_XY or compute_XY"))?;
    }
    Ok(())
}
