//! 2-d convolution without bias (3x3 pad 1 or 1x1 pad 0; stride 1 or 2), as im2col + GEMM.
//!
//! For one image with `cin` channels, im2col lays every receptive field out as a column:
//! `col[(ci*k + ky)*k + kx, oy*wo + ox] = x[ci, oy*s + ky - p, ox*s + kx - p]` (0 outside).
//! Then, with `W` as a `cout x (cin*k*k)` matrix:
//!   forward          y_i  = W @ col_i
//!   backward data    dx_i = col2im(W^T @ dy_i)
//!   backward weight  dW  += sum_i dy_i @ col_i^T
//! Images run in parallel; the weight gradient sums fixed chunks of images in order.
//!
//! On a GPU each function launches the implicit-GEMM kernels of `conv.cu` instead (k in {1, 3},
//! stride in {1, 2}: every ResNet convolution).
//!
//! The `_with` variants take a [`Precision`]. `Bf16` runs `conv_bf16.cu` on the tensor cores; on
//! the CPU it rounds both operands to bf16 ([`crate::bf16`]) and runs the f32 code, which is
//! exactly what the kernel computes up to the order of its additions (its CPU twin).

use crate::bf16::round_tensor;
use crate::gemm::{gemm, Mat};
use crate::{check, chunk_ranges, cuda_of, Precision, Tensor};
use kernels::launch as kl;
use kernels::{CudaSlice, Gpu};
use rayon::prelude::*;

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
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }

    /// Floats of per-image im2col scratch (none for a pointwise convolution).
    fn scratch_len(&self) -> usize {
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
    fn valid_cols(&self, k_off: usize) -> (usize, usize) {
        let first = (self.pad.saturating_sub(k_off)).div_ceil(self.stride);
        let last = (self.w + self.pad)
            .checked_sub(k_off + 1)
            .map_or(0, |v| v / self.stride + 1);
        (first.min(self.wo), last.clamp(first.min(self.wo), self.wo))
    }

    /// The input row read by output row `oy` at kernel row `ky`, if inside the image.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
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

/// Lay one image `[cin, h, w]` out as columns `[cin*k*k, ho*wo]`.
fn im2col(g: &ConvGeom, img: &[f32], col: &mut [f32]) {
    let p = g.out_pixels();
    for ci in 0..g.cin {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut col[((ci * g.k + ky) * g.k + kx) * p..][..p];
                let (lo, hi) = g.valid_cols(kx);
                for (oy, out) in row.chunks_exact_mut(g.wo).enumerate() {
                    let Some(iy) = g.input_row(oy, ky) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &img[(ci * g.h + iy) * g.w..][..g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let start = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                    } else {
                        for (o, &v) in out[lo..hi]
                            .iter_mut()
                            .zip(src[start..].iter().step_by(g.stride))
                        {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: add every column entry back onto the pixel it came from.
fn col2im(g: &ConvGeom, col: &[f32], img: &mut [f32]) {
    img.fill(0.0);
    let p = g.out_pixels();
    for ci in 0..g.cin {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &col[((ci * g.k + ky) * g.k + kx) * p..][..p];
                let (lo, hi) = g.valid_cols(kx);
                for (oy, src) in row.chunks_exact(g.wo).enumerate() {
                    let Some(iy) = g.input_row(oy, ky) else {
                        continue;
                    };
                    let dst = &mut img[(ci * g.h + iy) * g.w..][..g.w];
                    let start = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        for (d, &v) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[start..].iter_mut().step_by(g.stride).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
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
        return conv2d_forward(&round_tensor(x), &round_tensor(weight), stride);
    }
    let (img_len, out_len) = (g.cin * g.h * g.w, g.cout * g.out_pixels());
    let wmat = Mat::rm(weight.data(), g.cout, g.col_rows());
    let mut y = Tensor::zeros(&[g.n, g.cout, g.ho, g.wo]);
    y.data_mut()
        .par_chunks_mut(out_len)
        .zip(x.data().par_chunks(img_len))
        .for_each_init(
            || vec![0.0f32; g.scratch_len()],
            |col, (yi, xi)| {
                let cols = if g.is_pointwise() {
                    xi
                } else {
                    im2col(&g, xi, col);
                    &col[..]
                };
                gemm(
                    1.0,
                    wmat,
                    Mat::rm(cols, g.col_rows(), g.out_pixels()),
                    0.0,
                    yi,
                );
            },
        );
    y
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
        return conv2d_backward_data(&round_tensor(dy), &round_tensor(weight), x_shape, stride);
    }
    let (img_len, out_len) = (g.cin * g.h * g.w, g.cout * g.out_pixels());
    let wt = Mat::rm(weight.data(), g.cout, g.col_rows()).t();
    let mut dx = Tensor::zeros(x_shape);
    dx.data_mut()
        .par_chunks_mut(img_len)
        .zip(dy.data().par_chunks(out_len))
        .for_each_init(
            || vec![0.0f32; g.scratch_len()],
            |dcol, (dxi, dyi)| {
                let dyi = Mat::rm(dyi, g.cout, g.out_pixels());
                if g.is_pointwise() {
                    gemm(1.0, wt, dyi, 0.0, dxi);
                } else {
                    gemm(1.0, wt, dyi, 0.0, dcol);
                    col2im(&g, dcol, dxi);
                }
            },
        );
    dx
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
        return conv2d_backward_weight(&round_tensor(x), &round_tensor(dy), stride, dweight);
    }
    let (img_len, out_len, wlen) = (g.cin * g.h * g.w, g.cout * g.out_pixels(), dweight.len());
    let partials: Vec<Vec<f32>> = chunk_ranges(g.n)
        .into_par_iter()
        .map(|images| {
            let mut part = vec![0.0f32; wlen];
            let mut col = vec![0.0f32; g.scratch_len()];
            for i in images {
                let xi = &x.data()[i * img_len..][..img_len];
                let cols = if g.is_pointwise() {
                    xi
                } else {
                    im2col(&g, xi, &mut col);
                    &col[..]
                };
                let dyi = Mat::rm(&dy.data()[i * out_len..][..out_len], g.cout, g.out_pixels());
                gemm(
                    1.0,
                    dyi,
                    Mat::rm(cols, g.col_rows(), g.out_pixels()).t(),
                    1.0,
                    &mut part,
                );
            }
            part
        })
        .collect();
    for part in partials {
        for (d, p) in dweight.data_mut().iter_mut().zip(part) {
            *d += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_tensor, rng};

    /// The definition, six loops deep: the reference the im2col path must equal.
    fn conv_naive(x: &Tensor, w: &Tensor, stride: usize) -> Tensor {
        let g = ConvGeom::new(x.shape(), w.shape(), stride);
        let mut y = Tensor::zeros(&[g.n, g.cout, g.ho, g.wo]);
        for n in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut acc = 0.0f64;
                        for ci in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let iy = (oy * stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * stride + kx) as isize - g.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < g.h
                                        && (ix as usize) < g.w
                                    {
                                        let xv = x.data()[((n * g.cin + ci) * g.h + iy as usize)
                                            * g.w
                                            + ix as usize];
                                        let wv =
                                            w.data()[((co * g.cin + ci) * g.k + ky) * g.k + kx];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        y.data_mut()[((n * g.cout + co) * g.ho + oy) * g.wo + ox] = acc as f32;
                    }
                }
            }
        }
        y
    }

    // Awkward shapes: batch 1 and 3, odd sizes, both kernel sizes, both strides.
    const CASES: [([usize; 4], [usize; 4], usize); 6] = [
        ([1, 3, 5, 7], [4, 3, 3, 3], 1),
        ([3, 2, 7, 5], [5, 2, 3, 3], 2),
        ([3, 5, 6, 6], [3, 5, 3, 3], 2),
        ([1, 4, 5, 5], [6, 4, 1, 1], 1),
        ([3, 3, 7, 6], [5, 3, 1, 1], 2),
        ([2, 16, 8, 8], [32, 16, 3, 3], 2),
    ];

    #[test]
    fn forward_matches_the_definition() {
        let mut r = rng(1);
        for (xs, ws, s) in CASES {
            let x = rand_tensor(&mut r, &xs);
            let w = rand_tensor(&mut r, &ws);
            // f32 sums of at most 144 products of O(1) values: 1e-5 relative is ample.
            assert_close(&conv2d_forward(&x, &w, s), &conv_naive(&x, &w, s), 1e-5);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut r = rng(2);
        for (xs, ws, s) in CASES {
            let x = rand_tensor(&mut r, &xs);
            let w = rand_tensor(&mut r, &ws);
            let y_shape = conv2d_forward(&x, &w, s).shape().to_vec();
            let probe = rand_tensor(&mut r, &y_shape);
            let dx = conv2d_backward_data(&probe, &w, &xs, s);
            let mut dw = Tensor::zeros(&ws);
            conv2d_backward_weight(&x, &probe, s, &mut dw);
            let loss =
                |x: &Tensor, w: &Tensor| crate::testutil::dot(&conv2d_forward(x, w, s), &probe);
            check_grad("conv dx", &x, &dx, |x| loss(x, &w));
            check_grad("conv dw", &w, &dw, |w| loss(&x, w));
        }
    }

    #[test]
    fn weight_gradient_accumulates() {
        let mut r = rng(3);
        let x = rand_tensor(&mut r, &[3, 2, 5, 5]);
        let dy = rand_tensor(&mut r, &[3, 4, 5, 5]);
        let mut once = Tensor::zeros(&[4, 2, 3, 3]);
        conv2d_backward_weight(&x, &dy, 1, &mut once);
        let mut twice = once.clone();
        conv2d_backward_weight(&x, &dy, 1, &mut twice);
        let doubled = Tensor::from_vec(once.shape(), once.data().iter().map(|v| 2.0 * v).collect());
        assert_close(&twice, &doubled, 1e-6);
    }
}
