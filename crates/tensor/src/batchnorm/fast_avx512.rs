//! The fused batch norm's per-plane kernels on AVX-512F: 16 floats (two vectors of 8 doubles
//! for the f64 sums) a step, the ragged end masked. [`super::planes`] runs them over whole
//! tensors.

use super::planes::{PlaneKernels, PlaneMask, BY_AFFINE, BY_OUTPUT};
use crate::gemm::simd::{for_vectors, load, load_or, store};
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

/// The AVX-512 body of [`super::planes`].
pub(crate) struct Avx512;

impl PlaneKernels for Avx512 {
    #[target_feature(enable = "avx512f")]
    unsafe fn moments(p: &[f32], k: f64) -> (f64, f64) {
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

    #[target_feature(enable = "avx512f")]
    unsafe fn affine<const RELU: bool, const RES: bool>(
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

    #[target_feature(enable = "avx512f")]
    unsafe fn grad_sums<const MODE: u8>(
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

    #[target_feature(enable = "avx512f")]
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
}
