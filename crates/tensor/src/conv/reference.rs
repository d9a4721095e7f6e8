//! The reference CPU convolution: im2col + GEMM (the `gemm` crate), one image at a time, in
//! fp32. Plain and portable; the oracle every fast path ([`super::fast`]) is tested against,
//! and what runs on a CPU without AVX-512. With `W` as a `cout x (cin*k*k)` matrix:
//!   forward          y_i  = W @ col_i
//!   backward data    dx_i = col2im(W^T @ dy_i)
//!   backward weight  dW  += sum_i dy_i @ col_i^T
//! Images run in parallel; the weight gradient sums fixed chunks of images in order.

use super::ConvShape;
use crate::gemm::{gemm, Mat};
use crate::{chunk_ranges, Tensor};
use rayon::prelude::*;

/// Lay one image `[cin, h, w]` out as columns `[cin*k*k, ho*wo]`.
pub(crate) fn im2col(g: &ConvShape, img: &[f32], col: &mut [f32]) {
    let p = g.out_pixels();
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut col[((ci * g.k + ky) * g.k + kx) * p..][..p];
                let (lo, hi) = g.valid_cols(kx);
                for (oy, out) in row.chunks_exact_mut(g.ow).enumerate() {
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
pub(crate) fn col2im(g: &ConvShape, col: &[f32], img: &mut [f32]) {
    img.fill(0.0);
    let p = g.out_pixels();
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &col[((ci * g.k + ky) * g.k + kx) * p..][..p];
                let (lo, hi) = g.valid_cols(kx);
                for (oy, src) in row.chunks_exact(g.ow).enumerate() {
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

/// `y = conv(x, weight)`.
pub fn forward(x: &Tensor, weight: &Tensor, stride: usize) -> Tensor {
    let g = ConvShape::new(x.shape(), weight.shape(), stride);
    let (img_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.out_pixels());
    let wmat = Mat::rm(weight.data(), g.c_out, g.col_rows());
    let mut y = Tensor::zeros(&[g.n, g.c_out, g.oh, g.ow]);
    y.data_mut()
        .par_chunks_mut(out_len)
        .zip(x.data().par_chunks(img_len))
        .for_each_init(
            || crate::oom::host_zeros("conv2d im2col workspace", g.scratch_len()),
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

/// The input gradient `dx` of `y = conv(x, weight)`, given `dy`.
pub fn backward_data(dy: &Tensor, weight: &Tensor, x_shape: &[usize], stride: usize) -> Tensor {
    let g = ConvShape::new(x_shape, weight.shape(), stride);
    let (img_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.out_pixels());
    let wt = Mat::rm(weight.data(), g.c_out, g.col_rows()).t();
    let mut dx = Tensor::zeros(x_shape);
    dx.data_mut()
        .par_chunks_mut(img_len)
        .zip(dy.data().par_chunks(out_len))
        .for_each_init(
            || crate::oom::host_zeros("conv2d im2col workspace", g.scratch_len()),
            |dcol, (dxi, dyi)| {
                let dyi = Mat::rm(dyi, g.c_out, g.out_pixels());
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

/// Accumulate the weight gradient of `y = conv(x, weight)` into `dweight`: `dW += dy ⋆ x`.
pub fn backward_weight(x: &Tensor, dy: &Tensor, stride: usize, dweight: &mut Tensor) {
    let g = ConvShape::new(x.shape(), dweight.shape(), stride);
    let (img_len, out_len, wlen) = (g.c_in * g.h * g.w, g.c_out * g.out_pixels(), dweight.len());
    let partials: Vec<Vec<f32>> = chunk_ranges(g.n)
        .into_par_iter()
        .map(|images| {
            let mut part = crate::oom::host_zeros("conv2d weight-gradient partial", wlen);
            let mut col = crate::oom::host_zeros("conv2d im2col workspace", g.scratch_len());
            for i in images {
                let xi = &x.data()[i * img_len..][..img_len];
                let cols = if g.is_pointwise() {
                    xi
                } else {
                    im2col(&g, xi, &mut col);
                    &col[..]
                };
                let dyi = Mat::rm(
                    &dy.data()[i * out_len..][..out_len],
                    g.c_out,
                    g.out_pixels(),
                );
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
