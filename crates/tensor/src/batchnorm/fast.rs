//! Batch normalisation (training and evaluation forward, backward), each with the ReLU that
//! may follow it fused in (and, at a block's end, the residual add before it): two passes over
//! the activations each way (statistics, then the per-channel affine map), where the reference
//! takes four to five, and outputs written without a zero-fill first. The backward recomputes
//! a fused ReLU's mask from the forward's affine map rather than reading its output. The same
//! formulas as the reference ([`crate::batchnorm`]); the per-channel sums still run in f64, but
//! in one pass (shifted by the channel's first value, so a mean far from zero costs no
//! precision) and image by image, added in image order.
//!
//! Each function returns `None` without AVX-512 or AVX2 (whose body is `fast_avx2.rs`), and the
//! caller runs the reference.

// Off x86-64 the fast bodies compile out, leaving their helpers unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

pub(crate) use super::relu_mask::ReluMask;
use crate::cpu::{kernels, Kernels};
use crate::Tensor;

/// The body that runs: AVX-512 (`imp` below) or AVX2 (`fast_avx2.rs`); `None`: the reference.
#[derive(Clone, Copy)]
enum Body {
    Avx512,
    Avx2,
}

fn body() -> Option<Body> {
    match kernels() {
        Kernels::Reference => None,
        Kernels::Avx2 => Some(Body::Avx2),
        _ => Some(Body::Avx512),
    }
}

/// `$f(args)` of the body's module.
#[cfg(target_arch = "x86_64")]
macro_rules! on {
    ($body:expr, $f:ident($($arg:expr),*)) => {
        match $body {
            Body::Avx512 => imp::$f($($arg),*),
            Body::Avx2 => super::fast_avx2::$f($($arg),*),
        }
    };
}

/// The fused forward's results: output, batch mean, `1/sqrt(var + eps)`, and the affine map it
/// applied (`scale`, `shift` per channel).
pub(crate) type TrainForward = (Tensor, Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>));

/// Training-mode forward, plus `residual` if given, then ReLU if `relu`: the output, the batch
/// mean and `1/sqrt(var + eps)`, and the affine map; updates the running statistics as the
/// reference does.
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
    residual: Option<&Tensor>,
) -> Option<TrainForward> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let (n, c, h, w) = x.dims4();
        let count = (n * h * w) as f64;
        assert!(
            count > 1.0,
            "batchnorm needs more than one value per channel, got shape {:?}",
            x.shape()
        );
        // SAFETY: the body's instructions were detected.
        let (means, vars) = unsafe { on!(body, moments(x)) };
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
        let y = unsafe { on!(body, affine(x, &scale, &shift, relu, residual)) };
        return Some((y, mean, invstd, (scale, shift)));
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
        residual,
    );
    None
}

/// Evaluation-mode forward (+ `residual`) (+ ReLU) from the running statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eval_forward(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    relu: bool,
    residual: Option<&Tensor>,
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let c = gamma.len();
        let scale: Vec<f32> = (0..c)
            .map(|ch| gamma[ch] / (running_var[ch] + eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|ch| beta[ch] - scale[ch] * running_mean[ch])
            .collect();
        // SAFETY: the body's instructions were detected.
        return Some(unsafe { on!(body, affine(x, &scale, &shift, relu, residual)) });
    }
    let _ = (
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        eps,
        relu,
        residual,
    );
    None
}

/// Backward of [`train_forward`]: `dx`; accumulates `dgamma`, `dbeta`. ReLU's mask, if one
/// followed, is applied to `dy` on the fly.
pub(crate) fn backward(
    x: &Tensor,
    dy: &Tensor,
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    relu: ReluMask<'_>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Option<Tensor> {
    #[cfg(target_arch = "x86_64")]
    if let Some(body) = body() {
        let (n, c, h, w) = x.dims4();
        assert_eq!(x.shape(), dy.shape(), "batchnorm dy shape");
        if let ReluMask::Output(out) = relu {
            assert_eq!(out.shape(), x.shape(), "batchnorm relu output shape");
        }
        let count = (n * h * w) as f64;
        // SAFETY: the body's instructions were detected.
        let sums = unsafe { on!(body, grad_sums(x, dy, relu, mean)) };
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
        return Some(unsafe { on!(body, backward_apply(x, dy, relu, &k, &a, &b)) });
    }
    let _ = (x, dy, gamma, mean, invstd, relu, dgamma, dbeta);
    None
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::relu_mask::{plane_mask, PlaneMask, ReluMask, BY_AFFINE, BY_OUTPUT, NO_RELU};
    use crate::gemm::simd::{for_vectors, load, load_or, store};
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
            // Rounding can take the one-pass variance a hair below 0; clamp it, but let a
            // NaN through (`f64::max` would turn it into 0), as the reference's two passes do.
            let var = q / count - d * d;
            vars[ch] = if var < 0.0 { 0.0 } else { var };
        }
        (means, vars)
    }

    /// `out = scale[ch]·x + shift[ch]` (then ReLU with `RELU`) over one plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn affine_plane<const RELU: bool, const RES: bool>(
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        n: usize,
        a: f32,
        b: f32,
    ) {
        let (av, bv, zero) = (_mm512_set1_ps(a), _mm512_set1_ps(b), _mm512_setzero_ps());
        for_vectors!(n, |i, m| {
            let mut v = _mm512_fmadd_ps(av, load(m, x.add(i)), bv);
            if RES {
                v = _mm512_add_ps(v, load(m, res.add(i)));
            }
            if RELU {
                // maxps returns its second operand when either is NaN or both are zero:
                // `max(0, v)` is `crate::scalar::relu` (NaN and -0.0 pass), `max(v, 0)` is not.
                v = _mm512_max_ps(zero, v);
            }
            store(m, out.add(i), v);
        });
    }

    /// The per-channel affine map (+ `residual`) (+ ReLU) into a fresh tensor.
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn affine(
        x: &Tensor,
        scale: &[f32],
        shift: &[f32],
        relu: bool,
        residual: Option<&Tensor>,
    ) -> Tensor {
        let (_, c, h, w) = x.dims4();
        let (hw, len) = (h * w, c * h * w);
        let res = residual.map(|r| r.data());
        let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
            out.par_chunks_mut(len)
                .zip(x.data().par_chunks(len))
                .enumerate()
                .for_each(|(i, (o, xi))| {
                    for ch in 0..c {
                        let at = ch * hw;
                        let (src, dst) = (xi.as_ptr().add(at), o.as_mut_ptr().add(at).cast());
                        let r = res.map_or(std::ptr::null(), |r| r[i * len + at..].as_ptr());
                        let (a, b) = (scale[ch], shift[ch]);
                        match (relu, res.is_some()) {
                            (false, false) => affine_plane::<false, false>(src, r, dst, hw, a, b),
                            (true, false) => affine_plane::<true, false>(src, r, dst, hw, a, b),
                            (false, true) => affine_plane::<false, true>(src, r, dst, hw, a, b),
                            (true, true) => affine_plane::<true, true>(src, r, dst, hw, a, b),
                        }
                    }
                })
        };
        // SAFETY: every plane of every image is written.
        Tensor::host_filled(x.shape(), fill)
    }

    /// `dy` (lanes `m`), masked by the ReLU as `MODE` says; `xv` holds `x` at the same lanes.
    #[inline(always)]
    unsafe fn grad<const MODE: u8>(
        m: u16,
        dy: *const f32,
        xv: __m512,
        at: usize,
        pm: PlaneMask,
    ) -> __m512 {
        let g = load(m, dy);
        let live = match MODE {
            BY_OUTPUT => load(m, pm.out.add(at)),
            BY_AFFINE => _mm512_fmadd_ps(_mm512_set1_ps(pm.scale), xv, _mm512_set1_ps(pm.shift)),
            _ => return g,
        };
        // Kept unless `live <= 0` (not-less-or-equal, unordered: NaN keeps `dy`), as
        // `crate::scalar::relu_grad`.
        _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(live, _mm512_setzero_ps()),
            g,
        )
    }

    /// `(Σ g, Σ g·(x − mean))` over one plane, in f64.
    #[target_feature(enable = "avx512f")]
    unsafe fn plane_grad_sums<const MODE: u8>(
        x: *const f32,
        dy: *const f32,
        pm: PlaneMask,
        n: usize,
        mean: f64,
    ) -> (f64, f64) {
        let mv = _mm512_set1_pd(mean);
        let (mut s, mut t) = ([_mm512_setzero_pd(); 2], [_mm512_setzero_pd(); 2]);
        for_vectors!(n, |i, m| {
            let xv = load(m, x.add(i));
            let (gl, gh) = widen(grad::<MODE>(m, dy.add(i), xv, i, pm));
            let (xl, xh) = widen(xv);
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

    /// Per channel `(Σ g, Σ g·(x − mean))` with `g` = `dy` under the ReLU mask.
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn grad_sums(
        x: &Tensor,
        dy: &Tensor,
        relu: ReluMask<'_>,
        mean: &[f32],
    ) -> Vec<(f64, f64)> {
        let (_, c, h, w) = x.dims4();
        let hw = h * w;
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
                        match plane_mask(relu, i, ch, c, hw) {
                            (BY_OUTPUT, pm) => plane_grad_sums::<BY_OUTPUT>(xp, gp, pm, hw, m),
                            (BY_AFFINE, pm) => plane_grad_sums::<BY_AFFINE>(xp, gp, pm, hw, m),
                            (_, pm) => plane_grad_sums::<NO_RELU>(xp, gp, pm, hw, m),
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
    unsafe fn backward_plane<const MODE: u8>(
        x: *const f32,
        dy: *const f32,
        pm: PlaneMask,
        dx: *mut f32,
        n: usize,
        k: f32,
        a: f32,
        b: f32,
    ) {
        let (kv, av, bv) = (_mm512_set1_ps(k), _mm512_set1_ps(a), _mm512_set1_ps(b));
        for_vectors!(n, |i, m| {
            let xv = load(m, x.add(i));
            let g = grad::<MODE>(m, dy.add(i), xv, i, pm);
            store(
                m,
                dx.add(i),
                _mm512_fmadd_ps(kv, g, _mm512_fmadd_ps(av, xv, bv)),
            );
        });
    }

    /// The input gradient into a fresh tensor.
    ///
    /// # Safety
    /// AVX-512F.
    pub(super) unsafe fn backward_apply(
        x: &Tensor,
        dy: &Tensor,
        relu: ReluMask<'_>,
        k: &[f32],
        a: &[f32],
        b: &[f32],
    ) -> Tensor {
        let (_, c, h, w) = x.dims4();
        let (hw, len) = (h * w, c * h * w);
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
                        let (kk, aa, bb) = (k[ch], a[ch], b[ch]);
                        match plane_mask(relu, i, ch, c, hw) {
                            (BY_OUTPUT, pm) => {
                                backward_plane::<BY_OUTPUT>(xp, gp, pm, dp, hw, kk, aa, bb)
                            }
                            (BY_AFFINE, pm) => {
                                backward_plane::<BY_AFFINE>(xp, gp, pm, dp, hw, kk, aa, bb)
                            }
                            (_, pm) => backward_plane::<NO_RELU>(xp, gp, pm, dp, hw, kk, aa, bb),
                        }
                    }
                })
        };
        // SAFETY: every plane of every image is written.
        Tensor::host_filled(x.shape(), fill)
    }
}
