//! 2-d convolution without bias (3x3 pad 1 or 1x1 pad 0; stride 1 or 2): forward, input
//! gradient, weight gradient.
//!
//! For one image with `cin` channels, im2col lays every receptive field out as a column:
//! `col[(ci*k + ky)*k + kx, oy*wo + ox] = x[ci, oy*s + ky - p, ox*s + kx - p]` (0 outside), and
//! each pass is a GEMM with `W` as a `cout x (cin*k*k)` matrix. Where it runs:
//! - on the CPU, the fast path of [`fast`] when the CPU has AVX2 or AVX-512 (for bf16 also
//!   `vdpbf16ps` or AMX), else [`reference`](mod@reference) (plain im2col + the `gemm` crate;
//!   the oracle of the tests);
//! - on a GPU, the implicit-GEMM kernels of `conv.cu` (k in {1, 3}, stride in {1, 2}: every
//!   ResNet convolution).
//!
//! The `_with` variants take a [`Precision`]. `Bf16` runs `conv_bf16.cu` on the tensor cores; on
//! the CPU it rounds both operands to bf16 ([`crate::bf16`]) and sums their products in f32 —
//! the reference runs its f32 code on the rounded tensors, the fast paths `vdpbf16ps`, AMX
//! tiles, or their fp32 kernels on operands rounded as they are packed — which is exactly what
//! the kernel computes up to the order of its additions (its CPU twin; `vdpbf16ps` and AMX also
//! flush denormals, see `gemm::amx`).

pub mod cuda;
pub mod fast;
pub mod reference;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::bf16::round_tensor;
use crate::{check, cuda_of, Tensor};
use cuda::{conv2d, ConvPass};
use kernels::launch::{check_positive, to_int};
use kernels::{Gpu, KernelError, Result};

/// The arithmetic of the convolutions, which hold nearly all of a ResNet's FLOPs. Everything
/// else (batch norm, loss, SGD, the stored activations and weights) is fp32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// fp32 FMA tiles (`conv.cu`): the exact reference.
    #[default]
    Fp32,
    /// Operands rounded to bf16 as they enter shared memory, multiplied on the tensor cores
    /// with fp32 accumulation (`conv_bf16.cu`, `mma.sync`, sm_80 and newer); on the CPU the
    /// same rounding ([`crate::bf16`]) with f32 sums.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// The geometry of one bias-free 2-d convolution, NCHW: input `[n, c_in, h, w]`, weight
/// `[c_out, c_in, k, k]` with `k` odd, padding `k / 2` ("same" size at stride 1, as every
/// ResNet convolution), output `[n, c_out, oh, ow]`. Build it with [`ConvShape::new`], which
/// derives `pad`, `oh` and `ow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Kernel size (odd; the GPU takes 1 or 3).
    pub k: usize,
    /// Stride (the GPU takes 1 or 2).
    pub stride: usize,
    /// Zero padding on each side: `k / 2`.
    pub pad: usize,
    /// Output height: `(h + 2·pad − k) / stride + 1`.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvShape {
    /// The convolution of an input of shape `x_shape` (`[n, c_in, h, w]`) with a weight of
    /// shape `w_shape` (`[c_out, c_in, k, k]`, `k` odd). Panics when they do not fit (a
    /// programming error, like any op's mismatched shapes).
    pub fn new(x_shape: &[usize], w_shape: &[usize], stride: usize) -> Self {
        let [n, c_in, h, w] = x_shape[..] else {
            panic!("conv input must be NCHW, got {x_shape:?}")
        };
        let [c_out, wc_in, k, k2] = w_shape[..] else {
            panic!("conv weight must be 4-d, got {w_shape:?}")
        };
        assert!(
            c_in == wc_in && k == k2 && k % 2 == 1,
            "conv weight {w_shape:?} does not fit input {x_shape:?}"
        );
        assert!(stride >= 1, "conv stride must be at least 1");
        let pad = k / 2;
        ConvShape {
            n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        }
    }

    /// Elements of x: N·C_in·H·W.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of w: C_out·C_in·k·k.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.k * self.k
    }
    /// Elements of y: N·C_out·OH·OW.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow
    }

    /// Rows of the im2col matrix (the forward GEMM's inner dimension).
    pub fn col_rows(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels per channel (the forward GEMM's column count per image).
    pub fn out_pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// Multiply-accumulates of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        self.n * self.c_out * self.col_rows() * self.out_pixels()
    }

    /// A 1x1 stride-1 convolution needs no im2col: the image already is the column matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }

    /// Floats of per-image im2col scratch (none for a pointwise convolution).
    pub(crate) fn scratch_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.col_rows() * self.out_pixels()
        }
    }

    /// For kernel offset `k_off`, the output columns `lo..hi` whose input column
    /// `ox·s + k_off − pad` lies inside the image; the rest read zero padding.
    pub(crate) fn valid_cols(&self, k_off: usize) -> (usize, usize) {
        let first = (self.pad.saturating_sub(k_off)).div_ceil(self.stride);
        let last = (self.w + self.pad)
            .checked_sub(k_off + 1)
            .map_or(0, |v| v / self.stride + 1);
        (first.min(self.ow), last.clamp(first.min(self.ow), self.ow))
    }

    /// The input row read by output row `oy` at kernel row `ky`, if inside the image.
    pub(crate) fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }

    /// Checks that the GPU kernels take this shape (k in {1, 3}, stride in {1, 2}, no zero
    /// dimension) and that every count fits their `int`s ([`kernels::launch::MAX_LEN`]).
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
        to_int(kernel, "x length", self.x_len())?;
        to_int(kernel, "y length", self.y_len())?;
        to_int(kernel, "w length", self.w_len())?;
        Ok(())
    }

    /// The kernels' ten shape arguments, `(n, c_in, h, w, c_out, oh, ow, k, stride, pad)`, after
    /// [`ConvShape::validate`].
    pub(crate) fn kernel_ints(&self, kernel: &'static str) -> Result<[i32; 10]> {
        self.validate(kernel)?;
        let mut ints = [0; 10];
        for (i, (what, v)) in [
            ("n", self.n),
            ("c_in", self.c_in),
            ("h", self.h),
            ("w", self.w),
            ("c_out", self.c_out),
            ("oh", self.oh),
            ("ow", self.ow),
            ("k", self.k),
            ("stride", self.stride),
            ("pad", self.pad),
        ]
        .into_iter()
        .enumerate()
        {
            ints[i] = to_int(kernel, what, v)?;
        }
        Ok(ints)
    }
}

/// The profile's name of a conv pass (`conv3x3 16->32 32x32/2 fwd`).
fn conv_name(pass: &str, x_shape: &[usize], w_shape: &[usize], stride: usize) -> String {
    let (k, cin, cout) = (w_shape[2], w_shape[1], w_shape[0]);
    let (h, w) = (x_shape[2], x_shape[3]);
    format!("conv{k}x{k} {cin}->{cout} {h}x{w}/{stride} {pass}")
}

/// `out = pass(a, b) + beta·out` on the GPU, with the pass's split-K workspace allocated for
/// the call (uninitialised: every split writes its whole slab). A failure panics naming `op`.
// The op, the pass, its arithmetic and shape, three tensors and beta.
#[allow(clippy::too_many_arguments)]
fn on_gpu(
    op: &'static str,
    gpu: &Gpu,
    pass: ConvPass,
    precision: Precision,
    shape: &ConvShape,
    (a, b): (&Tensor, &Tensor),
    out: &mut Tensor,
    beta: f32,
) {
    let len = pass.workspace_len(shape, precision);
    let mut workspace = (len > 0).then(|| check(op, gpu.uninit_f32(len)));
    let r = conv2d(
        gpu,
        pass,
        precision,
        shape,
        &a.cu().as_view(),
        &b.cu().as_view(),
        &mut out.cu_mut().as_view_mut(),
        workspace.as_mut().map(|w| w.as_view_mut()).as_mut(),
        beta,
    );
    check(op, r);
}

/// What the reference computes on for `precision`: the tensor itself, or rounded to bf16 (the
/// kernel's operands; the fast path rounds as it packs).
fn operand(t: &Tensor, precision: Precision) -> Cow<'_, Tensor> {
    match precision {
        Precision::Fp32 => Cow::Borrowed(t),
        Precision::Bf16 => Cow::Owned(round_tensor(t)),
    }
}

/// `y = conv(x, weight)` with the given stride, in fp32.
pub fn conv2d_forward(x: &Tensor, weight: &Tensor, stride: usize) -> Tensor {
    conv2d_forward_with(x, weight, stride, Precision::Fp32)
}

/// `y = conv(x, weight)` with the given stride and arithmetic.
pub fn conv2d_forward_with(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    precision: Precision,
) -> Tensor {
    const OP: &str = "conv2d_forward";
    let _span = crate::profile::span(|| conv_name("fwd", x.shape(), weight.shape(), stride));
    let s = ConvShape::new(x.shape(), weight.shape(), stride);
    if let Some(gpu) = cuda_of(OP, &[x, weight]) {
        let mut y = Tensor::cuda_output(OP, &gpu, &[s.n, s.c_out, s.oh, s.ow]);
        on_gpu(
            OP,
            &gpu,
            ConvPass::Forward,
            precision,
            &s,
            (x, weight),
            &mut y,
            0.0,
        );
        return y;
    }
    fast::forward(x, weight, stride, precision).unwrap_or_else(|| {
        let (x, weight) = (operand(x, precision), operand(weight, precision));
        reference::forward(&x, &weight, stride)
    })
}

/// The input gradient `dx` of `y = conv(x, weight)`, given `dy`, in fp32.
pub fn conv2d_backward_data(
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
) -> Tensor {
    conv2d_backward_data_with(dy, weight, x_shape, stride, Precision::Fp32)
}

/// The input gradient `dx` of `y = conv(x, weight)`, given `dy`, with the given arithmetic.
pub fn conv2d_backward_data_with(
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
    precision: Precision,
) -> Tensor {
    const OP: &str = "conv2d_backward_data";
    let _span = crate::profile::span(|| conv_name("bwd data", x_shape, weight.shape(), stride));
    let s = ConvShape::new(x_shape, weight.shape(), stride);
    assert_eq!(dy.shape(), [s.n, s.c_out, s.oh, s.ow], "conv dy shape");
    if let Some(gpu) = cuda_of(OP, &[dy, weight]) {
        let mut dx = Tensor::cuda_output(OP, &gpu, x_shape);
        let pass = ConvPass::BackwardData;
        on_gpu(OP, &gpu, pass, precision, &s, (dy, weight), &mut dx, 0.0);
        return dx;
    }
    fast::backward_data(dy, weight, x_shape, stride, precision).unwrap_or_else(|| {
        let (dy, weight) = (operand(dy, precision), operand(weight, precision));
        reference::backward_data(&dy, &weight, x_shape, stride)
    })
}

/// Accumulate the weight gradient of `y = conv(x, weight)` into `dweight`: `dW += dy ⋆ x`, in
/// fp32.
pub fn conv2d_backward_weight(x: &Tensor, dy: &Tensor, stride: usize, dweight: &mut Tensor) {
    conv2d_backward_weight_with(x, dy, stride, dweight, Precision::Fp32)
}

/// Accumulate the weight gradient of `y = conv(x, weight)` into `dweight` with the given
/// arithmetic (the accumulation into `dweight` itself is f32 either way).
pub fn conv2d_backward_weight_with(
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) {
    const OP: &str = "conv2d_backward_weight";
    let _span =
        crate::profile::span(|| conv_name("bwd weight", x.shape(), dweight.shape(), stride));
    let s = ConvShape::new(x.shape(), dweight.shape(), stride);
    assert_eq!(dy.shape(), [s.n, s.c_out, s.oh, s.ow], "conv dy shape");
    if let Some(gpu) = cuda_of(OP, &[x, dy, &*dweight]) {
        // beta = 1: accumulate into dW, like the CPU body.
        let pass = ConvPass::BackwardWeight;
        on_gpu(OP, &gpu, pass, precision, &s, (dy, x), dweight, 1.0);
        return;
    }
    if !fast::backward_weight(x, dy, stride, dweight, precision) {
        let (x, dy) = (operand(x, precision), operand(dy, precision));
        reference::backward_weight(&x, &dy, stride, dweight);
    }
}

/// Whether a host convolution in `precision` runs the fast path ([`fast`]) rather
/// than the reference on this CPU.
pub fn cpu_fast_path(precision: Precision) -> bool {
    fast::available(precision)
}
