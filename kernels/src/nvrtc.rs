//! Compile the embedded CUDA sources with nvrtc (through cudarc's raw bindings).
//!
//! Two outputs, chosen by the architecture's prefix:
//! * `compute_XY` (virtual): PTX text, which the driver JIT-compiles when the module is loaded.
//!   The tests read it (entry points, `mma.sync`, no `.local`).
//! * `sm_XY` (real): a cubin, the device's own machine code. [`crate::Gpu`] loads this: the
//!   driver's JIT is skipped, and CUDA's minor-version compatibility lets a cubin from any
//!   nvrtc 13.x load on any 13.x driver (>= 580), where PTX from an nvrtc newer than the
//!   driver fails with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`.
//!
//! [`compile_all`] (what [`crate::Gpu`] uses) keeps what it compiles in an on-disk cache
//! ([`DiskCache`]): `$RESNET_KERNEL_CACHE` if set (`off` disables it), else
//! `$XDG_CACHE_HOME/resnet-cifar/kernels` or `~/.cache/resnet-cifar/kernels`. A file is
//! keyed on the source text, the architecture, the options, nvrtc's version and this crate's
//! version, so an edit to a kernel or another nvrtc simply misses. Old files are never
//! removed; deleting the directory is always safe. [`compile`] itself never uses the cache.
//!
//! Needs only `libnvrtc.so.13` (+ its `libnvrtc-builtins`) at run time, never a CUDA toolkit at
//! build time: `pip install "nvidia-cuda-nvrtc==13.0.*"` and put its `lib/` on
//! `LD_LIBRARY_PATH` (see `kernels/ci-nvrtc.sh`). No GPU is needed to compile.

use std::ffi::{CStr, CString};

use cudarc::nvrtc::{result, sys, Ptx};

use crate::error::{guard, KernelError, Result};
use crate::KernelSource;

pub(crate) use cache::checksum;
use cache::CacheKey;
pub use cache::{DiskCache, CACHE_ENV};

/// Options every source is compiled with. No fast-math: results must track the CPU reference
/// (`--use_fast_math` would flush denormals and approximate expf/logf/sqrtf/division).
pub(crate) const BASE_OPTIONS: &[&str] = &["--std=c++17", "--generate-line-info"];

/// What nvrtc produced for a module: set by the architecture it was compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleKind {
    /// PTX text, from a virtual architecture (`compute_XY`).
    Ptx,
    /// A cubin (ELF machine code), from a real architecture (`sm_XY`).
    Cubin,
}

impl ModuleKind {
    /// The kind nvrtc produces for `arch`: a cubin for `sm_*`, PTX for `compute_*`.
    pub fn for_arch(arch: &str) -> ModuleKind {
        if arch.starts_with("sm_") {
            ModuleKind::Cubin
        } else {
            ModuleKind::Ptx
        }
    }
}

/// One source file compiled for one architecture.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    /// Module name (source file name without `.cu`).
    pub name: &'static str,
    /// Source file name.
    pub file: &'static str,
    /// Architecture it was compiled for, e.g. `sm_90` or `compute_90`.
    pub arch: String,
    /// PTX or cubin (follows from `arch`, see [`ModuleKind::for_arch`]).
    pub kind: ModuleKind,
    /// The PTX text (without nvrtc's trailing NUL) or the cubin's bytes.
    pub image: Vec<u8>,
    /// Whether `image` was read from the [`DiskCache`] rather than compiled just now.
    pub from_cache: bool,
}

impl CompiledModule {
    /// The PTX as text; empty for a cubin (machine code has no text form).
    pub fn ptx_text(&self) -> String {
        match self.kind {
            ModuleKind::Ptx => String::from_utf8_lossy(&self.image).into_owned(),
            ModuleKind::Cubin => String::new(),
        }
    }

    /// The image in the form `CudaContext::load_module` takes. Both kinds go through
    /// `Ptx::from_binary` (cuModuleLoadData on the bytes, which accepts a cubin or
    /// NUL-terminated PTX): `Ptx::from_src` would unwrap a CString conversion inside cudarc.
    pub fn to_ptx(&self) -> Ptx {
        Ptx::from_binary(self.load_bytes())
    }

    /// The bytes cuModuleLoadData reads: the cubin as is, or the PTX with a terminating NUL
    /// (the driver reads PTX up to it).
    fn load_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.image.len() + 1);
        bytes.extend_from_slice(&self.image);
        if self.kind == ModuleKind::Ptx {
            bytes.push(0);
        }
        bytes
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

/// The real architecture of a compute capability, e.g. (9, 0) -> `sm_90`: [`compile`] then
/// makes a cubin for exactly that device, which loads without the driver's JIT.
pub fn arch_for_capability(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// The full nvrtc option list for `arch`.
fn options_for(arch: &str) -> Vec<String> {
    let mut options: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    options
}

/// Compiles one source for `arch`: PTX for `"compute_80"`, a cubin for `"sm_90"` (see
/// [`ModuleKind`]). Errors carry nvrtc's log and the file name. Returns
/// `KernelError::NoNvrtc` if libnvrtc cannot be loaded.
pub fn compile(src: &KernelSource, arch: &str) -> Result<CompiledModule> {
    validate_arch(arch)?;
    crate::probe::nvrtc()?;
    let kind = ModuleKind::for_arch(arch);
    let context = format!("compiling {} for {arch}", src.file);
    let image = guard(&context, || run_nvrtc(src, arch, kind))?;
    Ok(CompiledModule {
        name: src.name,
        file: src.file,
        arch: arch.to_string(),
        kind,
        image,
        from_cache: false,
    })
}

/// [`compile`] through `cache`: a valid cached image is returned without running nvrtc (which
/// must still be loadable: its version is part of the key); otherwise the source is compiled
/// and the image stored. Cache trouble never fails the call; nvrtc errors are returned as is
/// and nothing is stored for them.
pub fn compile_cached(src: &KernelSource, arch: &str, cache: &DiskCache) -> Result<CompiledModule> {
    validate_arch(arch)?;
    let nvrtc = crate::probe::nvrtc()?;
    let key = CacheKey::new(src, arch, &options_for(arch), nvrtc.version);
    let (image, from_cache) = cache.get_or_compile(&key, || compile(src, arch).map(|m| m.image))?;
    Ok(CompiledModule {
        name: src.name,
        file: src.file,
        arch: arch.to_string(),
        kind: ModuleKind::for_arch(arch),
        image,
        from_cache,
    })
}

/// How many of the embedded sources `cache` holds a valid image of for `arch`, as the nvrtc
/// that loads here would use them (its version is part of the key, so nvrtc must load).
pub fn count_cached(arch: &str, cache: &DiskCache) -> Result<usize> {
    validate_arch(arch)?;
    let nvrtc = crate::probe::nvrtc()?;
    let options = options_for(arch);
    Ok(crate::SOURCES
        .iter()
        .filter(|src| {
            let key = CacheKey::new(src, arch, &options, nvrtc.version);
            cache.load(&key).is_some()
        })
        .count())
}

/// Compiles every embedded source for `arch`, one thread per source (nvrtc compiles distinct
/// programs concurrently; serially the conv files alone take seconds). The modules come back
/// in [`crate::SOURCES`] order; if any fail, the error is that of the first failing source in
/// that order, whichever thread finished first.
///
/// Goes through the [`DiskCache`] the environment selects ([`DiskCache::from_env`]).
pub fn compile_all(arch: &str) -> Result<Vec<CompiledModule>> {
    compile_all_with(arch, &DiskCache::from_env())
}

/// [`compile_all`] with an explicit cache ([`DiskCache::off`] to always run nvrtc).
pub fn compile_all_with(arch: &str, cache: &DiskCache) -> Result<Vec<CompiledModule>> {
    // Checked once up front: otherwise every thread would report the same error.
    validate_arch(arch)?;
    crate::probe::nvrtc()?;
    compile_each(crate::SOURCES, |src| compile_cached(src, arch, cache))
}

/// Runs `job` on every source, one scoped thread each; results in `sources` order, so
/// `collect` returns the first error in that order. A source whose thread cannot be started
/// (a thread limit) is compiled on the calling thread instead.
fn compile_each<F>(sources: &[KernelSource], job: F) -> Result<Vec<CompiledModule>>
where
    F: Fn(&KernelSource) -> Result<CompiledModule> + Sync,
{
    let job = &job;
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let handle = std::thread::Builder::new()
                    .name(format!("nvrtc {}", src.file))
                    .spawn_scoped(scope, move || job(src));
                (src, handle)
            })
            .collect();
        // Every thread is joined before any result is looked at, so none is left running.
        let results: Vec<Result<CompiledModule>> = handles
            .into_iter()
            .map(|(src, handle)| match handle {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(KernelError::Panic {
                        context: format!("compiling {}", src.file),
                        message: "the compile thread panicked".into(),
                    })
                }),
                Err(_) => job(src),
            })
            .collect();
        results.into_iter().collect()
    })
}

/// Destroys the nvrtc program when dropped, on every path out of [`run_nvrtc`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program` and destroyed only here. A failure to free has
        // nowhere to go and costs only memory.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// One nvrtc compilation: create, compile, fetch the PTX or the cubin.
fn run_nvrtc(src: &KernelSource, arch: &str, kind: ModuleKind) -> Result<Vec<u8>> {
    let options = options_for(arch);
    let fail = |message: String, log: String| KernelError::Compile {
        file: src.file.to_string(),
        arch: arch.to_string(),
        message,
        log,
    };
    // build.rs rejects NUL bytes in sources; a hand-made KernelSource could still hold one.
    let text = CString::new(src.source)
        .map_err(|_| fail("the source contains a NUL byte".into(), String::new()))?;
    let name = CString::new(src.file)
        .map_err(|_| fail("the file name contains a NUL byte".into(), String::new()))?;
    let program = result::create_program(&text, Some(&name))
        .map(Program)
        .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}"), String::new()))?;
    // SAFETY (all calls below): `program` is a live program created above; `text` and `name`
    // outlive it (declared first, dropped last). The options hold no NUL byte (fixed strings
    // and a validated arch), so cudarc's CString conversion cannot fail.
    if let Err(e) = unsafe { result::compile_program(program.0, &options) } {
        return Err(fail(
            format!("{e:?} (options: {})", options.join(" ")),
            program_log(&program),
        ));
    }
    let image = match kind {
        ModuleKind::Ptx => {
            let ptx = unsafe { result::get_ptx(program.0) }
                .map_err(|e| fail(format!("nvrtcGetPTX: {e:?}"), String::new()))?;
            let mut bytes: Vec<u8> = ptx.into_iter().map(|c| c as u8).collect();
            // nvrtc counts the terminating NUL in the size; keep the text only.
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            bytes
        }
        ModuleKind::Cubin => {
            let mut size = 0usize;
            unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}"), String::new()))?;
            let mut bytes = vec![0u8; size];
            unsafe { sys::nvrtcGetCUBIN(program.0, bytes.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}"), String::new()))?;
            bytes
        }
    };
    if image.is_empty() {
        return Err(fail("nvrtc returned an empty image".into(), String::new()));
    }
    Ok(image)
}

/// nvrtc's log for `program` (errors and warnings with line numbers); empty if unavailable.
fn program_log(program: &Program) -> String {
    // SAFETY: a live program (see `run_nvrtc`).
    match unsafe { result::get_program_log(program.0) } {
        Ok(raw) => {
            let bytes: Vec<u8> = raw.into_iter().map(|c| c as u8).collect();
            match CStr::from_bytes_until_nul(&bytes) {
                Ok(s) => s.to_string_lossy().into_owned(),
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            }
        }
        Err(e) => format!("(nvrtc log unavailable: {e:?})"),
    }
}

/// The on-disk cache of compiled modules ([`DiskCache`]).
mod cache;

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
        assert_eq!(arch_for_capability(8, 6), "sm_86");
        assert_eq!(ModuleKind::for_arch("sm_90a"), ModuleKind::Cubin);
        assert_eq!(ModuleKind::for_arch("compute_90"), ModuleKind::Ptx);
    }

    /// A stand-in source for the thread-pool tests (never handed to nvrtc).
    fn fake(name: &'static str) -> KernelSource {
        KernelSource {
            name,
            file: name,
            source: "",
            hash: 0,
        }
    }

    fn fake_module(src: &KernelSource) -> CompiledModule {
        CompiledModule {
            name: src.name,
            file: src.file,
            arch: "sm_90".into(),
            kind: ModuleKind::Cubin,
            image: src.name.as_bytes().to_vec(),
            from_cache: false,
        }
    }

    #[test]
    fn parallel_compiles_keep_source_order_and_report_the_first_error_in_it() {
        let sources: Vec<KernelSource> = ["a", "b", "c", "d", "e"].into_iter().map(fake).collect();
        // Later sources finish first: the output order must not depend on timing.
        let delay = |src: &KernelSource| {
            let rank = sources.iter().position(|s| s.name == src.name).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(10 * (5 - rank as u64)));
        };
        let ok = compile_each(&sources, |src| {
            delay(src);
            Ok(fake_module(src))
        })
        .unwrap();
        let names: Vec<&str> = ok.iter().map(|m| m.name).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);

        // "b" and "d" fail; "d" fails first in time, "b" first in source order.
        let err = compile_each(&sources, |src| {
            delay(src);
            match src.name {
                "b" | "d" => Err(KernelError::UnknownKernel(src.name.into())),
                _ => Ok(fake_module(src)),
            }
        })
        .unwrap_err();
        assert!(
            matches!(err, KernelError::UnknownKernel(ref n) if n == "b"),
            "{err}"
        );

        // A panicking job is an error for its source, not a panic of the caller.
        let err = compile_each(&sources, |src| {
            if src.name == "c" {
                panic!("boom");
            }
            Ok(fake_module(src))
        })
        .unwrap_err();
        assert!(matches!(err, KernelError::Panic { ref context, .. } if context == "compiling c"));
    }

    #[test]
    fn ptx_text_is_empty_for_a_cubin_and_loadable_images_are_terminated() {
        let ptx = CompiledModule {
            name: "m",
            file: "m.cu",
            arch: "compute_90".into(),
            kind: ModuleKind::Ptx,
            image: b".version 9.0".to_vec(),
            from_cache: false,
        };
        assert_eq!(ptx.ptx_text(), ".version 9.0");
        assert_eq!(ptx.load_bytes(), b".version 9.0\0");
        let cubin = CompiledModule {
            kind: ModuleKind::Cubin,
            arch: "sm_90".into(),
            image: b"\x7fELF".to_vec(),
            ..ptx
        };
        assert_eq!(cubin.ptx_text(), "");
        assert_eq!(cubin.load_bytes(), b"\x7fELF");
    }
}
