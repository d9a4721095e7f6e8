//! Compile the embedded CUDA sources to PTX with nvrtc (through cudarc).
//!
//! Needs only `libnvrtc.so.13` (+ its `libnvrtc-builtins`) at run time, never a CUDA toolkit at
//! build time: `pip install "nvidia-cuda-nvrtc==13.0.*"` and put its `lib/` on
//! `LD_LIBRARY_PATH` (see `kernels/ci-nvrtc.sh`). No GPU is needed to compile.

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::error::{guard, KernelError, Result};
use crate::KernelSource;

/// Options every source is compiled with. No fast-math: results must track the CPU reference
/// (`--use_fast_math` would flush denormals and approximate expf/logf/sqrtf/division).
const BASE_OPTIONS: &[&str] = &["--std=c++17", "--generate-line-info"];

/// PTX for one source file and one architecture.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    /// Module name (source file name without `.cu`).
    pub name: &'static str,
    /// Source file name.
    pub file: &'static str,
    /// Architecture it was compiled for, e.g. `compute_90`.
    pub arch: String,
    /// The PTX image, ready for `CudaContext::load_module`.
    pub ptx: Ptx,
}

impl CompiledModule {
    /// The PTX as text (PTX is ASCII; a trailing NUL from nvrtc is dropped).
    pub fn ptx_text(&self) -> String {
        match self.ptx.as_bytes() {
            Some(bytes) => String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_string(),
            None => String::new(),
        }
    }
}

/// Checks `arch` looks like `compute_NN[a|f]` or `sm_NN[a|f]` before handing it to nvrtc.
pub fn validate_arch(arch: &str) -> Result<()> {
    let digits = arch
        .strip_prefix("compute_")
        .or_else(|| arch.strip_prefix("sm_"))
        .map(|rest| rest.trim_end_matches(['a', 'f']));
    match digits {
        Some(d) if (2..=3).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(KernelError::Compile {
            file: "<arch>".into(),
            arch: arch.into(),
            message: "architecture must look like compute_80 or sm_90".into(),
            log: String::new(),
        }),
    }
}

/// The PTX virtual architecture for a compute capability, e.g. (9, 0) -> `compute_90`.
/// PTX is JIT-compiled by the driver for the exact device when the module is loaded.
pub fn arch_for_capability(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// Compiles one source for `arch` (e.g. `"compute_80"`, `"sm_90"`). Errors carry nvrtc's log
/// and the file name. Returns `KernelError::NoNvrtc` if libnvrtc cannot be loaded.
pub fn compile(src: &KernelSource, arch: &str) -> Result<CompiledModule> {
    validate_arch(arch)?;
    crate::probe::nvrtc()?;
    let mut options: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts = CompileOptions {
        options,
        name: Some(src.file.to_string()),
        ..Default::default()
    };
    let context = format!("compiling {} for {arch}", src.file);
    let ptx = guard(&context, || {
        cudarc::nvrtc::compile_ptx_with_opts(src.source, opts)
            .map_err(|e| compile_error(src, arch, e))
    })?;
    Ok(CompiledModule {
        name: src.name,
        file: src.file,
        arch: arch.to_string(),
        ptx,
    })
}

/// Compiles every embedded source for `arch`, in [`crate::SOURCES`] order; stops at the first
/// failure.
pub fn compile_all(arch: &str) -> Result<Vec<CompiledModule>> {
    crate::SOURCES.iter().map(|s| compile(s, arch)).collect()
}

fn compile_error(src: &KernelSource, arch: &str, e: CompileError) -> KernelError {
    let (message, log) = match e {
        CompileError::CompileError {
            nvrtc,
            options,
            log,
        } => (
            format!("{nvrtc} (options: {})", options.join(" ")),
            log.to_string_lossy().into_owned(),
        ),
        other => (format!("{other:?}"), String::new()),
    };
    KernelError::Compile {
        file: src.file.to_string(),
        arch: arch.to_string(),
        message,
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_validation() {
        for ok in ["compute_80", "sm_90", "sm_90a", "compute_120", "sm_100f"] {
            validate_arch(ok).unwrap();
        }
        for bad in [
            "80",
            "sm90",
            "sm_",
            "compute_x0",
            "sm_1234",
            "--gpu-architecture=sm_80",
        ] {
            assert!(validate_arch(bad).is_err(), "{bad}");
        }
        assert_eq!(arch_for_capability(8, 6), "compute_86");
    }
}
