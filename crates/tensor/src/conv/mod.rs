//! 2-d convolution without bias (3x3 pad 1 or 1x1 pad 0; stride 1 or 2): forward, input
//! gradient, weight gradient.
//!
//! For one image with `cin` channels, im2col lays every receptive field out as a column:
//! `col[(ci*k + ky)*k + kx, oy*wo + ox] = x[ci, oy*s + ky - p, ox*s + kx - p]` (0 outside), and
//! each pass is a GEMM with `W` as a `cout x (cin*k*k)` matrix. Where it runs:
//! - on the CPU, the fast path of [`crate::cpu::conv`] when the CPU has AVX2 or AVX-512 (for
//!   bf16 also `vdpbf16ps` or AMX), else [`reference`](mod@reference) (plain im2col + the `gemm`
//!   crate; the oracle of the tests);
//! - on a GPU, the implicit-GEMM kernels of `conv.cu` (k in {1, 3}, stride in {1, 2}: every
//!   ResNet convolution).
//!
//! The `_with` variants take a [`Precision`]. `Bf16` runs `conv_bf16.cu` on the tensor cores; on
//! the CPU it rounds both operands to bf16 ([`crate::bf16`]) and sums their products in f32 —
//! the reference runs its f32 code on the rounded tensors, the fast paths `vdpbf16ps`, AMX
//! tiles, or their fp32 kernels on operands rounded as they are packed — which is exactly what
//! the kernel computes up to the order of its additions (its CPU twin; `vdpbf16ps` and AMX also
//! flush denormals, see `gemm::amx`).

pub mod reference;
#[cfg(test)]
mod tests;

use crate::bf16::round_tensor;
use crate::{check, cpu, cuda_of, Precision, Tensor};
use kernels::launch as kl;
use kernels::{CudaSlice, Gpu};

/// The geometry of one convolution, derived from the input and weight shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// `x`: `[n, cin, h, w]`, `weight`: `[cout, cin, k, k]` with k odd; padding keeps "same"
    /// size at stride 1 (`k / 2`), as every ResNet convolution does.
    pub fn new(x_shape: &[usize], w_shape: &[usize], stride: usize) -> Self {
        let [n, cin, h, w] = x_shape[..] else {
            panic!("conv input must be NCHW, got {x_shape:?}")
        };
        let [cout, wcin, k, k2] = w_shape[..] else {
            panic!("conv weight must be 4-d, got {w_shape:?}")
        };
        assert!(
            cin == wcin && k == k2 && k % 2 == 1,
            "conv weight {w_shape:?} does not fit input {x_shape:?}"
        );
        assert!(stride >= 1, "conv stride must be at least 1");
        let pad = k / 2;
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (w + 2 * pad - k) / stride + 1;
        ConvGeom {
            n,
            cin,
            h,
            w,
            cout,
            k,
            stride,
            pad,
            ho,
            wo,
        }
    }

    /// Rows of the im2col matrix (the GEMM's inner dimension).
    pub fn col_rows(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output pixels per channel (the GEMM's column count).
    pub fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// The same geometry for the CUDA launchers.
    pub fn cuda_shape(&self) -> kl::ConvShape {
        kl::ConvShape {
            n: self.n,
            c_in: self.cin,
            h: self.h,
            w: self.w,
            c_out: self.cout,
            k: self.k,
            stride: self.stride,
        }
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

    /// Multiply-accumulates of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        self.n * self.cout * self.col_rows() * self.out_pixels()
    }
}

impl ConvGeom {
    /// For kernel offset `k_off`, the output columns `lo..hi` whose input column
    /// `ox·s + k_off − pad` lies inside the image; the rest read zero padding.
    pub(crate) fn valid_cols(&self, k_off: usize) -> (usize, usize) {
        let first = (self.pad.saturating_sub(k_off)).div_ceil(self.stride);
        let last = (self.w + self.pad)
            .checked_sub(k_off + 1)
            .map_or(0, |v| v / self.stride + 1);
        (first.min(self.wo), last.clamp(first.min(self.wo), self.wo))
    }

    /// The input row read by output row `oy` at kernel row `ky`, if inside the image.
    pub(crate) fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }
}

/// The profile's name of a conv pass (`conv3x3 16->32 32x32/2 fwd`).
fn conv_name(pass: &str, x_shape: &[usize], w_shape: &[usize], stride: usize) -> String {
    let (k, cin, cout) = (w_shape[2], w_shape[1], w_shape[0]);
    let (h, w) = (x_shape[2], x_shape[3]);
    format!("conv{k}x{k} {cin}->{cout} {h}x{w}/{stride} {pass}")
}

/// The split-K workspace of a conv launch: `len` uninitialised elements (every split writes its
/// whole slab), or none when the launch does not split.
fn alloc_split_workspace(op: &'static str, gpu: &Gpu, len: usize) -> Option<CudaSlice<f32>> {
    (len > 0).then(|| check(op, gpu.uninit_f32(len)))
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
    let _span = crate::profile::span(|| conv_name("fwd", x.shape(), weight.shape(), stride));
    let g = ConvGeom::new(x.shape(), weight.shape(), stride);
    if let Some(gpu) = cuda_of("conv2d_forward", &[x, weight]) {
        const OP: &str = "conv2d_forward";
        let shape = g.cuda_shape();
        let mut y = Tensor::cuda_output(OP, &gpu, &[g.n, g.cout, g.ho, g.wo]);
        // Split-K partials, when the grid alone is too small for the GPU (launch::conv).
        let mut workspace = alloc_split_workspace(OP, &gpu, shape.forward_workspace_len(precision));
        let r = kl::conv2d_forward(
            &gpu,
            precision,
            &shape,
            &x.cu().as_view(),
            &weight.cu().as_view(),
            &mut y.cu_mut().as_view_mut(),
            workspace.as_mut().map(|w| w.as_view_mut()).as_mut(),
            0.0,
        );
        check(OP, r);
        return y;
    }
    if precision == Precision::Bf16 {
        if let Some(y) = cpu::conv::forward(x, weight, stride, precision) {
            return y;
        }
        return reference::forward(&round_tensor(x), &round_tensor(weight), stride);
    }
    cpu::conv::forward(x, weight, stride, precision)
        .unwrap_or_else(|| reference::forward(x, weight, stride))
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
    let _span = crate::profile::span(|| conv_name("bwd data", x_shape, weight.shape(), stride));
    let g = ConvGeom::new(x_shape, weight.shape(), stride);
    assert_eq!(dy.shape(), [g.n, g.cout, g.ho, g.wo], "conv dy shape");
    if let Some(gpu) = cuda_of("conv2d_backward_data", &[dy, weight]) {
        const OP: &str = "conv2d_backward_data";
        let shape = g.cuda_shape();
        let mut dx = Tensor::cuda_output(OP, &gpu, x_shape);
        let mut workspace =
            alloc_split_workspace(OP, &gpu, shape.backward_data_workspace_len(precision));
        let r = kl::conv2d_backward_data(
            &gpu,
            precision,
            &shape,
            &dy.cu().as_view(),
            &weight.cu().as_view(),
            &mut dx.cu_mut().as_view_mut(),
            workspace.as_mut().map(|w| w.as_view_mut()).as_mut(),
            0.0,
        );
        check(OP, r);
        return dx;
    }
    if precision == Precision::Bf16 {
        if let Some(dx) = cpu::conv::backward_data(dy, weight, x_shape, stride, precision) {
            return dx;
        }
        let (dy, weight) = (round_tensor(dy), round_tensor(weight));
        return reference::backward_data(&dy, &weight, x_shape, stride);
    }
    cpu::conv::backward_data(dy, weight, x_shape, stride, precision)
        .unwrap_or_else(|| reference::backward_data(dy, weight, x_shape, stride))
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
    let _span =
        crate::profile::span(|| conv_name("bwd weight", x.shape(), dweight.shape(), stride));
    let g = ConvGeom::new(x.shape(), dweight.shape(), stride);
    assert_eq!(dy.shape(), [g.n, g.cout, g.ho, g.wo], "conv dy shape");
    if let Some(gpu) = cuda_of("conv2d_backward_weight", &[x, dy, &*dweight]) {
        const OP: &str = "conv2d_backward_weight";
        let shape = g.cuda_shape();
        // Split-K partials; allocated per call for now (the plan-once work will keep it).
        // Every split writes its whole slab (an empty split stores zeros): no zero-fill needed.
        let mut workspace = check(OP, gpu.uninit_f32(shape.weight_grad_workspace_len()));
        // beta = 1: accumulate into dW, like the CPU body.
        let r = kl::conv2d_backward_weight(
            &gpu,
            precision,
            &shape,
            &dy.cu().as_view(),
            &x.cu().as_view(),
            &mut dweight.cu_mut().as_view_mut(),
            &mut workspace.as_view_mut(),
            1.0,
        );
        check(OP, r);
        return;
    }
    if precision == Precision::Bf16 {
        if cpu::conv::backward_weight(x, dy, stride, dweight, precision) {
            return;
        }
        let (x, dy) = (round_tensor(x), round_tensor(dy));
        return reference::backward_weight(&x, &dy, stride, dweight);
    }
    if !cpu::conv::backward_weight(x, dy, stride, dweight, precision) {
        reference::backward_weight(x, dy, stride, dweight);
    }
}

/// Whether a host convolution in `precision` runs the fast path ([`crate::cpu::conv`]) rather
/// than the reference on this CPU.
pub fn cpu_fast_path(precision: Precision) -> bool {
    cpu::conv::available(precision)
}
