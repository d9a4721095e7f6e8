//! The convolution's CUDA launcher: implicit-GEMM forward, backward-data and split-K
//! backward-weight, in fp32 (`conv.cu`, the reference) or with bf16 operands on the tensor
//! cores (`conv_bf16.cu`), each pass a table of variants chosen by [`Precision`] and
//! [`ConvTile`] and launched from one place ([`conv2d`]). Tiles, grids and split-K plans are in
//! `cuda_plan.rs`.

use kernels::launch::{arg::*, check_len, grid_1d, to_int, Kernel, KernelTable, Param};
use kernels::{CudaView, CudaViewMut, Gpu, KernelError, Result};

pub use super::cuda_plan::{
    conv2d_backward_data_config, conv2d_backward_weight_config, conv2d_forward_config, ConvTile,
    CONV_BF16_THREADS, CONV_THREADS, CONV_TILE_K, CONV_TILE_M, CONV_TILE_N, FILL_BLOCKS,
    MIN_SPLIT_K,
};
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
const SPLIT_REDUCE: Kernel = Kernel {
    name: "conv2d_split_reduce",
    params: &[F32_IN, F32_OUT, I32, I32, F32],
};

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
    fn plan(self, s: &ConvShape, p: Precision) -> ((usize, usize), kernels::launch::LaunchConfig) {
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
