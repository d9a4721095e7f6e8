//! The batch norm's CUDA launcher (`batchnorm.cu`), and [`BnShape`], the op's one shape.
//!
//! Training forward and backward are two launches each on a grid (chunks, C): per-chunk
//! partial statistics into a workspace, then a fixed-order combine + the elementwise pass (see
//! the header of `batchnorm.cu`). The caller provides the workspace,
//! [`BnShape::stats_workspace_len`] floats; it needs no initialisation.

use kernels::launch::{arg::*, check_len, check_positive, grid_1d, to_int, Kernel, LaunchConfig};
use kernels::{launch, CudaView, CudaViewMut, Gpu, KernelError, Result};

use crate::Tensor;

const FORWARD_PARTIAL: Kernel = Kernel::new(
    "batchnorm_forward_train_partial",
    &[F32_IN, F32_OUT, I32, I32, I32],
);
const FORWARD_APPLY: Kernel = Kernel::new(
    "batchnorm_forward_train_apply",
    &[
        F32_IN, F32_IN, F32_OUT, F32_IN, F32_IN, F32_OUT, F32_OUT, F32_OUT, F32_OUT, I32, I32, I32,
        F32, F32, I32,
    ],
);
const FORWARD_EVAL: Kernel = Kernel::new(
    "batchnorm_forward_eval",
    &[
        F32_IN, F32_OUT, F32_IN, F32_IN, F32_IN, F32_IN, I32, I32, I32, F32, I32,
    ],
);
const BACKWARD_PARTIAL: Kernel = Kernel::new(
    "batchnorm_backward_partial",
    &[
        F32_IN, F32_IN, F32_IN, F32_IN, F32_IN, F32_OUT, I32, I32, I32, I32,
    ],
);
const BACKWARD_APPLY: Kernel = Kernel::new(
    "batchnorm_backward_apply",
    &[
        F32_IN, F32_IN, F32_IN, F32_IN, F32_IN, F32_IN, F32_IN, F32_OUT, F32_OUT, F32_OUT, I32,
        I32, I32, I32,
    ],
);

/// Every kernel this file launches (for the signature check).
pub const KERNELS: [Kernel; 5] = [
    FORWARD_PARTIAL,
    FORWARD_APPLY,
    FORWARD_EVAL,
    BACKWARD_PARTIAL,
    BACKWARD_APPLY,
];

/// Block size of the chunked batchnorm kernels (multiple of 32, see `block_sum`).
pub const BN_THREADS: u32 = 256;
/// Values of a channel each thread of a chunk owns (`BN_PER_THREAD` in batchnorm.cu; a host test
/// checks they agree). Held in registers by the forward statistics kernel.
pub const BN_PER_THREAD: usize = 16;
/// Values per chunk (one block): 4096. Why: 16 values a thread still fit in registers, so the
/// forward's two passes over a chunk (mean, then centred M2) read `x` once; each thread has 16
/// independent loads in flight (16 KiB per block), enough to keep memory busy with one or two
/// blocks per SM; the per-block fixed costs (four block reductions across the two launches,
/// re-reading the channel's partials) stay small next to 4096 values; and ResNet's BN inputs
/// still give one full wave of blocks (CIFAR ResNet-20, batch 128: 16 x 32 = 512, 32 x 8 = 256,
/// 64 x 2 = 128 blocks; one block per channel gave 16 / 32 / 64). Smaller chunks would add
/// partials and reductions without putting more bytes in flight; larger ones would leave the
/// 8x8 stage with 64 blocks.
pub const BN_CHUNK: usize = BN_PER_THREAD * BN_THREADS as usize;
/// `grid.y` limit of a CUDA launch: channels per launch.
const MAX_GRID_Y: usize = 65_535;

/// Shape of a BatchNorm2d input: N, C and H*W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnShape {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// H * W.
    pub hw: usize,
}

impl BnShape {
    /// The shape of an NCHW batch norm input.
    pub fn of(x: &Tensor) -> Self {
        let (n, c, h, w) = x.dims4();
        BnShape { n, c, hw: h * w }
    }
    /// N*C*HW.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// True when any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values per channel, N*HW.
    pub fn per_channel(&self) -> usize {
        self.n * self.hw
    }
    /// Chunks of [`BN_CHUNK`] values per channel (the last one may be short); at least 1.
    pub fn chunks(&self) -> usize {
        self.per_channel().div_ceil(BN_CHUNK).max(1)
    }
    /// Floats of workspace [`batchnorm_forward_train`] and [`batchnorm_backward`] need: two
    /// partials per chunk and channel.
    pub fn stats_workspace_len(&self) -> usize {
        2 * self.c * self.chunks()
    }
    fn ints(&self, kernel: &'static str) -> Result<(i32, i32, i32)> {
        check_positive(kernel, &[("n", self.n), ("c", self.c), ("hw", self.hw)])?;
        to_int(kernel, "N*C*HW", self.len())?;
        Ok((
            to_int(kernel, "n", self.n)?,
            to_int(kernel, "c", self.c)?,
            to_int(kernel, "hw", self.hw)?,
        ))
    }
    /// The ints of [`Self::ints`], plus the checks the chunked kernels need: C fits `grid.y`,
    /// chunk offsets and workspace indices fit i32, and `workspace` is big enough.
    fn chunked_ints(&self, kernel: &'static str, workspace: usize) -> Result<(i32, i32, i32)> {
        let ints = self.ints(kernel)?;
        if self.c > MAX_GRID_Y {
            return Err(KernelError::invalid(
                kernel,
                format!("c = {} exceeds the grid's y limit {MAX_GRID_Y}", self.c),
            ));
        }
        to_int(kernel, "chunks * chunk", self.chunks() * BN_CHUNK)?;
        let need = self.stats_workspace_len();
        to_int(kernel, "workspace", need)?;
        if workspace < need {
            return Err(KernelError::invalid(
                kernel,
                format!("workspace has {workspace} elements, needs {need}"),
            ));
        }
        Ok(ints)
    }
    /// Every buffer's length: `full` ones hold N*C*HW values, `per_channel` ones C.
    fn check_lens(
        &self,
        kernel: &'static str,
        full: &[(&str, usize)],
        per_channel: &[(&str, usize)],
    ) -> Result<()> {
        for &(what, len) in full {
            check_len(kernel, what, len, self.len())?;
        }
        for &(what, len) in per_channel {
            check_len(kernel, what, len, self.c)?;
        }
        Ok(())
    }
    /// The forward's buffers: x and y, gamma and beta, the running statistics and `saved`.
    fn check_forward(
        &self,
        kernel: &'static str,
        (x, y): (usize, usize),
        params: &BnParams<'_, '_>,
        [running_mean, running_var]: [usize; 2],
        saved: &[(&str, usize)],
    ) -> Result<()> {
        self.check_lens(
            kernel,
            &[("x", x), ("y", y)],
            &[
                ("gamma", params.gamma.len()),
                ("beta", params.beta.len()),
                ("running_mean", running_mean),
                ("running_var", running_var),
            ],
        )?;
        self.check_lens(kernel, &[], saved)
    }
    /// Grid (chunks, C) of [`BN_THREADS`]: the four chunked training kernels.
    pub fn chunked_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.chunks() as u32, self.c as u32, 1),
            block_dim: (BN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Per-channel buffers of one BatchNorm2d layer (all of length C).
pub struct BnParams<'a, 'b> {
    /// gamma (weight).
    pub gamma: &'a CudaView<'b, f32>,
    /// beta (bias).
    pub beta: &'a CudaView<'b, f32>,
}

/// Training-mode forward: normalises with batch statistics, updates running stats in place and
/// saves mean / invstd for backward; `relu` applies ReLU to the output in the same pass. Two
/// launches (per-chunk statistics into `workspace`, then combine + normalise); `workspace` needs
/// [`BnShape::stats_workspace_len`] elements, any contents. CPU twin: tensor's batchnorm2d
/// forward (training), then relu.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    shape: &BnShape,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    params: &BnParams<'_, '_>,
    running_mean: &mut CudaViewMut<'_, f32>,
    running_var: &mut CudaViewMut<'_, f32>,
    save_mean: &mut CudaViewMut<'_, f32>,
    save_invstd: &mut CudaViewMut<'_, f32>,
    workspace: &mut CudaViewMut<'_, f32>,
    momentum: f32,
    eps: f32,
    relu: bool,
) -> Result<()> {
    const K: &str = "batchnorm_forward_train_partial";
    let (n, c, hw) = shape.chunked_ints(K, workspace.len())?;
    let saved = [
        ("save_mean", save_mean.len()),
        ("save_invstd", save_invstd.len()),
    ];
    let running = [running_mean.len(), running_var.len()];
    shape.check_forward(K, (x.len(), y.len()), params, running, &saved)?;
    let cfg = shape.chunked_config();
    let part = workspace;
    launch!(FORWARD_PARTIAL, gpu, cfg; x, &mut *part, n, c, hw)?;
    launch!(FORWARD_APPLY, gpu, cfg; x, &part.as_view(), y, params.gamma, params.beta,
        running_mean, running_var, save_mean, save_invstd, n, c, hw, momentum, eps,
        i32::from(relu))
}

/// Eval-mode forward with running statistics, ReLU fused when `relu`. CPU twin: tensor's
/// batchnorm2d forward (eval), then relu.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    shape: &BnShape,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    params: &BnParams<'_, '_>,
    running_mean: &CudaView<'_, f32>,
    running_var: &CudaView<'_, f32>,
    eps: f32,
    relu: bool,
) -> Result<()> {
    const K: &str = "batchnorm_forward_eval";
    let (n, c, hw) = shape.ints(K)?;
    let running = [running_mean.len(), running_var.len()];
    shape.check_forward(K, (x.len(), y.len()), params, running, &[])?;
    launch!(FORWARD_EVAL, gpu, grid_1d(shape.len()); x, y, params.gamma, params.beta,
        running_mean, running_var, n, c, hw, eps, i32::from(relu))
}

/// Backward: dx (overwritten), dgamma and dbeta (accumulated). With `relu_out` (the fused
/// forward's output) ReLU's backward is applied to `dy` first. Two launches (per-chunk sums into
/// `workspace`, then combine + dx); `workspace` needs [`BnShape::stats_workspace_len`] elements,
/// any contents. CPU twin: relu backward, then tensor's batchnorm2d backward.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    shape: &BnShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    gamma: &CudaView<'_, f32>,
    save_mean: &CudaView<'_, f32>,
    save_invstd: &CudaView<'_, f32>,
    relu_out: Option<&CudaView<'_, f32>>,
    dx: &mut CudaViewMut<'_, f32>,
    dgamma: &mut CudaViewMut<'_, f32>,
    dbeta: &mut CudaViewMut<'_, f32>,
    workspace: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "batchnorm_backward_partial";
    let (n, c, hw) = shape.chunked_ints(K, workspace.len())?;
    // Without ReLU the kernel never reads relu_out: any valid pointer will do (dy).
    let relu_out_len = relu_out.map_or(dy.len(), |out| out.len());
    shape.check_lens(
        K,
        &[
            ("dy", dy.len()),
            ("relu_out", relu_out_len),
            ("x", x.len()),
            ("dx", dx.len()),
        ],
        &[
            ("gamma", gamma.len()),
            ("save_mean", save_mean.len()),
            ("save_invstd", save_invstd.len()),
            ("dgamma", dgamma.len()),
            ("dbeta", dbeta.len()),
        ],
    )?;
    let relu = i32::from(relu_out.is_some());
    let relu_out = relu_out.unwrap_or(dy);
    let cfg = shape.chunked_config();
    let part = workspace;
    launch!(BACKWARD_PARTIAL, gpu, cfg; dy, x, save_mean, save_invstd, relu_out, &mut *part,
        n, c, hw, relu)?;
    launch!(BACKWARD_APPLY, gpu, cfg; dy, x, gamma, save_mean, save_invstd, relu_out,
        &part.as_view(), dx, dgamma, dbeta, n, c, hw, relu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bn(n: usize, c: usize, hw: usize) -> BnShape {
        BnShape { n, c, hw }
    }

    /// The chunk the launcher plans with is the chunk the kernels index with.
    #[test]
    fn per_thread_count_matches_the_kernel_source() {
        let src = kernels::source("batchnorm").unwrap().source;
        let define = src
            .lines()
            .find_map(|l| l.trim().strip_prefix("#define BN_PER_THREAD "))
            .expect("#define BN_PER_THREAD in batchnorm.cu");
        assert_eq!(define.trim().parse::<usize>().unwrap(), BN_PER_THREAD);
        assert_eq!(BN_CHUNK, 4096);
    }

    #[test]
    fn chunked_grid_covers_every_value_once() {
        // CIFAR ResNet-20 at batch 128: 512 / 256 / 128 blocks instead of 16 / 32 / 64.
        for (s, chunks) in [
            (bn(128, 16, 32 * 32), 32),
            (bn(128, 32, 16 * 16), 8),
            (bn(128, 64, 8 * 8), 2),
            (bn(128, 512, 4 * 4), 1),
            (bn(1, 3, 1), 1),
            (bn(3, 2, 4103), 4), // ragged: 12309 values = 3 full chunks + 21
        ] {
            assert_eq!(s.chunks(), chunks, "{s:?}");
            let cfg = s.chunked_config();
            assert_eq!(cfg.grid_dim, (chunks as u32, s.c as u32, 1));
            assert_eq!(cfg.block_dim, (BN_THREADS, 1, 1));
            let cover = chunks * BN_CHUNK;
            assert!(cover >= s.per_channel() && cover - s.per_channel() < BN_CHUNK);
            assert_eq!(s.stats_workspace_len(), 2 * s.c * chunks);
        }
    }

    #[test]
    fn chunked_checks() {
        let s = bn(2, 3, 5000);
        assert!(s.chunked_ints("t", s.stats_workspace_len()).is_ok());
        assert!(s.chunked_ints("t", s.stats_workspace_len() - 1).is_err());
        assert!(bn(1, 70_000, 1).chunked_ints("t", 1 << 20).is_err());
        assert!(bn(0, 3, 5).chunked_ints("t", 1 << 20).is_err());
    }

    #[test]
    fn counts_are_refused_past_the_kernels_index_range() {
        use kernels::launch::MAX_LEN;
        // MAX_LEN is a whole number of chunks: the chunked grid reaches exactly to it.
        assert!(bn(1, 1, MAX_LEN)
            .chunked_ints("t", 2 * (MAX_LEN / BN_CHUNK))
            .is_ok());
        assert!(bn(1, 1, MAX_LEN + 1).chunked_ints("t", 1 << 20).is_err());
        assert!(bn(1, 1, MAX_LEN + 1).ints("t").is_err()); // eval's grid-stride loop
        assert!(bn(2, 3, MAX_LEN / 6).ints("t").is_ok());
        assert!(bn(2, 3, MAX_LEN / 6 + 1).ints("t").is_err());
    }
}
