//! Typed launchers: one function per kernel family, validating every buffer length against the
//! shape before anything is queued (an out-of-bounds GPU write is silent corruption, so a wrong
//! length is an `Err` here, never a launch).
//!
//! **Compiled, not yet proven on a GPU.** Grid/block sizing and argument lists follow the comments
//! in `kernels/cuda/*.cu`; the argument list of every `launch!` below is checked against the
//! kernel's C signature by a host-only test (`signature::tests`), but no launcher has been run on
//! a device yet.
//!
//! Conventions: inputs are `&CudaView<T>`, outputs `&mut CudaViewMut<T>` (call `.as_view()` /
//! `.as_view_mut()` on a `CudaSlice`, or slice a flat parameter buffer). Everything is enqueued
//! on [`Gpu::stream`]; nothing synchronises. `beta` arguments: `0.0` overwrites the output
//! (which is then never read, so it may be uninitialised), `1.0` accumulates into it.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::error::{KernelError, Result};
use crate::Gpu;

/// Threads per block for the 1-D grid-stride kernels.
pub const BLOCK_1D: u32 = 256;
/// Grid cap for 1-D grid-stride kernels (they loop, so any grid size is correct).
pub const MAX_GRID_1D: u32 = 65_535;
/// Block size of the per-channel batchnorm kernels (multiple of 32, see `block_sum`).
pub const BN_THREADS: u32 = 256;
/// Block size of the loss kernel (must equal `XENT_THREADS` in loss.cu).
pub const XENT_THREADS: u32 = 256;
/// Tile sizes of the implicit-GEMM convolution (must equal conv.cu's TILE_M/TILE_N/TILE_K).
pub const CONV_TILE_M: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_N: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_K: usize = 16;
/// Threads per conv block (conv.cu's THREADS).
pub const CONV_THREADS: u32 = 256;

/// Launch configuration for a 1-D grid-stride kernel over `n` elements.
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK_1D as usize).clamp(1, MAX_GRID_1D as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i32(kernel: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::invalid(kernel, format!("{what} = {v} exceeds i32")))
}

fn check_len(kernel: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(KernelError::invalid(
            kernel,
            format!("{what} has {got} elements, expected {want}"),
        ))
    }
}

fn check_positive(kernel: &'static str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, v)| *v == 0) {
        Some((what, _)) => Err(KernelError::invalid(kernel, format!("{what} must be > 0"))),
        None => Ok(()),
    }
}

// Type witnesses: make the Rust type of each `launch!` argument match its tag, so the tag list
// (checked against the .cu signature by a test) really describes what is pushed.
fn f32_in<'a, 'b>(v: &'a CudaView<'b, f32>) -> &'a CudaView<'b, f32> {
    v
}
fn f32_out<'a, 'b>(v: &'a mut CudaViewMut<'b, f32>) -> &'a mut CudaViewMut<'b, f32> {
    v
}
fn f64_out<'a, 'b>(v: &'a mut CudaViewMut<'b, f64>) -> &'a mut CudaViewMut<'b, f64> {
    v
}
fn i32_in<'a, 'b>(v: &'a CudaView<'b, i32>) -> &'a CudaView<'b, i32> {
    v
}
fn i32_out<'a, 'b>(v: &'a mut CudaViewMut<'b, i32>) -> &'a mut CudaViewMut<'b, i32> {
    v
}
fn u8_in<'a, 'b>(v: &'a CudaView<'b, u8>) -> &'a CudaView<'b, u8> {
    v
}
fn i32_val(v: &i32) -> &i32 {
    v
}
fn f32_val(v: &f32) -> &f32 {
    v
}

/// `launch!(gpu, "kernel", cfg, [tag arg, ...])` pushes each argument in order and launches.
/// Tags: `f32_in f32_out f64_out i32_in i32_out u8_in` (device pointers; `_in` = `const T*`,
/// `_out` = `T*`) and `i32 f32` (scalars, which must be named local variables so they outlive
/// the builder). The test in `signature.rs` parses these invocations from this file's text.
macro_rules! launch {
    ($gpu:expr, $name:literal, $cfg:expr, [$($tag:ident $arg:ident),* $(,)?]) => {{
        let gpu: &Gpu = $gpu;
        let func = gpu.function($name)?;
        let mut builder = gpu.stream().launch_builder(func);
        $( launch!(@push builder, $tag, $arg); )*
        // SAFETY: the argument list matches the kernel's C signature (tags checked against the
        // .cu source by `signature::tests::launchers_match_kernel_signatures`), every buffer
        // length was validated against the shape by the caller, and all buffers belong to this
        // context.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .map_err(|e| KernelError::driver(concat!("launching ", $name), e))
    }};
    (@push $b:ident, f32_in, $a:ident) => { $b.arg(f32_in($a)) };
    (@push $b:ident, f32_out, $a:ident) => { $b.arg(f32_out($a)) };
    (@push $b:ident, f64_out, $a:ident) => { $b.arg(f64_out($a)) };
    (@push $b:ident, i32_in, $a:ident) => { $b.arg(i32_in($a)) };
    (@push $b:ident, i32_out, $a:ident) => { $b.arg(i32_out($a)) };
    (@push $b:ident, u8_in, $a:ident) => { $b.arg(u8_in($a)) };
    (@push $b:ident, i32, $a:ident) => { $b.arg(i32_val(&$a)) };
    (@push $b:ident, f32, $a:ident) => { $b.arg(f32_val(&$a)) };
}

// ---------------------------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------------------------

/// Shape of a bias-free 2-D convolution, NCHW, square kernel `k` in {1, 3}, padding (k-1)/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size (1 or 3).
    pub k: usize,
    /// Stride (1 or 2).
    pub stride: usize,
}

impl ConvShape {
    /// Zero padding on each side: (k - 1) / 2.
    pub fn pad(&self) -> usize {
        (self.k - 1) / 2
    }
    /// Output height: (H + 2p - k) / s + 1.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad() - self.k) / self.stride + 1
    }
    /// Output width.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad() - self.k) / self.stride + 1
    }
    /// Elements of x: N*C*H*W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of w: Cout*Cin*k*k.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }
    /// Elements of y: N*Cout*OH*OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh() * self.ow()
    }

    /// Checks k, stride and sizes are supported and every count fits the kernels' `int`s.
    pub fn validate(&self, kernel: &'static str) -> Result<()> {
        if !(self.k == 1 || self.k == 3) {
            return Err(KernelError::invalid(
                kernel,
                format!("k = {} (need 1 or 3)", self.k),
            ));
        }
        if !(self.stride == 1 || self.stride == 2) {
            return Err(KernelError::invalid(
                kernel,
                format!("stride = {}", self.stride),
            ));
        }
        check_positive(
            kernel,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
                ("c_out", self.c_out),
            ],
        )?;
        to_i32(kernel, "x length", self.x_len())?;
        to_i32(kernel, "y length", self.y_len())?;
        to_i32(kernel, "w length", self.w_len())?;
        Ok(())
    }

    /// Split-K plan for the weight gradient: `(splits, k_chunk)`. The reduction axis
    /// K = N*OH*OW is cut into `splits` chunks of `k_chunk` (a multiple of 16) so that the
    /// grid has at least ~512 blocks even when the weight tensor is a single 64x64 tile.
    pub fn weight_grad_plan(&self) -> (usize, usize) {
        const TARGET_BLOCKS: usize = 512;
        const MIN_CHUNK: usize = 256; // keep each split's GEMM long enough to be worth a block
        let k_total = self.n * self.oh() * self.ow();
        let tiles =
            self.c_out.div_ceil(CONV_TILE_M) * (self.c_in * self.k * self.k).div_ceil(CONV_TILE_N);
        let want = TARGET_BLOCKS.div_ceil(tiles).max(1);
        let chunk = k_total.div_ceil(want).max(MIN_CHUNK);
        let chunk = chunk.div_ceil(CONV_TILE_K) * CONV_TILE_K;
        let splits = k_total.div_ceil(chunk).max(1);
        (splits, chunk)
    }

    /// Workspace elements [`conv2d_backward_weight`] needs: splits * w_len.
    pub fn weight_grad_workspace_len(&self) -> usize {
        self.weight_grad_plan().0 * self.w_len()
    }
}

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
            n: to_i32(kernel, "n", s.n)?,
            c: to_i32(kernel, "c_in", s.c_in)?,
            h: to_i32(kernel, "h", s.h)?,
            w: to_i32(kernel, "w", s.w)?,
            co: to_i32(kernel, "c_out", s.c_out)?,
            oh: to_i32(kernel, "oh", s.oh())?,
            ow: to_i32(kernel, "ow", s.ow())?,
            ks: to_i32(kernel, "k", s.k)?,
            s: to_i32(kernel, "stride", s.stride)?,
            p: to_i32(kernel, "pad", s.pad())?,
        })
    }
}

fn gemm_grid(m: usize, ncols: usize, z: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            ncols.div_ceil(CONV_TILE_N) as u32,
            m.div_ceil(CONV_TILE_M) as u32,
            z as u32,
        ),
        block_dim: (CONV_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launch configuration of `conv2d_forward` (pure; exposed for tests).
pub fn conv2d_forward_config(s: &ConvShape) -> LaunchConfig {
    gemm_grid(s.c_out, s.n * s.oh() * s.ow(), 1)
}

/// Launch configuration of `conv2d_backward_data` (pure; exposed for tests).
pub fn conv2d_backward_data_config(s: &ConvShape) -> LaunchConfig {
    gemm_grid(s.c_in, s.n * s.h * s.w, 1)
}

/// Launch configuration of `conv2d_backward_weight_partial` (pure; exposed for tests).
pub fn conv2d_backward_weight_config(s: &ConvShape) -> LaunchConfig {
    gemm_grid(s.c_out, s.c_in * s.k * s.k, s.weight_grad_plan().0)
}

/// y = conv2d(x, w) + beta * y. CPU twin: tensor's conv2d forward.
pub fn conv2d_forward(
    gpu: &Gpu,
    shape: &ConvShape,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_forward";
    let a = ConvArgs::new(K, shape)?;
    check_len(K, "x", x.len(), shape.x_len())?;
    check_len(K, "w", w.len(), shape.w_len())?;
    check_len(K, "y", y.len(), shape.y_len())?;
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
    launch!(gpu, "conv2d_forward", conv2d_forward_config(shape),
        [f32_in x, f32_in w, f32_out y, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh, i32 ow,
         i32 ks, i32 s, i32 p, f32 beta])
}

/// dx = conv2d_backward_data(dy, w) + beta * dx. CPU twin: tensor's conv2d backward (input grad).
pub fn conv2d_backward_data(
    gpu: &Gpu,
    shape: &ConvShape,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "conv2d_backward_data";
    let a = ConvArgs::new(K, shape)?;
    check_len(K, "dy", dy.len(), shape.y_len())?;
    check_len(K, "w", w.len(), shape.w_len())?;
    check_len(K, "dx", dx.len(), shape.x_len())?;
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
    launch!(gpu, "conv2d_backward_data", conv2d_backward_data_config(shape),
        [f32_in dy, f32_in w, f32_out dx, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh, i32 ow,
         i32 ks, i32 s, i32 p, f32 beta])
}

/// dw = beta * dw + sum_{n,oy,ox} dy * x (deterministic split-K: partials into `workspace`,
/// then a fixed-order reduction). `workspace` needs
/// [`ConvShape::weight_grad_workspace_len`] elements. CPU twin: tensor's conv2d backward
/// (weight grad).
pub fn conv2d_backward_weight(
    gpu: &Gpu,
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
    let (splits, chunk) = shape.weight_grad_plan();
    let need = splits * shape.w_len();
    if workspace.len() < need {
        return Err(KernelError::invalid(
            K,
            format!("workspace has {} elements, needs {need}", workspace.len()),
        ));
    }
    let k_chunk = to_i32(K, "k_chunk", chunk)?;
    let n_splits = to_i32(K, "splits", splits)?;
    let wlen = to_i32(K, "w length", shape.w_len())?;
    to_i32(K, "workspace", need)?;
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
        launch!(gpu, "conv2d_backward_weight_partial", conv2d_backward_weight_config(shape),
            [f32_in dy, f32_in x, f32_out ws, i32 n, i32 c, i32 h, i32 wd, i32 co, i32 oh,
             i32 ow, i32 ks, i32 s, i32 p, i32 k_chunk])?;
        let part = ws.as_view();
        let part = &part;
        launch!(gpu, "conv2d_backward_weight_reduce", grid_1d(shape.w_len()),
            [f32_in part, f32_out dw, i32 wlen, i32 n_splits, f32 beta])
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm
// ---------------------------------------------------------------------------------------------

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
    /// N*C*HW.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// True when any dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn ints(&self, kernel: &'static str) -> Result<(i32, i32, i32)> {
        check_positive(kernel, &[("n", self.n), ("c", self.c), ("hw", self.hw)])?;
        to_i32(kernel, "N*C*HW", self.len())?;
        Ok((
            to_i32(kernel, "n", self.n)?,
            to_i32(kernel, "c", self.c)?,
            to_i32(kernel, "hw", self.hw)?,
        ))
    }
    /// One block per channel.
    pub fn per_channel_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.c as u32, 1, 1),
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
/// saves mean / invstd for backward. CPU twin: tensor's batchnorm2d forward (training).
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
    momentum: f32,
    eps: f32,
) -> Result<()> {
    const K: &str = "batchnorm_forward_train";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "y", y.len(), shape.len())?;
    for (what, len) in [
        ("gamma", params.gamma.len()),
        ("beta", params.beta.len()),
        ("running_mean", running_mean.len()),
        ("running_var", running_var.len()),
        ("save_mean", save_mean.len()),
        ("save_invstd", save_invstd.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    let gamma = params.gamma;
    let beta = params.beta;
    launch!(gpu, "batchnorm_forward_train", shape.per_channel_config(),
        [f32_in x, f32_out y, f32_in gamma, f32_in beta, f32_out running_mean,
         f32_out running_var, f32_out save_mean, f32_out save_invstd, i32 n, i32 c, i32 hw,
         f32 momentum, f32 eps])
}

/// Eval-mode forward with running statistics. CPU twin: tensor's batchnorm2d forward (eval).
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
) -> Result<()> {
    const K: &str = "batchnorm_forward_eval";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "y", y.len(), shape.len())?;
    for (what, len) in [
        ("gamma", params.gamma.len()),
        ("beta", params.beta.len()),
        ("running_mean", running_mean.len()),
        ("running_var", running_var.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    let gamma = params.gamma;
    let beta = params.beta;
    launch!(gpu, "batchnorm_forward_eval", grid_1d(shape.len()),
        [f32_in x, f32_out y, f32_in gamma, f32_in beta, f32_in running_mean,
         f32_in running_var, i32 n, i32 c, i32 hw, f32 eps])
}

/// Backward: dx (overwritten), dgamma and dbeta (overwritten). CPU twin: tensor's batchnorm2d
/// backward.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    shape: &BnShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    gamma: &CudaView<'_, f32>,
    save_mean: &CudaView<'_, f32>,
    save_invstd: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    dgamma: &mut CudaViewMut<'_, f32>,
    dbeta: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "batchnorm_backward";
    let (n, c, hw) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.len())?;
    check_len(K, "x", x.len(), shape.len())?;
    check_len(K, "dx", dx.len(), shape.len())?;
    for (what, len) in [
        ("gamma", gamma.len()),
        ("save_mean", save_mean.len()),
        ("save_invstd", save_invstd.len()),
        ("dgamma", dgamma.len()),
        ("dbeta", dbeta.len()),
    ] {
        check_len(K, what, len, shape.c)?;
    }
    launch!(gpu, "batchnorm_backward", shape.per_channel_config(),
        [f32_in dy, f32_in x, f32_in gamma, f32_in save_mean, f32_in save_invstd, f32_out dx,
         f32_out dgamma, f32_out dbeta, i32 n, i32 c, i32 hw])
}

// ---------------------------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------------------------

fn n_of(kernel: &'static str, lens: &[(&str, usize)]) -> Result<i32> {
    let (first, n) = lens[0];
    for &(what, len) in &lens[1..] {
        if len != n {
            return Err(KernelError::invalid(
                kernel,
                format!("{what} has {len} elements but {first} has {n}"),
            ));
        }
    }
    to_i32(kernel, "n", n)
}

/// y = max(x, 0). CPU twin: tensor's relu forward.
pub fn relu_forward(gpu: &Gpu, x: &CudaView<'_, f32>, y: &mut CudaViewMut<'_, f32>) -> Result<()> {
    let n = n_of("relu_forward", &[("x", x.len()), ("y", y.len())])?;
    launch!(gpu, "relu_forward", grid_1d(x.len()), [f32_in x, f32_out y, i32 n])
}

/// dx = dy * (y > 0), y the forward output. CPU twin: tensor's relu backward.
pub fn relu_backward(
    gpu: &Gpu,
    dy: &CudaView<'_, f32>,
    y: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "relu_backward",
        &[("dy", dy.len()), ("y", y.len()), ("dx", dx.len())],
    )?;
    launch!(gpu, "relu_backward", grid_1d(dy.len()), [f32_in dy, f32_in y, f32_out dx, i32 n])
}

/// out = a + b. CPU twin: tensor's elementwise add (residual).
pub fn add_forward(
    gpu: &Gpu,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "add_forward",
        &[("a", a.len()), ("b", b.len()), ("out", out.len())],
    )?;
    launch!(gpu, "add_forward", grid_1d(a.len()), [f32_in a, f32_in b, f32_out out, i32 n])
}

/// out = max(a + b, 0). CPU twin: tensor's add followed by relu.
pub fn add_relu_forward(
    gpu: &Gpu,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let n = n_of(
        "add_relu_forward",
        &[("a", a.len()), ("b", b.len()), ("out", out.len())],
    )?;
    launch!(gpu, "add_relu_forward", grid_1d(a.len()), [f32_in a, f32_in b, f32_out out, i32 n])
}

/// acc += x. CPU twin: tensor's in-place add (gradient accumulation).
pub fn accumulate(gpu: &Gpu, acc: &mut CudaViewMut<'_, f32>, x: &CudaView<'_, f32>) -> Result<()> {
    let n = n_of("accumulate", &[("acc", acc.len()), ("x", x.len())])?;
    launch!(gpu, "accumulate", grid_1d(x.len()), [f32_out acc, f32_in x, i32 n])
}

// ---------------------------------------------------------------------------------------------
// Option-A shortcut
// ---------------------------------------------------------------------------------------------

/// Shape of an option-A shortcut: input [N, Cin, H, W] -> output [N, Cout, OH, OW].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortcutShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (>= c_in; the extra ones are zero).
    pub c_out: usize,
    /// Subsampling stride.
    pub stride: usize,
}

impl ShortcutShape {
    /// ceil(H / s).
    pub fn oh(&self) -> usize {
        (self.h - 1) / self.stride + 1
    }
    /// ceil(W / s).
    pub fn ow(&self) -> usize {
        (self.w - 1) / self.stride + 1
    }
    /// N*Cin*H*W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// N*Cout*OH*OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh() * self.ow()
    }
    #[allow(clippy::type_complexity)]
    fn ints(&self, k: &'static str) -> Result<(i32, i32, i32, i32, i32, i32, i32, i32)> {
        check_positive(
            k,
            &[
                ("n", self.n),
                ("c_in", self.c_in),
                ("h", self.h),
                ("w", self.w),
                ("stride", self.stride),
            ],
        )?;
        if self.c_out < self.c_in {
            return Err(KernelError::invalid(k, "c_out < c_in"));
        }
        to_i32(k, "x length", self.x_len())?;
        to_i32(k, "y length", self.y_len())?;
        Ok((
            to_i32(k, "n", self.n)?,
            to_i32(k, "c_in", self.c_in)?,
            to_i32(k, "h", self.h)?,
            to_i32(k, "w", self.w)?,
            to_i32(k, "c_out", self.c_out)?,
            to_i32(k, "oh", self.oh())?,
            to_i32(k, "ow", self.ow())?,
            to_i32(k, "stride", self.stride)?,
        ))
    }
}

/// out = option-A shortcut of x. CPU twin: tensor's shortcut (subsample + zero-pad channels).
pub fn shortcut_forward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "shortcut_forward";
    let (n, cin, h, w, cout, oh, ow, s) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.x_len())?;
    check_len(K, "out", out.len(), shape.y_len())?;
    launch!(gpu, "shortcut_forward", grid_1d(shape.y_len()),
        [f32_in x, f32_out out, i32 n, i32 cin, i32 h, i32 w, i32 cout, i32 oh, i32 ow, i32 s])
}

/// dx = beta * dx + shortcut backward(dy). CPU twin: tensor's shortcut backward.
pub fn shortcut_backward(
    gpu: &Gpu,
    shape: &ShortcutShape,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "shortcut_backward";
    let (n, cin, h, w, cout, oh, ow, s) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.y_len())?;
    check_len(K, "dx", dx.len(), shape.x_len())?;
    launch!(gpu, "shortcut_backward", grid_1d(shape.x_len()),
        [f32_in dy, f32_out dx, i32 n, i32 cin, i32 h, i32 w, i32 cout, i32 oh, i32 ow, i32 s,
         f32 beta])
}

// ---------------------------------------------------------------------------------------------
// Global average pool and linear
// ---------------------------------------------------------------------------------------------

/// y[n,c] = mean over H*W of x[n,c]. `nc` = N*C rows of `hw` values. CPU twin: tensor's global
/// average pool forward.
pub fn avgpool_forward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "avgpool_forward";
    check_positive(K, &[("nc", nc), ("hw", hw)])?;
    check_len(K, "x", x.len(), nc * hw)?;
    check_len(K, "y", y.len(), nc)?;
    to_i32(K, "N*C*HW", nc * hw)?;
    let (nc_i, hw_i) = (to_i32(K, "nc", nc)?, to_i32(K, "hw", hw)?);
    launch!(gpu, "avgpool_forward", grid_1d(nc), [f32_in x, f32_out y, i32 nc_i, i32 hw_i])
}

/// dx[n,c,:,:] = dy[n,c] / HW. CPU twin: tensor's global average pool backward.
pub fn avgpool_backward(
    gpu: &Gpu,
    nc: usize,
    hw: usize,
    dy: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "avgpool_backward";
    check_positive(K, &[("nc", nc), ("hw", hw)])?;
    check_len(K, "dy", dy.len(), nc)?;
    check_len(K, "dx", dx.len(), nc * hw)?;
    to_i32(K, "N*C*HW", nc * hw)?;
    let (nc_i, hw_i) = (to_i32(K, "nc", nc)?, to_i32(K, "hw", hw)?);
    launch!(gpu, "avgpool_backward", grid_1d(nc * hw), [f32_in dy, f32_out dx, i32 nc_i, i32 hw_i])
}

/// Shape of a linear layer: x [N, In], W [Out, In], b [Out], y [N, Out].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    /// Batch size.
    pub n: usize,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

impl LinearShape {
    fn ints(&self, k: &'static str) -> Result<(i32, i32, i32)> {
        check_positive(
            k,
            &[
                ("n", self.n),
                ("in", self.in_features),
                ("out", self.out_features),
            ],
        )?;
        to_i32(k, "N*In", self.n * self.in_features)?;
        to_i32(k, "N*Out", self.n * self.out_features)?;
        to_i32(k, "Out*(In+1)", self.out_features * (self.in_features + 1))?;
        Ok((
            to_i32(k, "n", self.n)?,
            to_i32(k, "in", self.in_features)?,
            to_i32(k, "out", self.out_features)?,
        ))
    }
}

/// y = x W^T + b. CPU twin: tensor's linear forward.
pub fn linear_forward(
    gpu: &Gpu,
    shape: &LinearShape,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "linear_forward";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "b", b.len(), shape.out_features)?;
    check_len(K, "y", y.len(), shape.n * shape.out_features)?;
    launch!(gpu, "linear_forward", grid_1d(shape.n * shape.out_features),
        [f32_in x, f32_in w, f32_in b, f32_out y, i32 n, i32 fin, i32 fout])
}

/// dx = dy W (overwritten). CPU twin: tensor's linear backward (input grad).
pub fn linear_backward_data(
    gpu: &Gpu,
    shape: &LinearShape,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    dx: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    const K: &str = "linear_backward_data";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "w", w.len(), shape.out_features * shape.in_features)?;
    check_len(K, "dx", dx.len(), shape.n * shape.in_features)?;
    launch!(gpu, "linear_backward_data", grid_1d(shape.n * shape.in_features),
        [f32_in dy, f32_in w, f32_out dx, i32 n, i32 fin, i32 fout])
}

/// dW = beta*dW + dy^T x, db = beta*db + sum_n dy. CPU twin: tensor's linear backward
/// (weight and bias grads).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight(
    gpu: &Gpu,
    shape: &LinearShape,
    dy: &CudaView<'_, f32>,
    x: &CudaView<'_, f32>,
    dw: &mut CudaViewMut<'_, f32>,
    db: &mut CudaViewMut<'_, f32>,
    beta: f32,
) -> Result<()> {
    const K: &str = "linear_backward_weight";
    let (n, fin, fout) = shape.ints(K)?;
    check_len(K, "dy", dy.len(), shape.n * shape.out_features)?;
    check_len(K, "x", x.len(), shape.n * shape.in_features)?;
    check_len(K, "dw", dw.len(), shape.out_features * shape.in_features)?;
    check_len(K, "db", db.len(), shape.out_features)?;
    launch!(gpu, "linear_backward_weight",
        grid_1d(shape.out_features * (shape.in_features + 1)),
        [f32_in dy, f32_in x, f32_out dw, f32_out db, i32 n, i32 fin, i32 fout, f32 beta])
}

// ---------------------------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------------------------

fn xent_config() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (XENT_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn xent_check(
    k: &'static str,
    n: usize,
    classes: usize,
    logits: usize,
    labels: usize,
    loss_acc: usize,
    correct_acc: usize,
) -> Result<(i32, i32)> {
    check_positive(k, &[("n", n), ("classes", classes)])?;
    check_len(k, "logits", logits, n * classes)?;
    check_len(k, "labels", labels, n)?;
    check_len(k, "loss_acc", loss_acc, 1)?;
    check_len(k, "correct_acc", correct_acc, 1)?;
    to_i32(k, "N*K", n * classes)?;
    Ok((to_i32(k, "n", n)?, to_i32(k, "classes", classes)?))
}

/// Training loss step: dlogits = (softmax - onehot)/N (overwritten); loss_acc[0] += sum of
/// per-sample losses (f64); correct_acc[0] += number of argmax hits. Labels must be in
/// 0..classes (not checked on the device). CPU twin: tensor's softmax cross-entropy
/// forward+backward.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_forward_backward(
    gpu: &Gpu,
    n: usize,
    classes: usize,
    logits: &CudaView<'_, f32>,
    labels: &CudaView<'_, i32>,
    dlogits: &mut CudaViewMut<'_, f32>,
    loss_acc: &mut CudaViewMut<'_, f64>,
    correct_acc: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    const K: &str = "softmax_xent_forward_backward";
    let (n_i, k_i) = xent_check(
        K,
        n,
        classes,
        logits.len(),
        labels.len(),
        loss_acc.len(),
        correct_acc.len(),
    )?;
    check_len(K, "dlogits", dlogits.len(), n * classes)?;
    launch!(gpu, "softmax_xent_forward_backward", xent_config(),
        [f32_in logits, i32_in labels, f32_out dlogits, f64_out loss_acc, i32_out correct_acc,
         i32 n_i, i32 k_i])
}

/// Evaluation: loss_acc[0] += sum of losses, correct_acc[0] += hits; no gradient. CPU twin:
/// tensor's softmax cross-entropy forward.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_forward(
    gpu: &Gpu,
    n: usize,
    classes: usize,
    logits: &CudaView<'_, f32>,
    labels: &CudaView<'_, i32>,
    loss_acc: &mut CudaViewMut<'_, f64>,
    correct_acc: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    const K: &str = "softmax_xent_forward";
    let (n_i, k_i) = xent_check(
        K,
        n,
        classes,
        logits.len(),
        labels.len(),
        loss_acc.len(),
        correct_acc.len(),
    )?;
    launch!(gpu, "softmax_xent_forward", xent_config(),
        [f32_in logits, i32_in labels, f64_out loss_acc, i32_out correct_acc, i32 n_i, i32 k_i])
}

// ---------------------------------------------------------------------------------------------
// SGD
// ---------------------------------------------------------------------------------------------

/// Host description of the flat parameter buffer: consecutive segments (one per tensor) with
/// their weight decay. Validated on construction; [`SgdTable`] is its device copy.
#[derive(Debug, Clone, PartialEq)]
pub struct SgdSegments {
    /// `offsets[s]..offsets[s+1]` is segment s; offsets[0] = 0, last = total.
    pub offsets: Vec<i32>,
    /// Weight decay per segment (0 for BN parameters and biases).
    pub weight_decay: Vec<f32>,
}

impl SgdSegments {
    /// Builds the table from `(len, weight_decay)` per tensor, in buffer order.
    pub fn new(segments: &[(usize, f32)]) -> Result<Self> {
        const K: &str = "sgd_step";
        if segments.is_empty() {
            return Err(KernelError::invalid(K, "no parameter segments"));
        }
        let mut offsets = Vec::with_capacity(segments.len() + 1);
        let mut total = 0usize;
        offsets.push(0);
        for (i, &(len, wd)) in segments.iter().enumerate() {
            if len == 0 {
                return Err(KernelError::invalid(K, format!("segment {i} is empty")));
            }
            if !wd.is_finite() || wd < 0.0 {
                return Err(KernelError::invalid(
                    K,
                    format!("segment {i} weight decay {wd}"),
                ));
            }
            total += len;
            offsets.push(to_i32(K, "total parameters", total)?);
        }
        Ok(SgdSegments {
            offsets,
            weight_decay: segments.iter().map(|&(_, wd)| wd).collect(),
        })
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        *self.offsets.last().unwrap_or(&0) as usize
    }
}

/// The segment table on the device, uploaded once and reused every step.
pub struct SgdTable {
    offsets: CudaSlice<i32>,
    weight_decay: CudaSlice<f32>,
    total: usize,
}

impl SgdTable {
    /// Uploads a validated segment table.
    pub fn new(gpu: &Gpu, segments: &SgdSegments) -> Result<Self> {
        Ok(SgdTable {
            offsets: gpu.upload(&segments.offsets)?,
            weight_decay: gpu.upload(&segments.weight_decay)?,
            total: segments.total(),
        })
    }

    /// Total number of parameters the table covers.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// One SGD step over the whole flat parameter buffer (torch.optim.SGD semantics, see sgd.cu).
/// CPU twin: the training crate's SGD optimiser step.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    gpu: &Gpu,
    table: &SgdTable,
    params: &mut CudaViewMut<'_, f32>,
    grads: &CudaView<'_, f32>,
    bufs: &mut CudaViewMut<'_, f32>,
    lr: f32,
    momentum: f32,
    nesterov: bool,
) -> Result<()> {
    const K: &str = "sgd_step";
    check_len(K, "params", params.len(), table.total)?;
    check_len(K, "grads", grads.len(), table.total)?;
    check_len(K, "bufs", bufs.len(), table.total)?;
    let total = to_i32(K, "total", table.total)?;
    let num_segs = to_i32(K, "segments", table.weight_decay.len())?;
    let nesterov = i32::from(nesterov);
    let seg_offsets = table.offsets.as_view();
    let seg_offsets = &seg_offsets;
    let seg_wd = table.weight_decay.as_view();
    let seg_wd = &seg_wd;
    launch!(gpu, "sgd_step", grid_1d(table.total),
        [f32_out params, f32_in grads, f32_out bufs, i32_in seg_offsets, f32_in seg_wd,
         i32 num_segs, i32 total, f32 lr, f32 momentum, i32 nesterov])
}

// ---------------------------------------------------------------------------------------------
// Data augmentation
// ---------------------------------------------------------------------------------------------

/// Per-channel normalisation constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Mean per channel (of pixel/255).
    pub mean: [f32; 3],
    /// Standard deviation per channel.
    pub std: [f32; 3],
}

/// Builds an augmented, normalised batch on the device. `images`: u8 [Ndata, 3, h, w];
/// `labels`: u8 [Ndata]; `params`: i32 [batch, 4] = (index, ox, oy, flip) per sample — the host
/// must keep index < Ndata (not checked on the device). Writes `out` f32 [batch, 3, h, w] and
/// `out_labels` i32 [batch]. CPU twin: the data crate's batch builder (crop + flip + normalise).
#[allow(clippy::too_many_arguments)]
pub fn augment_batch(
    gpu: &Gpu,
    images: &CudaView<'_, u8>,
    labels: &CudaView<'_, u8>,
    params: &CudaView<'_, i32>,
    out: &mut CudaViewMut<'_, f32>,
    out_labels: &mut CudaViewMut<'_, i32>,
    (batch, h, w): (usize, usize, usize),
    norm: &Normalize,
) -> Result<()> {
    const K: &str = "augment_batch";
    check_positive(K, &[("batch", batch), ("h", h), ("w", w)])?;
    let img = 3 * h * w;
    if images.len() % img != 0 || images.is_empty() {
        return Err(KernelError::invalid(
            K,
            format!(
                "images has {} bytes, not a positive multiple of 3*{h}*{w}",
                images.len()
            ),
        ));
    }
    check_len(K, "labels", labels.len(), images.len() / img)?;
    check_len(K, "params", params.len(), 4 * batch)?;
    check_len(K, "out", out.len(), batch * img)?;
    check_len(K, "out_labels", out_labels.len(), batch)?;
    let total = batch * img;
    to_i32(K, "batch*3*h*w", total)?;
    let (b, hh, ww) = (
        to_i32(K, "batch", batch)?,
        to_i32(K, "h", h)?,
        to_i32(K, "w", w)?,
    );
    if norm.std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
        return Err(KernelError::invalid(K, "std must be finite and non-zero"));
    }
    let [m0, m1, m2] = norm.mean;
    let [s0, s1, s2] = norm.std;
    launch!(gpu, "augment_batch", grid_1d(total),
        [u8_in images, u8_in labels, i32_in params, f32_out out, i32_out out_labels, i32 b,
         i32 hh, i32 ww, f32 m0, f32 m1, f32 m2, f32 s0, f32 s1, f32 s2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: usize, c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize) -> ConvShape {
        ConvShape {
            n,
            c_in,
            h: hw,
            w: hw,
            c_out,
            k,
            stride,
        }
    }

    #[test]
    fn conv_output_sizes_match_pytorch() {
        assert_eq!(
            (conv(2, 3, 32, 16, 3, 1).oh(), conv(2, 3, 32, 16, 3, 1).ow()),
            (32, 32)
        );
        assert_eq!(conv(2, 16, 32, 32, 3, 2).oh(), 16);
        assert_eq!(conv(2, 16, 7, 32, 3, 2).oh(), 4); // (7 + 2 - 3)/2 + 1
        assert_eq!(conv(2, 16, 32, 32, 1, 2).oh(), 16); // (32 - 1)/2 + 1
        assert_eq!(conv(2, 16, 7, 32, 1, 2).oh(), 4);
        let s = conv(4, 16, 8, 32, 3, 2);
        assert_eq!(s.x_len(), 4 * 16 * 8 * 8);
        assert_eq!(s.w_len(), 32 * 16 * 9);
        assert_eq!(s.y_len(), 4 * 32 * 4 * 4);
    }

    #[test]
    fn conv_shape_validation() {
        assert!(conv(1, 1, 4, 1, 5, 1).validate("t").is_err());
        assert!(conv(1, 1, 4, 1, 3, 3).validate("t").is_err());
        assert!(conv(0, 1, 4, 1, 3, 1).validate("t").is_err());
        assert!(conv(1 << 16, 64, 64, 64, 3, 1).validate("t").is_err()); // > i32
        conv(128, 64, 8, 64, 3, 1).validate("t").unwrap();
    }

    #[test]
    fn conv_grids_cover_the_gemms() {
        let s = conv(128, 16, 32, 32, 3, 2); // CIFAR stage transition
        let f = conv2d_forward_config(&s);
        assert_eq!(f.grid_dim, ((128 * 16 * 16usize).div_ceil(64) as u32, 1, 1));
        assert_eq!(f.block_dim, (CONV_THREADS, 1, 1));
        let d = conv2d_backward_data_config(&s);
        assert_eq!(d.grid_dim, ((128 * 32 * 32usize).div_ceil(64) as u32, 1, 1));
        let w = conv2d_backward_weight_config(&s);
        assert_eq!(
            (w.grid_dim.0, w.grid_dim.1),
            ((16 * 9usize).div_ceil(64) as u32, 1)
        );
        assert_eq!(w.grid_dim.2 as usize, s.weight_grad_plan().0);
    }

    #[test]
    fn weight_grad_split_covers_k_exactly_once() {
        for s in [
            conv(128, 3, 32, 16, 3, 1),
            conv(128, 16, 32, 16, 3, 1),
            conv(128, 64, 8, 64, 3, 1),
            conv(1, 1, 1, 1, 1, 1),
            conv(3, 5, 7, 9, 3, 2),
            conv(128, 32, 16, 64, 1, 2),
        ] {
            let (splits, chunk) = s.weight_grad_plan();
            let k = s.n * s.oh() * s.ow();
            assert!(splits >= 1 && chunk % CONV_TILE_K == 0, "{s:?}");
            assert!(splits * chunk >= k, "{s:?}: splits do not cover K");
            assert!((splits - 1) * chunk < k, "{s:?}: a split would be empty");
            assert_eq!(s.weight_grad_workspace_len(), splits * s.w_len());
            // The kernel computes split offsets in int.
            assert!(splits * chunk < i32::MAX as usize);
        }
    }

    #[test]
    fn grid_1d_caps_and_covers() {
        assert_eq!(grid_1d(0).grid_dim.0, 1);
        assert_eq!(grid_1d(1).grid_dim.0, 1);
        assert_eq!(grid_1d(257).grid_dim.0, 2);
        assert_eq!(grid_1d(usize::MAX / 2).grid_dim.0, MAX_GRID_1D);
    }

    #[test]
    fn shortcut_sizes() {
        let s = ShortcutShape {
            n: 2,
            c_in: 16,
            h: 32,
            w: 32,
            c_out: 32,
            stride: 2,
        };
        assert_eq!((s.oh(), s.ow()), (16, 16));
        let odd = ShortcutShape { h: 7, w: 7, ..s };
        assert_eq!(odd.oh(), 4); // matches x[:, :, ::2, ::2]
        assert!(ShortcutShape { c_out: 8, ..s }.ints("t").is_err());
    }

    #[test]
    fn sgd_segments_table() {
        let t =
            SgdSegments::new(&[(432, 5e-4), (16, 0.0), (16, 0.0), (640, 5e-4), (10, 0.0)]).unwrap();
        assert_eq!(t.offsets, vec![0, 432, 448, 464, 1104, 1114]);
        assert_eq!(t.total(), 1114);
        assert_eq!(t.weight_decay.len(), 5);
        assert!(SgdSegments::new(&[]).is_err());
        assert!(SgdSegments::new(&[(3, 0.0), (0, 0.0)]).is_err());
        assert!(SgdSegments::new(&[(3, f32::NAN)]).is_err());
    }
}
