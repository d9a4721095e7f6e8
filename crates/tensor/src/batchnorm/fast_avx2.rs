//! The fused batch norm's per-plane kernels on AVX2 + FMA (CPUs without AVX-512): the same
//! arithmetic per element as `fast_avx512.rs` (one-pass f64 sums per plane shifted by the
//! channel's first value, the affine map as one FMA, `max(0, v)` for the ReLU, its mask
//! recomputed by the same FMA in the backward) on vectors of 8 floats (4 doubles) instead of
//! 16. Sums within a plane run in another (fixed) order than the AVX-512 ones, so the two
//! differ in the last bits; each is deterministic. [`super::planes`] runs them over whole
//! tensors.

use super::planes::{PlaneKernels, PlaneMask, BY_AFFINE, BY_OUTPUT};
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

/// The AVX2 + FMA body of [`super::planes`].
pub(crate) struct Avx2;

impl PlaneKernels for Avx2 {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn moments(p: &[f32], k: f64) -> (f64, f64) {
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn affine<const RELU: bool, const RES: bool>(
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
                // `max(0, v)`: NaN and -0.0 pass, as `crate::scalar::relu` (see fast_avx512.rs).
                v = _mm256_max_ps(zero, v);
            }
            store(m, out.add(i), v);
        });
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_sums<const MODE: u8>(
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

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward<const MODE: u8>(
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
}
