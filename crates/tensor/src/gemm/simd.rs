//! Vector helpers shared by the AVX-512 loops: whole vectors with plain loads and stores, the
//! ragged end masked. (Masked stores on every vector measured ~20% slower on memory-bound
//! copies here: the CPU cannot tell early whether a later load depends on them.)

use std::arch::x86_64::*;

/// Lanes of a 16-lane vector starting at element `p0` that are below `len`.
#[inline(always)]
pub(crate) fn lane_mask(p0: usize, len: usize) -> u16 {
    match len.saturating_sub(p0) {
        0 => 0,
        r if r >= 16 => u16::MAX,
        r => (1u16 << r) - 1,
    }
}

/// 16 floats at `p`, or the lanes of `m` (the others zero). With `m` all ones known at compile
/// time this is a plain load.
#[inline(always)]
pub(crate) unsafe fn load(m: u16, p: *const f32) -> __m512 {
    if m == u16::MAX {
        _mm512_loadu_ps(p)
    } else {
        _mm512_maskz_loadu_ps(m, p)
    }
}

/// As [`load`], with `fill` in the lanes outside `m`.
#[inline(always)]
pub(crate) unsafe fn load_or(fill: __m512, m: u16, p: *const f32) -> __m512 {
    if m == u16::MAX {
        _mm512_loadu_ps(p)
    } else {
        _mm512_mask_loadu_ps(fill, m, p)
    }
}

/// Stores the lanes of `m` of `v` at `p`.
#[inline(always)]
pub(crate) unsafe fn store(m: u16, p: *mut f32, v: __m512) {
    if m == u16::MAX {
        _mm512_storeu_ps(p, v)
    } else {
        _mm512_mask_storeu_ps(p, m, v)
    }
}

/// `acc + a·b` over 16 lanes of bf16 pairs (`vdpbf16ps`): each lane adds both exact products.
#[inline(always)]
pub(crate) unsafe fn dot_bf16(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
    _mm512_dpbf16_ps(
        acc,
        std::mem::transmute::<__m512i, __m512bh>(a),
        std::mem::transmute::<__m512i, __m512bh>(b),
    )
}

/// Runs `$body` once per 16-element vector of `0..$n`, with `$i` its first element and `$m` its
/// lane mask: all whole vectors first (`$m` the constant all-ones, so [`load`] and [`store`] are
/// plain), then the ragged end.
macro_rules! for_vectors {
    ($n:expr, |$i:ident, $m:ident| $body:block) => {{
        let n: usize = $n;
        let whole = n / 16 * 16;
        let mut $i = 0usize;
        while $i < whole {
            let $m: u16 = u16::MAX;
            $body
            $i += 16;
        }
        if whole < n {
            let $i = whole;
            let $m = $crate::gemm::simd::lane_mask(whole, n);
            $body
        }
    }};
}
pub(crate) use for_vectors;
