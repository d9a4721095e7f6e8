//! nvrtc compile checks: need `libnvrtc.so.13` but no GPU and no driver.
//!
//! Ignored by default because a plain `cargo test` on a machine without nvrtc must pass; CI runs
//! them explicitly (`kernels/ci-nvrtc.sh`, which selects the tests whose names start with
//! `every_kernel_compiles`). When run, they FAIL if nvrtc cannot be loaded.

use kernels::nvrtc::{compile, compile_all_with, DiskCache, ModuleKind};
use kernels::{KernelError, KernelSource, KERNELS, SOURCES};

/// Virtual architectures: PTX text, checked for its content (entry points, tensor-core
/// instructions, no local memory).
const PTX_ARCHES: &[&str] = &["compute_80", "compute_90"];

/// Real architectures (A100, H100): cubins, what `Gpu::new` compiles for and loads.
const CUBIN_ARCHES: &[&str] = &["sm_80", "sm_90"];

/// The kernels `module` must define.
fn expected_kernels(module: &str) -> &'static [&'static str] {
    KERNELS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, ks)| *ks)
        .unwrap_or_else(|| panic!("{module} not in KERNELS"))
}

fn report_nvrtc() {
    let info = kernels::probe::nvrtc().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "using {} (nvrtc {}.{})",
        info.library, info.version.0, info.version.1
    );
}

#[test]
#[ignore = "needs libnvrtc: pip install nvidia-cuda-nvrtc==13.0.*"]
fn every_kernel_compiles_with_nvrtc() {
    report_nvrtc();
    for arch in PTX_ARCHES {
        // No disk cache: these tests are about nvrtc itself.
        let modules = compile_all_with(arch, &DiskCache::off()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(modules.len(), SOURCES.len());
        for (m, src) in modules.iter().zip(SOURCES) {
            assert_eq!(m.file, src.file, "modules come back in SOURCES order");
            assert_eq!(m.kind, ModuleKind::Ptx);
            let ptx = m.ptx_text();
            assert!(ptx.contains(".version"), "{} for {arch}: not PTX", m.file);
            let target = arch.trim_start_matches("compute_");
            assert!(
                ptx.contains(&format!(".target sm_{target}")),
                "{} for {arch}: wrong .target",
                m.file
            );
            for k in expected_kernels(m.name) {
                // extern "C" keeps the name unmangled: `.visible .entry conv2d_forward(`.
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "kernel {k} missing from the PTX of {} for {arch}",
                    m.file
                );
            }
            // The bf16 convolutions really run on the tensor cores: the inline PTX made it
            // through (and not the emulator's stand-in), 16 mma per k16 step in each kernel.
            if m.name == "conv_bf16" {
                let mmas = ptx
                    .matches("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
                    .count();
                assert!(mmas >= 3 * 8, "{} for {arch}: {mmas} mma.sync", m.file);
            }
            // No kernel may spill to local memory by accident: no `.local` arrays (a spill
            // would be a perf bug, and a local array indexed dynamically usually a logic one).
            assert!(
                !ptx.contains(".local"),
                "{} for {arch} uses local memory",
                m.file
            );
        }
        eprintln!("{arch}: {} PTX modules OK", modules.len());
    }
}

#[test]
#[ignore = "needs libnvrtc: pip install nvidia-cuda-nvrtc==13.0.*"]
fn every_kernel_compiles_to_a_cubin() {
    report_nvrtc();
    for arch in CUBIN_ARCHES {
        // No disk cache: these tests are about nvrtc itself.
        let modules = compile_all_with(arch, &DiskCache::off()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(modules.len(), SOURCES.len());
        for (m, src) in modules.iter().zip(SOURCES) {
            assert_eq!(m.file, src.file, "modules come back in SOURCES order");
            assert_eq!(m.kind, ModuleKind::Cubin);
            assert!(m.ptx_text().is_empty(), "a cubin has no PTX text");
            let elf = &m.image;
            assert!(
                elf.starts_with(b"\x7fELF"),
                "{} for {arch}: not an ELF image",
                m.file
            );
            // e_machine (bytes 18..20, little-endian) is EM_CUDA = 190 in a cubin.
            assert_eq!(
                elf.get(18..20),
                Some(&190u16.to_le_bytes()[..]),
                "{} for {arch}: not a CUDA ELF",
                m.file
            );
            for k in expected_kernels(m.name) {
                // Each entry point is a symbol: its name, NUL-terminated, in the string table.
                let symbol = [b"\0", k.as_bytes(), b"\0"].concat();
                assert!(
                    elf.windows(symbol.len()).any(|w| w == symbol.as_slice()),
                    "kernel {k} missing from the cubin of {} for {arch}",
                    m.file
                );
            }
        }
        eprintln!("{arch}: {} cubins OK", modules.len());
    }
}

#[test]
#[ignore = "needs libnvrtc: pip install nvidia-cuda-nvrtc==13.0.*"]
fn every_kernel_compiles_and_errors_carry_the_nvrtc_log() {
    let bad = KernelSource {
        name: "broken",
        file: "broken.cu",
        source: "extern \"C\" __global__ void broken(float* y) { y[0] = undefined_thing; }",
        hash: 0,
    };
    for arch in ["sm_80", "compute_80"] {
        match compile(&bad, arch) {
            Err(KernelError::Compile {
                file,
                arch: got,
                log,
                ..
            }) => {
                assert_eq!(file, "broken.cu");
                assert_eq!(got, arch);
                assert!(log.contains("undefined_thing"), "log: {log}");
                assert!(log.contains("broken.cu"), "the log names the file: {log}");
            }
            other => panic!("expected a compile error for {arch}, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs libnvrtc: pip install nvidia-cuda-nvrtc==13.0.*"]
fn every_kernel_compiles_once_then_comes_from_the_disk_cache() {
    let dir = std::env::temp_dir().join(format!("kernels-nvrtc-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = DiskCache::at(&dir);
    let arch = "sm_80";
    let fresh = compile_all_with(arch, &cache).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        fresh.iter().all(|m| !m.from_cache),
        "an empty cache cannot hit"
    );
    let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        files,
        SOURCES.len(),
        "one file per module in {}",
        dir.display()
    );

    let cached = compile_all_with(arch, &cache).unwrap_or_else(|e| panic!("{e}"));
    for (a, b) in fresh.iter().zip(&cached) {
        assert!(b.from_cache, "{} was compiled again", b.file);
        assert_eq!((a.file, a.kind), (b.file, b.kind));
        assert!(a.image == b.image, "{}: the cached cubin differs", a.file);
    }

    // A damaged file is compiled again (and replaced); the others still hit.
    let victim = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("elementwise-sm_80-"))
        .unwrap_or_else(|| panic!("no elementwise cubin in {}", dir.display()));
    std::fs::write(&victim, b"RKCACHE1 torn").unwrap_or_else(|e| panic!("{e}"));
    let again = compile_all_with(arch, &cache).unwrap_or_else(|e| panic!("{e}"));
    for (a, b) in fresh.iter().zip(&again) {
        assert_eq!(b.from_cache, b.name != "elementwise", "{}", b.file);
        assert!(a.image == b.image, "{}: the image differs", a.file);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
