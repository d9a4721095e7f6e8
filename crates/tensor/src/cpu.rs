//! Which CPU kernels run: the best this CPU has (AVX2 + FMA, AVX-512, and for `--precision
//! bf16` AVX512-BF16's `vdpbf16ps` or AMX tiles), detected at run time, capped by
//! `RESNET_CPU_KERNELS`. Each op's fast path sits in the op's folder beside its reference
//! (`conv/fast/`, `batchnorm/fast.rs`, `elementwise/fast.rs`) and asks
//! [`kernels`] whether it may run; a CPU without AVX2, or `RESNET_CPU_KERNELS=reference`, runs
//! the reference bodies, which stay the oracle the tests hold the fast paths to. The
//! micro-kernels the fast paths share (AVX2, AVX-512, `vdpbf16ps`, AMX) are in `crate::gemm`;
//! which one a convolution pass runs, per shape, is `conv::fast::choose`'s decision.
//!
//! Results are deterministic and independent of the thread count on every path: work is
//! split by image (or by fixed groups of images, summed in order), never by thread. The fast
//! paths are not bit-equal to the reference: sums run in another order (the tests bound the
//! difference). `benches/cpu_ops.rs` times every path op by op; `train bench --profile` a
//! whole step.

use std::sync::OnceLock;

/// Which CPU kernels run: the best this CPU has, or less (`RESNET_CPU_KERNELS`). Ordered by
/// what each needs: a CPU that runs one runs every one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kernels {
    /// The portable reference bodies (im2col + the `gemm` crate, plain loops).
    Reference,
    /// AVX2 + FMA: fp32 micro-kernels of 8 lanes; bf16 runs them on operands rounded as they
    /// are packed.
    Avx2,
    /// AVX-512 for fp32; bf16 as for AVX2, on the AVX-512 kernels.
    Avx512,
    /// AVX-512, and `vdpbf16ps` for the bf16 convolutions where it is the faster (see
    /// [`bf16_dot_preferred`]).
    Avx512Bf16,
    /// AVX-512 and AMX tiles (`tdpbf16ps`) for the bf16 convolutions whose shapes fill them.
    Amx,
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kernels::Reference => "reference",
            Kernels::Avx2 => "avx2",
            Kernels::Avx512 => "avx512",
            Kernels::Avx512Bf16 => "avx512+bf16",
            Kernels::Amx => "amx",
        })
    }
}

impl Kernels {
    /// The value of `RESNET_CPU_KERNELS` that asks for these kernels.
    pub fn env_name(self) -> &'static str {
        match self {
            Kernels::Reference => "reference",
            Kernels::Avx2 => "avx2",
            Kernels::Avx512 => "avx512",
            Kernels::Avx512Bf16 => "avx512bf16",
            Kernels::Amx => "amx",
        }
    }

    /// Parses a `RESNET_CPU_KERNELS` value (`auto` and unset mean the best: `None`).
    fn from_env_name(s: &str) -> Result<Option<Kernels>, String> {
        Ok(Some(match s {
            "" | "auto" => return Ok(None),
            "reference" => Kernels::Reference,
            "avx2" => Kernels::Avx2,
            "avx512" => Kernels::Avx512,
            "avx512bf16" | "avx512+bf16" => Kernels::Avx512Bf16,
            "amx" => Kernels::Amx,
            other => {
                return Err(format!(
                    "RESNET_CPU_KERNELS={other} is not one of auto, reference, avx2, avx512, \
                     avx512bf16, amx"
                ))
            }
        }))
    }
}

/// What this CPU supports (AMX only once the OS has granted this process its tile state).
fn detect() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        let f32_ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        if f32_ok && is_x86_feature_detected!("avx512bf16") {
            if crate::gemm::amx::available() {
                return Kernels::Amx;
            }
            return Kernels::Avx512Bf16;
        }
        if f32_ok {
            return Kernels::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernels::Avx2;
        }
    }
    Kernels::Reference
}

/// The kernels in use: the best this CPU has, capped by `RESNET_CPU_KERNELS` (`reference`,
/// `avx2`, `avx512`, `avx512bf16`, `amx`; `auto` or unset: the best). A request above what the
/// CPU has, or a value not in the list, runs the best with a notice on stderr. Decided once
/// per process. (This crate's unit tests always get the best: they hold every path the CPU
/// has to the reference explicitly, whatever the environment says.)
pub fn kernels() -> Kernels {
    #[cfg(test)]
    return FORCED.with(|f| f.get()).unwrap_or_else(supported);
    #[cfg(not(test))]
    chosen().0
}

#[cfg(test)]
thread_local! {
    static FORCED: std::cell::Cell<Option<Kernels>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`kernels`] saying `k` on this thread (tests: each body the CPU has, one at a
/// time; the ops decide their body on the calling thread, before any parallel loop).
#[cfg(test)]
pub(crate) fn with_kernels<R>(k: Kernels, f: impl FnOnce() -> R) -> R {
    assert!(k <= supported(), "{k} cannot run here");
    FORCED.with(|c| c.set(Some(k)));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    FORCED.with(|c| c.set(None));
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The SIMD bodies of the elementwise and batch-norm ops this CPU runs (tests).
#[cfg(test)]
pub(crate) fn simd_bodies() -> Vec<Kernels> {
    let all = [Kernels::Avx2, Kernels::Avx512];
    let ran: Vec<Kernels> = all.into_iter().filter(|&k| k <= supported()).collect();
    if ran.len() < all.len() {
        eprintln!("skipped the bodies this CPU lacks (a CPU-capability skip); ran {ran:?}");
    }
    ran
}

/// The kernels and whether `RESNET_CPU_KERNELS` named them.
fn chosen() -> (Kernels, bool) {
    static CHOSEN: OnceLock<(Kernels, bool)> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        keep_freed_memory();
        let best = supported();
        let asked = std::env::var("RESNET_CPU_KERNELS").unwrap_or_default();
        match Kernels::from_env_name(&asked) {
            Ok(None) => (best, false),
            Ok(Some(k)) if k <= best => (k, true),
            Ok(Some(k)) => {
                eprintln!(
                    "note: RESNET_CPU_KERNELS={asked}: this CPU cannot run the {k} kernels; \
                     running {best}"
                );
                (best, false)
            }
            Err(e) => {
                eprintln!("note: {e}; running the best this CPU has ({best})");
                (best, false)
            }
        }
    })
}

/// The best kernels this CPU has, ignoring `RESNET_CPU_KERNELS`.
pub fn supported() -> Kernels {
    static DETECTED: OnceLock<Kernels> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// Whether a bf16 convolution that AMX does not take runs on `vdpbf16ps` (rather than the
/// fp32 kernels on rounded operands). `vdpbf16ps` does two products per lane, so it wins where
/// it issues at the FMA's rate (AMD Zen 4/5: 1.5-1.9x the fp32 pass here); Intel's cores issue
/// it at half that rate, where it lost to fp32 (ResNet-20 bf16 271 ms/step against fp32 166 on
/// a Xeon with AMX, issue 19). So: on AMD, or when `RESNET_CPU_KERNELS=avx512bf16` asks for it.
pub fn bf16_dot_preferred() -> bool {
    if cfg!(test) {
        return true;
    }
    static VENDOR_AMD: OnceLock<bool> = OnceLock::new();
    let amd = *VENDOR_AMD.get_or_init(vendor_is_amd);
    amd || chosen() == (Kernels::Avx512Bf16, true)
}

/// Whether CPUID's vendor string says AMD.
fn vendor_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 exists on every x86-64 CPU. (`__cpuid` is safe from Rust 1.94;
        // unsafe before.)
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
