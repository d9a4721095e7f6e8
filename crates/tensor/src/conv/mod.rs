//! 2-d convolution without bias (3x3 pad 1 or 1x1 pad 0; stride 1 or 2): forward, input
//! gradient, weight gradient.
//!
//! For one image with `cin` channels, im2col lays every receptive field out as a column:
//! `col[(ci*k + ky)*k + kx, oy*wo + ox] = x[ci, oy*s + ky - p, ox*s + kx - p]` (0 outside), and
//! each pass is a GEMM with `W` as a `cout x (cin*k*k)` matrix. Where it runs:
//! - on the CPU, the fast path of [`crate::cpu::conv`] when the CPU has AVX-512 (AVX512-BF16 for
//!   bf16), else [`reference`](mod@reference) (plain im2col + the `gemm` crate; the oracle of the tests);
//! - on a GPU, the implicit-GEMM kernels of `conv.cu` (k in {1, 3}, stride in {1, 2}: every
//!   ResNet convolution).
//!
//! The `_with` variants take a [`Precision`]. `Bf16` runs `conv_bf16.cu` on the tensor cores; on
//! the CPU it rounds both operands to bf16 ([`crate::bf16`]) and sums their products in f32 —
//! the reference runs its f32 code on the rounded tensors, the fast path `vdpbf16ps` — which is
//! exactly what the kernel computes up to the order of its additions (its CPU twin).

pub mod cuda;
mod cuda_plan;
pub mod reference;
mod shape;
#[cfg(test)]
mod tests;

pub use shape::ConvShape;

use std::borrow::Cow;

use crate::bf16::round_tensor;
use crate::{check, cpu, cuda_of, Tensor};
use cuda::{conv2d, ConvPass};
use kernels::Gpu;

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
    cpu::conv::forward(x, weight, stride, precision).unwrap_or_else(|| {
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
    cpu::conv::backward_data(dy, weight, x_shape, stride, precision).unwrap_or_else(|| {
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
    if !cpu::conv::backward_weight(x, dy, stride, dweight, precision) {
        let (x, dy) = (operand(x, precision), operand(dy, precision));
        reference::backward_weight(&x, &dy, stride, dweight);
    }
}

/// Whether a host convolution in `precision` runs the fast path ([`crate::cpu::conv`]) rather
/// than the reference on this CPU.
pub fn cpu_fast_path(precision: Precision) -> bool {
    cpu::conv::available(precision)
}
