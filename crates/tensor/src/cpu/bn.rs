//! Batch normalisation (training and evaluation forward, backward), each with the ReLU that
//! may follow it fused in: two passes over the activations each way (statistics, then the
//! per-channel affine map), where the reference takes four to five, and outputs written
//! without a zero-fill first. The same formulas as the reference ([`crate::batchnorm`]); the
//! per-channel sums still run in f64, but in one pass (shifted by the channel's first value,
//! so a mean far from zero costs no precision) and image by image, added in image order.
//!
//! Each function returns `None` without AVX-512, and the caller runs the reference.

use super::{kernels, Kernels};
use crate::Tensor;

fn fast() -> bool {
    kernels() >= Kernels::Avx512
}

/// Training-mode forward (+ ReLU): the output, the batch mean and `1/sqrt(var + eps)`;
/// updates the running statistics as the reference does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
    relu: bool,
) -> Option<(Tensor, Vec<f32>, Vec<f32>)> {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let (n, c, h, w) = x.dims4();
        let count = (n * h * w) as f64;
        assert!(
            count > 1.0,
            "batchnorm needs more than one value per channel, got shape {:?}",
            x.shape()
        );
        // SAFETY: AVX-512F was detected.
        let (means, vars) = unsafe { imp::moments(x) };
        let (mut mean, mut invstd) = (vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let var = vars[ch];
            mean[ch] = means[ch] as f32;
            invstd[ch] = (1.0 / (var + eps as f64).sqrt()) as f32;
            let unbiased = var * count / (count - 1.0);
            running_mean[ch] = ((1.0 - momentum) * running_mean[ch]) + momentum * means[ch] as f32;
            running_var[ch] = ((1.0 - momentum) * running_var[ch]) + momentum * unbiased as f32;
        }
        let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * invstd[ch]).collect();
        let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - scale[ch] * mean[ch]).collect();
        // SAFETY: as above.
        let y = unsafe { imp::affine(x, &scale, &shift, relu) };
        return Some((y, mean, invstd));
    }
    let _ = (
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        momentum,
        eps,
        relu,
    );
    None
}

/// Evaluation-mode forward (+ ReLU) from the running statistics.
pub(crate) fn eval_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    relu: bool,
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let c = gamma.len();
        let scale: Vec<f32> = (0..c)
            .map(|ch| gamma[ch] / (running_var[ch] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|ch| beta[ch] - scale[ch] * running_mean[ch])
            .collect();
        // SAFETY: AVX-512F was detected.
        return Some(unsafe { imp::affine(x, &scale, &shift, relu) });
    }
    let _ = (x, gamma, beta, running_mean, running_var, eps, relu);
    None
}

/// Backward of [`train_forward`]: `dx`; accumulates `dgamma`, `dbeta`. With `relu_out` (the
/// forward's output) ReLU's mask is applied to `dy` on the fly.
pub(crate) fn backward(
    x: &Tensor,
    dy: &Tensor,
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    relu_out: Option<&Tensor>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        let (n, c, h, w) = x.dims4();
        assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
        if let Some(out) = relu_out {
            assert_eq!(out.shape(), x.shape(), "batchnorm relu output shape");
        }
        let count = (n * h * w) as f64;
        // SAFETY: AVX-512F was detected.
        let sums = unsafe { imp::grad_sums(x, dy, relu_out, mean) };
        // As the reference: dx = k·g + a·x + b per channel.
        let (mut k, mut a, mut b) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let inv = invstd[ch] as f64;
            let (sum_g, sum_gxm) = sums[ch];
            dbeta[ch] += sum_g as f32;
            dgamma[ch] += (sum_gxm * inv) as f32;
            let (mean_dy, mean_dy_xhat) = (sum_g / count, sum_gxm * inv / count);
            let kk = gamma[ch] as f64 * inv;
            let aa = -kk * inv * mean_dy_xhat;
            k[ch] = kk as f32;
            a[ch] = aa as f32;
            b[ch] = (-kk * mean_dy - aa * mean[ch] as f64) as f32;
        }
        // SAFETY: as above.
        return Some(unsafe { imp::backward_apply(x, dy, relu_out, &k, &a, &b) });
    }
    let _ = (x, dy, gamma, mean, invstd, relu_out, dgamma, dbeta);
    None
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::simd::{for_vectors, load, load_or, store};
    use crate::Tensor;
    use rayon::prelude::*;
    use std::arch::x86_64::*;

    /// 16 floats as two vectors of 8 doubles.
    #[inline(always)]
    unsafe fn widen(v: __m512) -> (__m512d, __m512d) {
        let top = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        (
            _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
            _mm512_cvtps_pd(top),
        )
    }

    /// `(Σ (v − k), Σ (v − k)²)` over a plane, in f64.
    #[target_feature(enable = "avx512f")]
    unsafe fn plane_moments(p: &[f32], k: f64) -> (f64, f64) {
        let kv = _mm512_set1_pd(k);
        let (mut s, mut q) = ([_mm512_setzero_pd(); 2], [_mm512_setzero_pd(); 2]);
        let fill = _mm512_set1_ps(k as f32);
        for_vectors!(p.len(), |i, m| {
            // Lanes past the end: v = k, so they add exactly zero.
            let v = load_or(fill, m, p.as_ptr().add(i));
            let (lo, hi) = widen(v);
            let (dl, dh) = (_mm512_sub_pd(lo, kv), _mm512_sub_pd(hi, kv));
            s[0] = _mm512_add_pd(s[0], dl);
            s[1] = _mm512_add_pd(s[1], dh);
            q[0] = _mm512_fmadd_pd(dl, dl, q[0]);
            q[1] = _mm512_fmadd_pd(dh, dh, q[1]);
        });
        (
            _mm512_reduce_add_pd(_mm512_add_pd(s[0], s[1])),
            _mm512_reduce_add_pd(_mm512_add_pd(q[0], q[1])),
        )
    }

    /// Per channel, the batch mean and biased variance of `x` (f64).
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let (n, c, h, w) = x.dims4();
        let hw = h * w;
        let data = x.data();
        // Each channel's sums are taken relative to its first value (exact in f64), so a mean
        // far from zero does not cancel the variance's digits away.
        let shift: Vec<f64> = (0..c).map(|ch| data[ch * hw] as f64).collect();
        let per_image: Vec<Vec<(f64, f64)>> = data
            .par_chunks(c * hw)
            .map(|img| {
                (0..c)
                    .map(|ch| plane_moments(&img[ch * hw..][..hw], shift[ch]))
                    .collect()
            })
            .collect();
        let count = (n * hw) as f64;
        let (mut means, mut vars) = (vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let (s, q) = per_image.iter().fold((0.0, 0.0), |acc, img| {
                (acc.0 + img[ch].0, acc.1 + img[ch].1)
            });
            let d = s / count;
            means[ch] = shift[ch] + d;
            vars[ch] = (q / count - d * d).max(0.0);
        }
        (means, vars)
    }

    /// `out = scale[ch]·x + shift[ch]` (then `max(·, 0)` with `RELU`) over one plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn affine_plane<const RELU: bool>(
        x: *const f32,
        out: *mut f32,
        n: usize,
        a: f32,
        b: f32,
    ) {
        let (av, bv, zero) = (_mm512_set1_ps(a), _mm512_set1_ps(b), _mm512_setzero_ps());
        for_vectors!(n, |i, m| {
            let mut v = _mm512_fmadd_ps(av, load(m, x.add(i)), bv);
            if RELU {
                v = _mm512_max_ps(v, zero);
            }
            store(m, out.add(i), v);
        });
    }

    /// The per-channel affine map (+ ReLU) into a fresh tensor.
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn affine(x: &Tensor, scale: &[f32], shift: &[f32], relu: bool) -> Tensor {
        let (_, c, h, w) = x.dims4();
        let hw = h * w;
        let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
            out.par_chunks_mut(c * hw)
                .zip(x.data().par_chunks(c * hw))
                .for_each(|(o, xi)| {
                    for ch in 0..c {
                        let (src, dst) =
                            (xi.as_ptr().add(ch * hw), o.as_mut_ptr().add(ch * hw).cast());
                        if relu {
                            affine_plane::<true>(src, dst, hw, scale[ch], shift[ch]);
                        } else {
                            affine_plane::<false>(src, dst, hw, scale[ch], shift[ch]);
                        }
                    }
                })
        };
        // SAFETY: every plane of every image is written.
        Tensor::host_filled(x.shape(), fill)
    }

    /// `dy`, masked by `out > 0` when `RELU`.
    #[inline(always)]
    unsafe fn grad<const RELU: bool>(m: u16, dy: *const f32, out: *const f32) -> __m512 {
        let g = load(m, dy);
        if RELU {
            let live = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(load(m, out), _mm512_setzero_ps());
            _mm512_maskz_mov_ps(live, g)
        } else {
            g
        }
    }

    /// `(Σ g, Σ g·(x − mean))` over one plane, in f64.
    #[target_feature(enable = "avx512f")]
    unsafe fn plane_grad_sums<const RELU: bool>(
        x: *const f32,
        dy: *const f32,
        out: *const f32,
        n: usize,
        mean: f64,
    ) -> (f64, f64) {
        let mv = _mm512_set1_pd(mean);
        let (mut s, mut t) = ([_mm512_setzero_pd(); 2], [_mm512_setzero_pd(); 2]);
        for_vectors!(n, |i, m| {
            let (gl, gh) = widen(grad::<RELU>(m, dy.add(i), out.wrapping_add(i)));
            let (xl, xh) = widen(load(m, x.add(i)));
            s[0] = _mm512_add_pd(s[0], gl);
            s[1] = _mm512_add_pd(s[1], gh);
            t[0] = _mm512_fmadd_pd(gl, _mm512_sub_pd(xl, mv), t[0]);
            t[1] = _mm512_fmadd_pd(gh, _mm512_sub_pd(xh, mv), t[1]);
        });
        (
            _mm512_reduce_add_pd(_mm512_add_pd(s[0], s[1])),
            _mm512_reduce_add_pd(_mm512_add_pd(t[0], t[1])),
        )
    }

    /// Per channel `(Σ g, Σ g·(x − mean))` with `g` = `dy` (masked by `relu_out > 0`).
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn grad_sums(
        x: &Tensor,
        dy: &Tensor,
        relu_out: Option<&Tensor>,
        mean: &[f32],
    ) -> Vec<(f64, f64)> {
        let (_, c, h, w) = x.dims4();
        let hw = h * w;
        let out = relu_out.map(|t| t.data());
        let per_image: Vec<Vec<(f64, f64)>> = x
            .data()
            .par_chunks(c * hw)
            .zip(dy.data().par_chunks(c * hw))
            .enumerate()
            .map(|(i, (xi, gi))| {
                (0..c)
                    .map(|ch| {
                        let at = ch * hw;
                        let (xp, gp, m) =
                            (xi.as_ptr().add(at), gi.as_ptr().add(at), mean[ch] as f64);
                        match out {
                            Some(o) => plane_grad_sums::<true>(
                                xp,
                                gp,
                                o.as_ptr().add(i * c * hw + at),
                                hw,
                                m,
                            ),
                            None => plane_grad_sums::<false>(xp, gp, std::ptr::null(), hw, m),
                        }
                    })
                    .collect()
            })
            .collect();
        (0..c)
            .map(|ch| {
                per_image.iter().fold((0.0, 0.0), |acc, img| {
                    (acc.0 + img[ch].0, acc.1 + img[ch].1)
                })
            })
            .collect()
    }

    /// `dx = k·g + a·x + b` over one plane.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward_plane<const RELU: bool>(
        x: *const f32,
        dy: *const f32,
        out: *const f32,
        dx: *mut f32,
        n: usize,
        k: f32,
        a: f32,
        b: f32,
    ) {
        let (kv, av, bv) = (_mm512_set1_ps(k), _mm512_set1_ps(a), _mm512_set1_ps(b));
        for_vectors!(n, |i, m| {
            let g = grad::<RELU>(m, dy.add(i), out.wrapping_add(i));
            let v = _mm512_fmadd_ps(kv, g, _mm512_fmadd_ps(av, load(m, x.add(i)), bv));
            store(m, dx.add(i), v);
        });
    }

    /// The input gradient into a fresh tensor.
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn backward_apply(
        x: &Tensor,
        dy: &Tensor,
        relu_out: Option<&Tensor>,
        k: &[f32],
        a: &[f32],
        b: &[f32],
    ) -> Tensor {
        let (_, c, h, w) = x.dims4();
        let (hw, len) = (h * w, c * h * w);
        let out = relu_out.map(|t| t.data());
        let fill = |dx: &mut [std::mem::MaybeUninit<f32>]| {
            dx.par_chunks_mut(len)
                .zip(x.data().par_chunks(len))
                .zip(dy.data().par_chunks(len))
                .enumerate()
                .for_each(|(i, ((dxi, xi), gi))| {
                    for ch in 0..c {
                        let at = ch * hw;
                        let (xp, gp, dp) = (
                            xi.as_ptr().add(at),
                            gi.as_ptr().add(at),
                            dxi.as_mut_ptr().add(at).cast(),
                        );
                        match out {
                            Some(o) => backward_plane::<true>(
                                xp,
                                gp,
                                o.as_ptr().add(i * len + at),
                                dp,
                                hw,
                                k[ch],
                                a[ch],
                                b[ch],
                            ),
                            None => backward_plane::<false>(
                                xp,
                                gp,
                                std::ptr::null(),
                                dp,
                                hw,
                                k[ch],
                                a[ch],
                                b[ch],
                            ),
                        }
                    }
                })
        };
        // SAFETY: every plane of every image is written.
        Tensor::host_filled(x.shape(), fill)
    }
}
