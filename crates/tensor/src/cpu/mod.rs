//! The CPU engine's fast paths: the same ops as the reference bodies beside each op, computed
//! with AVX-512 (and AVX512-BF16's `vdpbf16ps` for `--precision bf16`) where the CPU has them,
//! detected at run time. A CPU without them, or `RESNET_CPU_KERNELS=reference`, runs the
//! reference bodies, which stay the oracle the tests hold these to.
//!
//! Results are deterministic and independent of the thread count, like the reference: work is
//! split by image (or by fixed groups of images, summed in order), never by thread. They are
//! not bit-equal to the reference: sums run in another order (the tests bound the difference).
//!
//! - [`conv`]: the three convolution passes (`conv_x86.rs` their bodies), over operand layouts
//!   worked out per call (`plan.rs`) and packed by `pack.rs`, on the micro-kernels of
//!   `gemm_f32.rs`, `gemm_bf16.rs` (`vdpbf16ps`) and `wgrad.rs` (channels-last weight
//!   gradient); `simd.rs` holds the shared vector helpers.
//! - `bn`, `elementwise`: batch norm and ReLU/add with their passes fused.
//! - `benches/cpu_ops.rs` times every path op by op; `train bench --profile` a whole step.

pub(crate) mod bn;
pub mod conv;
pub(crate) mod elementwise;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm_bf16;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm_f32;
#[cfg(target_arch = "x86_64")]
pub(crate) mod pack;
#[cfg(target_arch = "x86_64")]
pub(crate) mod plan;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod wgrad;

use std::sync::OnceLock;

/// Which CPU kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernels {
    /// The portable reference bodies (im2col + the `gemm` crate, plain loops).
    Reference,
    /// AVX-512 for fp32; bf16 runs the reference twin.
    Avx512,
    /// AVX-512, and `vdpbf16ps` for the bf16 convolutions.
    Avx512Bf16,
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kernels::Reference => "reference",
            Kernels::Avx512 => "avx512",
            Kernels::Avx512Bf16 => "avx512+bf16",
        })
    }
}

/// What this CPU supports.
fn detect() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        let f32_ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        if f32_ok && is_x86_feature_detected!("avx512bf16") {
            return Kernels::Avx512Bf16;
        }
        if f32_ok {
            return Kernels::Avx512;
        }
    }
    Kernels::Reference
}

/// The kernels in use: the best this CPU has, capped by `RESNET_CPU_KERNELS` (`reference`,
/// `avx512`; anything else, or unset, means the best). Decided once per process. (This crate's
/// unit tests always get the best: they hold the fast paths to the reference explicitly,
/// whatever the environment says.)
pub fn kernels() -> Kernels {
    if cfg!(test) {
        return supported();
    }
    static CHOSEN: OnceLock<Kernels> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        keep_freed_memory();
        let best = detect();
        match std::env::var("RESNET_CPU_KERNELS").as_deref() {
            Ok("reference") => Kernels::Reference,
            Ok("avx512") => best.min(Kernels::Avx512),
            _ => best,
        }
    })
}

/// The best kernels this CPU has, ignoring `RESNET_CPU_KERNELS`.
pub fn supported() -> Kernels {
    static DETECTED: OnceLock<Kernels> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// The CPU engine allocates and frees activation-sized buffers (MBs) all through a step. glibc
/// serves blocks above its mmap threshold with fresh pages and hands freed ones back to the OS,
/// so each step re-faulted ~180 MB of pages for ResNet-20 at batch 128 (~45K page faults,
/// 10-20% of the step's CPU time). Serving blocks up to 32 MiB from the heap and not trimming
/// it keeps them for reuse; the peak resident memory stays what it was.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator thresholds; it is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
