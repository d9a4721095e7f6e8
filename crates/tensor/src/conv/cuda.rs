//! The convolution's CUDA launcher: implicit-GEMM forward, backward-data and split-K
//! backward-weight, in fp32 (`conv.cu`, the reference) or with bf16 operands on the tensor
//! cores (`conv_bf16.cu`), each pass a table of variants chosen by [`Precision`] and
//! [`ConvTile`] and launched from one place ([`conv2d`]); and the plans of those launches:
//! which tile a GEMM gets, its grid, and how its reduction axis K is split over blockIdx.z
//! ([`ConvShape`]'s plans: pure functions, tested without a GPU).

use kernels::launch::{
    arg::*, check_len, grid_1d, to_int, Kernel, KernelTable, LaunchConfig, Param,
};
use kernels::{CudaView, CudaViewMut, Gpu, KernelError, Result};

use super::{ConvShape, Precision};

/// The three GEMMs of a convolution, each `out = a ⋆ b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `y = conv(x, w)`: a = x, b = w, out = y.
    Forward,
    /// The input gradient: a = dy, b = w, out = dx.
    BackwardData,
    /// The weight gradient: a = dy, b = x, out = dW (always through split-K partials).
    BackwardWeight,
}

/// The forward and data-gradient GEMMs' parameters: `(a, b, out, n, c_in, h, w, c_out, oh,
/// ow, k, stride, pad, beta, k_chunk)`.
const GEMM: &[Param] = &[
    F32_IN, F32_IN, F32_OUT, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, F32, I32,
];
/// The weight gradient's partial GEMM: the same without beta (each split writes its slab).
const PARTIAL: &[Param] = &[
    F32_IN, F32_IN, F32_OUT, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32,
];

/// A conv GEMM's six variants, named as the sources name them: the base name, `_bf16` for the
/// tensor cores, `_m32` / `_m16` for the narrower tiles.
macro_rules! variants {
    ($params:expr, $base:literal) => {
        KernelTable {
            params: $params,
            variants: &[
                ((Precision::Fp32, ConvTile::M64), $base),
                ((Precision::Fp32, ConvTile::M32), concat!($base, "_m32")),
                ((Precision::Fp32, ConvTile::M16), concat!($base, "_m16")),
                ((Precision::Bf16, ConvTile::M64), concat!($base, "_bf16")),
                (
                    (Precision::Bf16, ConvTile::M32),
                    concat!($base, "_bf16_m32"),
                ),
                (
                    (Precision::Bf16, ConvTile::M16),
                    concat!($base, "_bf16_m16"),
                ),
            ],
        }
    };
}

static FORWARD: KernelTable<(Precision, ConvTile)> = variants!(GEMM, "conv2d_forward");
static BACKWARD_DATA: KernelTable<(Precision, ConvTile)> = variants!(GEMM, "conv2d_backward_data");
static WEIGHT_PARTIAL: KernelTable<(Precision, ConvTile)> =
    variants!(PARTIAL, "conv2d_backward_weight_partial");
/// `out = beta·out + Σ_s part[s]`: the second launch of every split GEMM.
const SPLIT_REDUCE: Kernel = Kernel::new("conv2d_split_reduce", &[F32_IN, F32_OUT, I32, I32, F32]);

/// Every kernel this file launches (for the signature check).
pub fn kernels() -> impl Iterator<Item = Kernel> {
    [&FORWARD, &BACKWARD_DATA, &WEIGHT_PARTIAL]
        .into_iter()
        .flat_map(|t| t.kernels())
        .chain([SPLIT_REDUCE])
}

impl ConvPass {
    /// The pass's variants.
    fn table(self) -> &'static KernelTable<(Precision, ConvTile)> {
        match self {
            ConvPass::Forward => &FORWARD,
            ConvPass::BackwardData => &BACKWARD_DATA,
            ConvPass::BackwardWeight => &WEIGHT_PARTIAL,
        }
    }

    /// The name errors give: the fp32 kernel's.
    fn name(self) -> &'static str {
        self.table().variants[0].1
    }

    /// The GEMM's row count M, which picks the tile: output channels, or input channels for
    /// the data gradient.
    fn rows(self, s: &ConvShape) -> usize {
        match self {
            ConvPass::Forward | ConvPass::BackwardWeight => s.c_out,
            ConvPass::BackwardData => s.c_in,
        }
    }

    /// (name, length) of a, b and out.
    fn operands(self, s: &ConvShape) -> [(&'static str, usize); 3] {
        match self {
            ConvPass::Forward => [("x", s.x_len()), ("w", s.w_len()), ("y", s.y_len())],
            ConvPass::BackwardData => [("dy", s.y_len()), ("w", s.w_len()), ("dx", s.x_len())],
            ConvPass::BackwardWeight => [("dy", s.y_len()), ("x", s.x_len()), ("dw", s.w_len())],
        }
    }

    /// Elements of split-K workspace [`conv2d`] needs for this pass (0: none).
    pub fn workspace_len(self, s: &ConvShape, p: Precision) -> usize {
        match self {
            ConvPass::Forward => s.forward_workspace_len(p),
            ConvPass::BackwardData => s.backward_data_workspace_len(p),
            ConvPass::BackwardWeight => s.weight_grad_workspace_len(),
        }
    }

    /// The split-K plan `(splits, k_chunk)` and the grid.
    fn plan(self, s: &ConvShape, p: Precision) -> ((usize, usize), LaunchConfig) {
        match self {
            ConvPass::Forward => (s.forward_plan(p), conv2d_forward_config(s, p)),
            ConvPass::BackwardData => (s.backward_data_plan(p), conv2d_backward_data_config(s, p)),
            ConvPass::BackwardWeight => (s.weight_grad_plan(), conv2d_backward_weight_config(s, p)),
        }
    }
}

/// `out = pass(a, b) + beta·out` (see [`ConvPass`] for a, b and out). CPU twin: the conv
/// passes of [`super`] (with the operands rounded to bf16 first for [`Precision::Bf16`]).
///
/// `workspace` holds the split-K partials: it needs [`ConvShape::forward_workspace_len`] /
/// [`ConvShape::backward_data_workspace_len`] elements (`None` when that is 0: one split writes
/// `out` directly), and always [`ConvShape::weight_grad_workspace_len`] for the weight
/// gradient, whose partials a fixed-order reduction then adds onto `out` (deterministic).
// The pass, its arithmetic and shape, three buffers, the workspace and beta: each says which is
// which at the call site.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    gpu: &Gpu,
    pass: ConvPass,
    precision: Precision,
    shape: &ConvShape,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    workspace: Option<&mut CudaViewMut<'_, f32>>,
    beta: f32,
) -> Result<()> {
    let name = pass.name();
    let dims = shape.kernel_ints(name)?;
    let [(a_what, a_len), (b_what, b_len), (out_what, out_len)] = pass.operands(shape);
    check_len(name, a_what, a.len(), a_len)?;
    check_len(name, b_what, b.len(), b_len)?;
    check_len(name, out_what, out.len(), out_len)?;
    let ((splits, chunk), cfg) = pass.plan(shape, precision);
    // The kernel's split offsets (up to splits · k_chunk) stay within int.
    to_int(name, "splits * k_chunk", splits * chunk)?;
    let k_chunk = to_int(name, "k_chunk", chunk)?;
    let kernel = pass
        .table()
        .get((precision, ConvTile::for_rows(pass.rows(shape))))?;
    let gemm = |into: &mut CudaViewMut<'_, f32>, beta: f32| {
        let launch = kernel.launch(gpu, cfg).arg(a).arg(b).arg(into).ints(&dims);
        match pass {
            ConvPass::BackwardWeight => launch,
            ConvPass::Forward | ConvPass::BackwardData => launch.arg(beta),
        }
        .arg(k_chunk)
        .run()
    };
    // One split of a forward or data GEMM: straight into the output, with beta. Otherwise
    // partial sums into the workspace, then one reduction adds them onto the output.
    let one_pass = splits == 1 && pass != ConvPass::BackwardWeight;
    if one_pass {
        return gemm(out, beta);
    }
    let need = splits * out_len;
    let ws = match workspace {
        Some(ws) if ws.len() >= need => ws,
        have => {
            return Err(KernelError::invalid(
                name,
                format!(
                    "splits K {splits} ways and needs a workspace of {need} elements, has {}",
                    have.map_or(0, |w| w.len())
                ),
            ))
        }
    };
    to_int(name, "workspace", need)?;
    gemm(ws, 0.0)?;
    split_reduce(gpu, &ws.as_view(), out, splits, beta)
}

/// out = beta · out + the sum of the `splits` slabs of `part` (each `out.len()` long), in
/// increasing slab order.
fn split_reduce(
    gpu: &Gpu,
    part: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    splits: usize,
    beta: f32,
) -> Result<()> {
    let name = SPLIT_REDUCE.name;
    let n = out.len();
    let len = to_int(name, "length", n)?;
    let n_splits = to_int(name, "splits", splits)?;
    SPLIT_REDUCE
        .launch(gpu, grid_1d(n))
        .arg(part)
        .arg(out)
        .arg(len)
        .arg(n_splits)
        .arg(beta)
        .run()
}

/// Tile sizes of the implicit-GEMM convolution (must equal conv.cu's TILE_M/TILE_N/TILE_K).
pub const CONV_TILE_M: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_N: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_K: usize = 16;
/// Threads per conv block (conv.cu's THREADS).
pub const CONV_THREADS: u32 = 256;
/// Threads per bf16 conv block (conv_bf16.cu's BF_THREADS: 4 warps), in every tile shape.
pub const CONV_BF16_THREADS: u32 = 128;

/// The block tile of a conv GEMM, chosen by its row count M (output channels forward and for
/// the weight gradient, input channels for the data gradient): a 64-row tile at M = 16 (the
/// first stage of the CIFAR ResNets) would spend 3/4 of its work on padding rows. The kernel
/// names carry the suffix, in both precisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvTile {
    /// 16 rows (`_m16`), for M <= 16.
    M16,
    /// 32 rows (`_m32`), for 16 < M <= 32.
    M32,
    /// 64 rows (no suffix), for M > 32.
    M64,
}

impl ConvTile {
    /// The tile for a GEMM with `m` rows.
    pub fn for_rows(m: usize) -> ConvTile {
        match m {
            0..=16 => ConvTile::M16,
            17..=32 => ConvTile::M32,
            _ => ConvTile::M64,
        }
    }
    /// (rows, columns) of the block tile: fp32 tiles hold 4096 outputs (256 threads x 4 x 4),
    /// bf16 ones 4 warps of 32-column mma tiles.
    pub fn dims(self, p: Precision) -> (usize, usize) {
        match (p, self) {
            (Precision::Fp32, ConvTile::M16) => (16, 256),
            (Precision::Fp32, ConvTile::M32) => (32, 128),
            (Precision::Fp32, ConvTile::M64) => (CONV_TILE_M, CONV_TILE_N),
            (Precision::Bf16, ConvTile::M16) => (16, 128),
            (Precision::Bf16, ConvTile::M32) => (32, 128),
            (Precision::Bf16, ConvTile::M64) => (64, 64),
        }
    }
}

impl ConvShape {
    /// Split-K plan for the weight gradient: `(splits, k_chunk)`. The reduction axis
    /// K = N*OH*OW is cut into `splits` chunks of `k_chunk` (a multiple of 32) so that the
    /// grid has at least ~512 blocks even when the weight tensor is a single 64x64 tile.
    pub fn weight_grad_plan(&self) -> (usize, usize) {
        const TARGET_BLOCKS: usize = 512;
        const MIN_CHUNK: usize = 256; // keep each split's GEMM long enough to be worth a block
        let k_total = self.n * self.oh * self.ow;
        let tiles =
            self.c_out.div_ceil(CONV_TILE_M) * (self.c_in * self.k * self.k).div_ceil(CONV_TILE_N);
        let want = TARGET_BLOCKS.div_ceil(tiles).max(1);
        let chunk = k_total.div_ceil(want).max(MIN_CHUNK);
        // A multiple of both tiles' K (16 fp32, 32 bf16), so no split ends in a half tile.
        let chunk = chunk.div_ceil(2 * CONV_TILE_K) * (2 * CONV_TILE_K);
        let splits = k_total.div_ceil(chunk).max(1);
        (splits, chunk)
    }

    /// Workspace elements the weight gradient ([`conv2d`]) needs: splits * w_len.
    pub fn weight_grad_workspace_len(&self) -> usize {
        self.weight_grad_plan().0 * self.w_len()
    }

    /// Split-K plan of the forward pass, `(splits, k_chunk)`: one split (k_chunk = K) unless
    /// its grid alone would leave the GPU underfilled ([`FILL_BLOCKS`]).
    pub fn forward_plan(&self, p: Precision) -> (usize, usize) {
        let (gx, gy) = gemm_blocks(self.c_out, self.n * self.oh * self.ow, p);
        split_to_fill(gx * gy, self.c_in * self.k * self.k)
    }

    /// Split-K plan of the data gradient, as [`ConvShape::forward_plan`].
    pub fn backward_data_plan(&self, p: Precision) -> (usize, usize) {
        let (gx, gy) = gemm_blocks(self.c_in, self.n * self.h * self.w, p);
        split_to_fill(gx * gy, self.c_out * self.k * self.k)
    }

    /// Workspace elements the forward pass needs: splits * y_len, or 0 with one split.
    pub fn forward_workspace_len(&self, p: Precision) -> usize {
        match self.forward_plan(p).0 {
            1 => 0,
            splits => splits * self.y_len(),
        }
    }

    /// Workspace elements the data gradient needs: splits * x_len, or 0 with one split.
    pub fn backward_data_workspace_len(&self, p: Precision) -> usize {
        match self.backward_data_plan(p).0 {
            1 => 0,
            splits => splits * self.x_len(),
        }
    }
}

/// Blocks a forward or data-gradient grid needs to fill the GPU: ~2 per SM of a 132-SM
/// H100/H200. The late stages' small maps give fewer (ResNet-20's 8x8 stage: 128 blocks of
/// 64 x 64, one per SM, 4 warps each, and every block walks all of K with no other warp to hide
/// its load latency); those grids split K over blockIdx.z instead, so that more, shorter blocks
/// run at once, and one reduction adds the splits.
pub const FILL_BLOCKS: usize = 264;

/// The shortest K range a split keeps (4 bf16 K tiles): shorter ones cost more in the
/// reduction's traffic than they save.
pub const MIN_SPLIT_K: usize = 128;

/// `(splits, k_chunk)` for a grid of `blocks` blocks reducing over `k`; k_chunk is a multiple
/// of both tiles' K step (16 fp32, 32 bf16), so no split ends inside a tile.
fn split_to_fill(blocks: usize, k: usize) -> (usize, usize) {
    if blocks >= FILL_BLOCKS || k < 2 * MIN_SPLIT_K {
        return (1, k);
    }
    let want = FILL_BLOCKS.div_ceil(blocks);
    let chunk = k.div_ceil(want).max(MIN_SPLIT_K);
    let chunk = chunk.div_ceil(2 * CONV_TILE_K) * (2 * CONV_TILE_K);
    match k.div_ceil(chunk) {
        1 => (1, k),
        splits => (splits, chunk),
    }
}

/// (column blocks, row blocks) of a GEMM with `m` rows and `ncols` columns.
fn gemm_blocks(m: usize, ncols: usize, p: Precision) -> (usize, usize) {
    let (bm, bn) = ConvTile::for_rows(m).dims(p);
    (ncols.div_ceil(bn), m.div_ceil(bm))
}

fn gemm_grid(m: usize, ncols: usize, z: usize, p: Precision) -> LaunchConfig {
    let (gx, gy) = gemm_blocks(m, ncols, p);
    let threads = match p {
        Precision::Fp32 => CONV_THREADS,
        Precision::Bf16 => CONV_BF16_THREADS,
    };
    LaunchConfig {
        grid_dim: (gx as u32, gy as u32, z as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launch configuration of `conv2d_forward`'s GEMM, z = its splits (pure; exposed for tests).
pub fn conv2d_forward_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_out, s.n * s.oh * s.ow, s.forward_plan(p).0, p)
}

/// Launch configuration of `conv2d_backward_data`'s GEMM, z = its splits (pure; exposed for
/// tests).
pub fn conv2d_backward_data_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_in, s.n * s.h * s.w, s.backward_data_plan(p).0, p)
}

/// Launch configuration of `conv2d_backward_weight_partial` (pure; exposed for tests).
pub fn conv2d_backward_weight_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_out, s.c_in * s.k * s.k, s.weight_grad_plan().0, p)
}
