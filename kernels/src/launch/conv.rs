//! Convolution launchers: implicit-GEMM forward, backward-data and split-K backward-weight,
//! in fp32 (`conv.cu`, the reference) or with bf16 operands on the tensor cores
//! (`conv_bf16.cu`), chosen per call by [`Precision`]. Their tiles, grids and split-K plans
//! are in `conv_plan.rs`.

use cudarc::driver::{CudaView, CudaViewMut};

use super::conv_plan::{
    conv2d_backward_data_config, conv2d_backward_weight_config, conv2d_forward_config, ConvShape,
    ConvTile,
};
use super::{check_len, f32_in, f32_out, f32_val, grid_1d, i32_val, to_int};
use crate::error::{KernelError, Result};
use crate::{Gpu, Precision};

struct ConvArgs {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    co: i32,
    oh: i32,
    ow: i32,
    ks: i32,
    s: i32,
    p: i32,
}

impl ConvArgs {
    fn new(kernel: &'static str, s: &ConvShape) -> Result<Self> {
        s.validate(kernel)?;
        Ok(ConvArgs {
            n: to_int(kernel, "n", s.n)?,
            c: to_int(kernel, "c_in", s.c_in)?,
            h: to_int(kernel, "h", s.h)?,
            w: to_int(kernel, "w", s.w)?,
            co: to_int(kernel, "c_out", s.c_out)?,
            oh: to_int(kernel, "oh", s.oh())?,
            ow: to_int(kernel, "ow", s.ow())?,
            ks: to_int(kernel, "k", s.k)?,
            s: to_int(kernel, "stride", s.stride)?,
            p: to_int(kernel, "pad", s.pad())?,
        })
    }
}

/// The workspace of a split GEMM: `None` with one split (the GEMM writes its output
/// directly), else the caller's, checked to hold `splits * len` elements.
fn split_workspace<'a, 'b>(
    kernel: &'static str,
    workspace: Option<&'a mut CudaViewMut<'b, f32>>,
    splits: usize,
    len: usize,
) -> Result<Option<&'a mut CudaViewMut<'b, f32>>> {
    if splits == 1 {
        return Ok(None);
    }
    match workspace {
        Some(ws) => {
            check_workspace(kernel, ws.len(), splits * len)?;
            Ok(Some(ws))
        }
        None => Err(KernelError::invalid(
            kernel,
            format!(
                "splits K {splits} ways and needs a workspace of {} elements",
                splits * len
            ),
        )),
    }
}

/// A split workspace of `have` elements holds the `need` the kernel writes, and the kernel's
/// int offsets reach all of it.
fn check_workspace(kernel: &'static str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(KernelError::invalid(
            kernel,
            format!("workspace has {have} elements, needs {need}"),
        ));
    }
    to_int(kernel, "workspace", need).map(|_| ())
}

/// The `k_chunk` argument of a split plan `(splits, chunk)`, checked so that the kernel's split
/// offsets (up to splits * chunk) stay within int.
fn k_chunk_arg(kernel: &'static str, (splits, chunk): (usize, usize)) -> Result<i32> {
    to_int(kernel, "splits * k_chunk", splits * chunk)?;
    to_int(kernel, "k_chunk", chunk)
}

/// Runs a forward or data-gradient GEMM launch `gemm(into, beta)` as planned: with no
/// workspace (one split) straight into `out` with `beta`; else into the workspace with beta 0,
/// then [`split_reduce`] adds the `splits` slabs onto `out` with `beta`.
fn run_split_gemm(
    gpu: &Gpu,
    workspace: Option<&mut CudaViewMut<'_, f32>>,
    out: &mut CudaViewMut<'_, f32>,
    splits: usize,
    beta: f32,
    gemm: impl Fn(&mut CudaViewMut<'_, f32>, f32) -> Result<()>,
) -> Result<()> {
    match workspace {
        Some(ws) => {
            gemm(ws, 0.0)?;
            split_reduce(gpu, &ws.as_view(), out, splits, beta)
        }
        None => gemm(out, beta),
    }
}

/// out = beta * out + the sum of the `splits` slabs of `part` (each `out.len()` long), in
/// increasing slab order: the second launch of every split GEMM.
fn split_reduce(
    gpu: &Gpu,
    part: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    splits: usize,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_split_reduce";
    let n = out.len();
    let len = to_int(K, "length", n)?;
    let n_splits = to_int(K, "splits", splits)?;
    launch!(gpu, "conv2d_split_reduce", grid_1d(n),
        [f32_in part, f32_out out, i32 len, i32 n_splits, f32 beta])
}

/// y = conv2d(x, w) + beta * y. CPU twin: tensor's conv2d forward (with x and w rounded to
/// bf16 first for [`Precision::Bf16`]). `workspace` needs
/// [`ConvShape::forward_workspace_len`] elements (`None` when that is 0).
// Four buffers, the shape, the arithmetic and beta: each says which is which at the call site.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    gpu: &Gpu,
    precision: Precision,
    shape: &ConvShape,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    workspace: Option<&mut CudaViewMut<'_, f32>>,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_forward";
    let a = ConvArgs::new(K, shape)?;
    check_len(K, "x", x.len(), shape.x_len())?;
    check_len(K, "w", w.len(), shape.w_len())?;
    check_len(K, "y", y.len(), shape.y_len())?;
    let plan = shape.forward_plan(precision);
    let (splits, k_chunk) = (plan.0, k_chunk_arg(K, plan)?);
    let ws = split_workspace(K, workspace, splits, shape.y_len())?;
    let ConvArgs {
        n,
        c,
        h,
        w: wd,
        co,
        oh,
        ow,
        ks,
        s,
        p,
    } = a;
    let cfg = conv2d_forward_config(shape, precision);
    // One split: straight into the output, with beta. Several: partial sums into the
    // workspace, then one reduction adds them onto the output.
    let gemm = |out: &mut CudaViewMut<'_, f32>, b: f32| -> Result<()> {
        match (precision, ConvTile::for_rows(shape.c_out)) {
            (Precision::Fp32, ConvTile::M64) => launch!(gpu, "conv2d_forward", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Fp32, ConvTile::M32) => launch!(gpu, "conv2d_forward_m32", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Fp32, ConvTile::M16) => launch!(gpu, "conv2d_forward_m16", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M64) => launch!(gpu, "conv2d_forward_bf16", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M32) => launch!(gpu, "conv2d_forward_bf16_m32", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M16) => launch!(gpu, "conv2d_forward_bf16_m16", cfg,
                [f32_in x, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
        }
    };
    run_split_gemm(gpu, ws, y, splits, beta, gemm)
}

/// dx = conv2d_backward_data(dy, w) + beta * dx. CPU twin: tensor's conv2d backward (input
/// grad). `workspace` needs [`ConvShape::backward_data_workspace_len`] elements (`None` when
/// that is 0).
// Four buffers, the shape, the arithmetic and beta: each says which is which at the call site.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_data(
    gpu: &Gpu,
    precision: Precision,
    shape: &ConvShape,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    workspace: Option<&mut CudaViewMut<'_, f32>>,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_backward_data";
    let a = ConvArgs::new(K, shape)?;
    check_len(K, "dy", dy.len(), shape.y_len())?;
    check_len(K, "w", w.len(), shape.w_len())?;
    check_len(K, "dx", dx.len(), shape.x_len())?;
    let plan = shape.backward_data_plan(precision);
    let (splits, k_chunk) = (plan.0, k_chunk_arg(K, plan)?);
    let ws = split_workspace(K, workspace, splits, shape.x_len())?;
    let ConvArgs {
        n,
        c,
        h,
        w: wd,
        co,
        oh,
        ow,
        ks,
        s,
        p,
    } = a;
    let cfg = conv2d_backward_data_config(shape, precision);
    let gemm = |out: &mut CudaViewMut<'_, f32>, b: f32| -> Result<()> {
        match (precision, ConvTile::for_rows(shape.c_in)) {
            (Precision::Fp32, ConvTile::M64) => launch!(gpu, "conv2d_backward_data", cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Fp32, ConvTile::M32) => launch!(gpu, "conv2d_backward_data_m32", cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Fp32, ConvTile::M16) => launch!(gpu, "conv2d_backward_data_m16", cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M64) => launch!(gpu, "conv2d_backward_data_bf16", cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M32) => launch!(gpu, "conv2d_backward_data_bf16_m32",
                cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
            (Precision::Bf16, ConvTile::M16) => launch!(gpu, "conv2d_backward_data_bf16_m16",
                cfg,
                [f32_in dy, f32_in w, f32_out out, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, f32 b, i32 k_chunk]),
        }
    };
    run_split_gemm(gpu, ws, dx, splits, beta, gemm)
}

/// dw = beta * dw + sum_{n,oy,ox} dy * x (deterministic split-K: partials into `workspace`,
/// then a fixed-order reduction). `workspace` needs
/// [`ConvShape::weight_grad_workspace_len`] elements. CPU twin: tensor's conv2d backward
/// (weight grad).
// Four buffers, the shape, the arithmetic and beta: each says which is which at the call site.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    precision: Precision,
    shape: &ConvShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    dw: &mut CudaViewMut<'_, f32>,
    workspace: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_backward_weight_partial";
    let a = ConvArgs::new(K, shape)?;
    check_len(K, "dy", dy.len(), shape.y_len())?;
    check_len(K, "x", x.len(), shape.x_len())?;
    check_len(K, "dw", dw.len(), shape.w_len())?;
    let plan = shape.weight_grad_plan();
    let (splits, k_chunk) = (plan.0, k_chunk_arg(K, plan)?);
    check_workspace(K, workspace.len(), splits * shape.w_len())?;
    let ConvArgs {
        n,
        c,
        h,
        w: wd,
        co,
        oh,
        ow,
        ks,
        s,
        p,
    } = a;
    {
        let ws = workspace;
        let cfg = conv2d_backward_weight_config(shape, precision);
        match (precision, ConvTile::for_rows(shape.c_out)) {
            (Precision::Fp32, ConvTile::M64) => launch!(gpu,
                "conv2d_backward_weight_partial", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
            (Precision::Fp32, ConvTile::M32) => launch!(gpu,
                "conv2d_backward_weight_partial_m32", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
            (Precision::Fp32, ConvTile::M16) => launch!(gpu,
                "conv2d_backward_weight_partial_m16", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
            (Precision::Bf16, ConvTile::M64) => launch!(gpu,
                "conv2d_backward_weight_partial_bf16", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
            (Precision::Bf16, ConvTile::M32) => launch!(gpu,
                "conv2d_backward_weight_partial_bf16_m32", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
            (Precision::Bf16, ConvTile::M16) => launch!(gpu,
                "conv2d_backward_weight_partial_bf16_m16", cfg,
                [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
                 i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?,
        }
        split_reduce(gpu, &ws.as_view(), dw, splits, beta)
    }
}
