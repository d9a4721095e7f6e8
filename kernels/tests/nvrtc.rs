//! nvrtc compile checks: need `libnvrtc.so.13` but no GPU and no driver.
//!
//! Ignored by default because a plain `cargo test` on a machine without nvrtc must pass; CI runs
//! them explicitly (`kernels/ci-nvrtc.sh`). When run, they FAIL if nvrtc cannot be loaded.

use kernels::nvrtc::{compile, compile_all};
use kernels::{KernelError, KernelSource, KERNELS, SOURCES};

/// Architectures compile-checked: real (`sm_*`, what an A100 / H100 run) and virtual
/// (`compute_*`, what `Gpu::new` compiles for and the driver JITs).
const ARCHES: &[&str] = &["sm_80", "sm_90", "compute_80", "compute_90"];

#[test]
#[ignore = "needs libnvrtc: pip install nvidia-cuda-nvrtc==13.0.*"]
fn every_kernel_compiles_with_nvrtc() {
    let info = kernels::probe::nvrtc().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "using {} (nvrtc {}.{})",
        info.library, info.version.0, info.version.1
    );
    for arch in ARCHES {
        let modules = compile_all(arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(modules.len(), SOURCES.len());
        for m in &modules {
            let ptx = m.ptx_text();
            assert!(ptx.contains(".version"), "{} for {arch}: not PTX", m.file);
            let target = arch
                .trim_start_matches("compute_")
                .trim_start_matches("sm_");
            assert!(
                ptx.contains(&format!(".target sm_{target}")),
                "{} for {arch}: wrong .target",
                m.file
            );
            let expected = KERNELS
                .iter()
                .find(|(name, _)| *name == m.name)
                .map(|(_, ks)| *ks)
                .unwrap_or_else(|| panic!("{} not in KERNELS", m.name));
            for k in expected {
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
        eprintln!("{arch}: {} modules OK", modules.len());
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
    match compile(&bad, "sm_80") {
        Err(KernelError::Compile {
            file, arch, log, ..
        }) => {
            assert_eq!(file, "broken.cu");
            assert_eq!(arch, "sm_80");
            assert!(log.contains("undefined_thing"), "log: {log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
