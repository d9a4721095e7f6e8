//! The fused batch-norm passes of `fast.rs` (its `imp`) for AVX2 + FMA CPUs: the same four
//! functions with the same arithmetic per element — one-pass f64 sums per plane shifted by
//! the channel's first value, the affine map as one FMA, `max(0, v)` for the ReLU, its mask
//! recomputed by the same FMA in the backward — on vectors of 8 floats (4 doubles) instead of
//! 16. Sums run in another (fixed) order than the AVX-512 ones, so the two differ in the last
//! bits; each is deterministic and independent of the thread count (image by image, added in
//! image order).

use super::relu_mask::{plane_mask, PlaneMask, ReluMask, BY_AFFINE, BY_OUTPUT, NO_RELU};
use crate::Tensor;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Lane masks of 8 floats: entry `n` has the first `n` lanes set.
static FIRST: [[u32; 8]; 9] = {
    let mut t = [[0u32; 8]; 9];
    let mut n = 0;
    while n <= 8 {
        let mut i = 0;
        while i < n {
            t[n][i] = u32::MAX;
            i += 1;
        }
        n += 1;
    }
    t
};

#[inline(always)]
unsafe fn first(n: usize) -> __m256i {
    _mm256_loadu_si256(FIRST[n].as_ptr().cast())
}

/// 8 floats at `p`, or the first `n` (the others zero) when `n < 8`.
#[inline(always)]
unsafe fn load(n: usize, p: *const f32) -> __m256 {
    if n == 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, first(n))
    }
}

/// As [`load`], with `fill` in the lanes past `n`.
#[inline(always)]
unsafe fn load_or(fill: __m256, n: usize, p: *const f32) -> __m256 {
    if n == 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_blendv_ps(fill, load(n, p), _mm256_castsi256_ps(first(n)))
    }
}

/// Stores the first `n` lanes of `v`.
#[inline(always)]
unsafe fn store(n: usize, p: *mut f32, v: __m256) {
    if n == 8 {
        _mm256_storeu_ps(p, v)
    } else {
        _mm256_maskstore_ps(p, first(n), v)
    }
}

/// Runs `$body` once per 8-lane vector of `0..$n` with `$i` its first element and `$m` its
/// lane count: whole vectors first (`$m` the constant 8), then the ragged end.
macro_rules! for_vectors8 {
    ($n:expr, |$i:ident, $m:ident| $body:block) => {{
        let n: usize = $n;
        let whole = n / 8 * 8;
        let mut $i = 0usize;
        while $i < whole {
            let $m: usize = 8;
            $body
            $i += 8;
        }
        if whole < n {
            let $i = whole;
            let $m = n - whole;
            $body
        }
    }};
}

/// 8 floats as two vectors of 4 doubles.
#[inline(always)]
unsafe fn widen(v: __m256) -> (__m256d, __m256d) {
    (
        _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
    )
}

/// The sum of 4 doubles in a fixed order: halves, then the pair.
#[inline(always)]
unsafe fn hsum(v: __m256d) -> f64 {
    let h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)))
}

/// `(Σ (v − k), Σ (v − k)²)` over a plane, in f64.
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_moments(p: &[f32], k: f64) -> (f64, f64) {
    let kv = _mm256_set1_pd(k);
    let (mut s, mut q) = ([_mm256_setzero_pd(); 2], [_mm256_setzero_pd(); 2]);
    let fill = _mm256_set1_ps(k as f32);
    for_vectors8!(p.len(), |i, m| {
        // Lanes past the end: v = k, so they add exactly zero.
        let v = load_or(fill, m, p.as_ptr().add(i));
        let (lo, hi) = widen(v);
        let (dl, dh) = (_mm256_sub_pd(lo, kv), _mm256_sub_pd(hi, kv));
        s[0] = _mm256_add_pd(s[0], dl);
        s[1] = _mm256_add_pd(s[1], dh);
        q[0] = _mm256_fmadd_pd(dl, dl, q[0]);
        q[1] = _mm256_fmadd_pd(dh, dh, q[1]);
    });
    (
        hsum(_mm256_add_pd(s[0], s[1])),
        hsum(_mm256_add_pd(q[0], q[1])),
    )
}

/// Per channel, the batch mean and biased variance of `x` (f64), as `bn.rs`'s.
///
/// # Safety
/// AVX2 and FMA.
pub(super) unsafe fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (n, c, h, w) = x.dims4();
    let hw = h * w;
    let data = x.data();
    // Relative to each channel's first value (exact in f64): see bn.rs.
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
        // Clamp a hair below 0 from rounding, but let NaN through (as bn.rs).
        let var = q / count - d * d;
        vars[ch] = if var < 0.0 { 0.0 } else { var };
    }
    (means, vars)
}

/// `out = scale·x + shift` (+ `res`) (then ReLU) over one plane.
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_plane<const RELU: bool, const RES: bool>(
    x: *const f32,
    res: *const f32,
    out: *mut f32,
    n: usize,
    a: f32,
    b: f32,
) {
    let (av, bv, zero) = (_mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_setzero_ps());
    for_vectors8!(n, |i, m| {
        let mut v = _mm256_fmadd_ps(av, load(m, x.add(i)), bv);
        if RES {
            v = _mm256_add_ps(v, load(m, res.add(i)));
        }
        if RELU {
            // `max(0, v)`: NaN and -0.0 pass, as `crate::scalar::relu` (see fast.rs).
            v = _mm256_max_ps(zero, v);
        }
        store(m, out.add(i), v);
    });
}

/// The per-channel affine map (+ `residual`) (+ ReLU) into a fresh tensor.
///
/// # Safety
/// AVX2 and FMA.
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

/// `dy` (first `m` lanes), masked by the ReLU as `MODE` says; `xv` holds `x` at those lanes.
#[inline(always)]
unsafe fn grad<const MODE: u8>(
    m: usize,
    dy: *const f32,
    xv: __m256,
    at: usize,
    pm: PlaneMask,
) -> __m256 {
    let g = load(m, dy);
    let live = match MODE {
        BY_OUTPUT => load(m, pm.out.add(at)),
        BY_AFFINE => _mm256_fmadd_ps(_mm256_set1_ps(pm.scale), xv, _mm256_set1_ps(pm.shift)),
        _ => return g,
    };
    // Kept unless `live <= 0` (not-less-or-equal, unordered: NaN keeps `dy`).
    _mm256_and_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(live, _mm256_setzero_ps()), g)
}

/// `(Σ g, Σ g·(x − mean))` over one plane, in f64.
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_grad_sums<const MODE: u8>(
    x: *const f32,
    dy: *const f32,
    pm: PlaneMask,
    n: usize,
    mean: f64,
) -> (f64, f64) {
    let mv = _mm256_set1_pd(mean);
    let (mut s, mut t) = ([_mm256_setzero_pd(); 2], [_mm256_setzero_pd(); 2]);
    for_vectors8!(n, |i, m| {
        let xv = load(m, x.add(i));
        let (gl, gh) = widen(grad::<MODE>(m, dy.add(i), xv, i, pm));
        let (xl, xh) = widen(xv);
        s[0] = _mm256_add_pd(s[0], gl);
        s[1] = _mm256_add_pd(s[1], gh);
        t[0] = _mm256_fmadd_pd(gl, _mm256_sub_pd(xl, mv), t[0]);
        t[1] = _mm256_fmadd_pd(gh, _mm256_sub_pd(xh, mv), t[1]);
    });
    (
        hsum(_mm256_add_pd(s[0], s[1])),
        hsum(_mm256_add_pd(t[0], t[1])),
    )
}

/// Per channel `(Σ g, Σ g·(x − mean))` with `g` = `dy` under the ReLU mask.
///
/// # Safety
/// AVX2 and FMA.
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
                    let (xp, gp, m) = (xi.as_ptr().add(at), gi.as_ptr().add(at), mean[ch] as f64);
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
#[target_feature(enable = "avx2,fma")]
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
    let (kv, av, bv) = (_mm256_set1_ps(k), _mm256_set1_ps(a), _mm256_set1_ps(b));
    for_vectors8!(n, |i, m| {
        let xv = load(m, x.add(i));
        let g = grad::<MODE>(m, dy.add(i), xv, i, pm);
        store(
            m,
            dx.add(i),
            _mm256_fmadd_ps(kv, g, _mm256_fmadd_ps(av, xv, bv)),
        );
    });
}

/// The input gradient into a fresh tensor.
///
/// # Safety
/// AVX2 and FMA.
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
