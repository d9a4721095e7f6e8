//! The device's ceilings (`peak.cu`): the tensor-core and fp32 peaks this card reaches, which
//! the kernel benchmark (`cargo bench -p kernels`) puts beside each kernel for
//! its roofline column. Not an op: a probe of the device, like the rest of this crate.

use cudarc::driver::{CudaViewMut, LaunchConfig};

use crate::error::{KernelError, Result};
use crate::launch::{arg::*, to_int, Kernel};
use crate::Gpu;

/// Threads per block of both probes (whole warps: the mma probe needs them).
pub const PEAK_THREADS: u32 = 256;
/// Independent chains per thread (mma probe: per warp), as `PEAK_CHAINS` in peak.cu.
pub const PEAK_CHAINS: u64 = 8;

/// The two probes' entries (`out`, `iters`, the multiplier `m`).
pub const KERNELS: [Kernel; 2] = [MMA_BF16, FMA_F32];
const MMA_BF16: Kernel = Kernel::new("peak_mma_bf16", &[F32_OUT, I32, F32]);
const FMA_F32: Kernel = Kernel::new("peak_fma_f32", &[F32_OUT, I32, F32]);

fn config(out_len: usize, kernel: &'static str) -> Result<LaunchConfig> {
    if out_len == 0 || !out_len.is_multiple_of(PEAK_THREADS as usize) {
        return Err(KernelError::invalid(
            kernel,
            format!("out has {out_len} elements, need a positive multiple of {PEAK_THREADS}"),
        ));
    }
    Ok(LaunchConfig {
        grid_dim: ((out_len / PEAK_THREADS as usize) as u32, 1, 1),
        block_dim: (PEAK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// FLOP of one [`peak_mma_bf16`] launch: 2·16·8·16 per mma, 8 mma per warp per iteration.
pub fn peak_mma_bf16_flops(out_len: usize, iters: usize) -> u64 {
    (out_len as u64 / 32) * iters as u64 * PEAK_CHAINS * 2 * 16 * 8 * 16
}

/// FLOP of one [`peak_fma_f32`] launch: 2 per fma, 8 per thread per iteration.
pub fn peak_fma_f32_flops(out_len: usize, iters: usize) -> u64 {
    out_len as u64 * iters as u64 * PEAK_CHAINS * 2
}

/// One thread per element of `out` (a multiple of 256), `iters` rounds of 8 bf16 mma per
/// warp; `m` = 1 (a run-time multiplier, so nothing folds). Needs sm_80+.
pub fn peak_mma_bf16(
    gpu: &Gpu,
    out: &mut CudaViewMut<'_, f32>,
    iters: usize,
    m: f32,
) -> Result<()> {
    probe(gpu, MMA_BF16, out, iters, m)
}

/// One thread per element of `out` (a multiple of 256), `iters` rounds of 8 fmaf each.
pub fn peak_fma_f32(gpu: &Gpu, out: &mut CudaViewMut<'_, f32>, iters: usize, m: f32) -> Result<()> {
    probe(gpu, FMA_F32, out, iters, m)
}

fn probe(
    gpu: &Gpu,
    kernel: Kernel,
    out: &mut CudaViewMut<'_, f32>,
    iters: usize,
    m: f32,
) -> Result<()> {
    let cfg = config(out.len(), kernel.name)?;
    let iters = to_int(kernel.name, "iters", iters)?;
    kernel.launch(gpu, cfg).arg(out).arg(iters).arg(m).run()
}
