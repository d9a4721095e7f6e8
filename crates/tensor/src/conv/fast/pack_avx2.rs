//! Operand packing for the AVX2 kernels ([`crate::gemm::avx2_f32`]): the layouts of `plan.rs`
//! (padded image, narrow groups, im2col rows, channels-last copies), built with AVX2 only.
//! With `R = true` every value is rounded to bf16 as it is copied (exactly as
//! [`crate::bf16::round`]: ties to even, NaN kept quiet) and stays an f32: the bf16 passes on
//! CPUs without native bf16 arithmetic run the fp32 kernels on such operands, which computes
//! the twin's exact products for the cost of the copy the fp32 pass makes anyway.
//!
//! Borders, padding columns and rows past the pixels are never written: like `pack.rs`,
//! these rely on buffers that start zeroed and are reused for the same plan.

use super::plan::Plan;
use crate::conv::ConvShape;
use std::arch::x86_64::*;

/// 8 floats rounded to bf16 (the low 16 bits of each lane zero), NaN kept quiet.
#[inline(always)]
pub(crate) unsafe fn round8(v: __m256) -> __m256 {
    let u = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(1));
    let rounded = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
    let quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x0040_0000));
    let hi = _mm256_blendv_epi8(rounded, quiet, nan);
    _mm256_castsi256_ps(_mm256_and_si256(
        hi,
        _mm256_set1_epi32(0xffff_0000u32 as i32),
    ))
}

/// `v` itself, or rounded to bf16 with `R`.
#[inline(always)]
unsafe fn cvt<const R: bool>(v: __m256) -> __m256 {
    if R {
        round8(v)
    } else {
        v
    }
}

/// One value as [`cvt`] does it.
#[inline(always)]
fn cvt1<const R: bool>(v: f32) -> f32 {
    if R {
        crate::bf16::round(v)
    } else {
        v
    }
}

/// `n` floats from `src` to `dst` (rounded with `R`): whole vectors, then one at a time.
#[inline(always)]
unsafe fn copy_run<const R: bool>(src: *const f32, dst: *mut f32, n: usize) {
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        _mm256_storeu_ps(dst.add(i), cvt::<R>(_mm256_loadu_ps(src.add(i))));
        i += 8;
    }
    while i < n {
        *dst.add(i) = cvt1::<R>(*src.add(i));
        i += 1;
    }
}

/// `src` into `dst` (same length), rounded with `R`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn copy<const R: bool>(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    copy_run::<R>(src.as_ptr(), dst.as_mut_ptr(), src.len());
}

/// One image `[c][h][w]` into the interior of the plan's padded buffer `[c][hp][wp]` (as
/// `cpu::pack::pad_image`), rounded with `R`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pad_image<const R: bool>(plan: &Plan, img: &[f32], xp: &mut [f32]) {
    let g = &plan.g;
    assert!(img.len() >= g.c_in * g.h * g.w && xp.len() >= plan.padded_len());
    for ci in 0..g.c_in {
        for y in 0..g.h {
            let src = img.as_ptr().add((ci * g.h + y) * g.w);
            let dst = xp
                .as_mut_ptr()
                .add((ci * plan.hp + y + g.pad) * plan.wp + g.pad);
            copy_run::<R>(src, dst, g.w);
        }
    }
}

/// im2col from the padded image (as `cpu::pack::im2col`): `col[k][oy·wo + ox] =
/// xp[ci][oy·s + ky][ox·s + kx]`, rows of `plan.ld`; strides 1 and 2. No rounding: `xp` was
/// rounded (or not) as it was padded.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn im2col(plan: &Plan, xp: &[f32], col: &mut [f32]) {
    let g = &plan.g;
    assert!(g.stride <= 2 && xp.len() >= plan.padded_len() && col.len() >= g.col_rows() * plan.ld);
    // The shuffle below leaves `[a0 a2 b0 b2 | a4 a6 b4 b6]`; this puts them in order.
    let evens = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = col.as_mut_ptr().add(((ci * g.k + ky) * g.k + kx) * plan.ld);
                for oy in 0..g.oh {
                    let src = xp
                        .as_ptr()
                        .add((ci * plan.hp + oy * g.stride + ky) * plan.wp + kx);
                    let dst = row.add(oy * g.ow);
                    if g.stride == 1 {
                        copy_run::<false>(src, dst, g.ow);
                        continue;
                    }
                    // Pixels ox..ox+8 take the even elements of 2·ox .. 2·ox+16 (the last odd
                    // one is past the row's pixels but inside the buffer: its slack).
                    let mut ox = 0;
                    while ox + 8 <= g.ow {
                        let a = _mm256_loadu_ps(src.add(2 * ox));
                        let b = _mm256_loadu_ps(src.add(2 * ox + 8));
                        let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                        _mm256_storeu_ps(dst.add(ox), _mm256_permutevar8x32_ps(e, evens));
                        ox += 8;
                    }
                    while ox < g.ow {
                        *dst.add(ox) = *src.add(2 * ox);
                        ox += 1;
                    }
                }
            }
        }
    }
}

/// `count` images `[c][h][w]` into a narrow layout's buffer (as `cpu::pack::pad_narrow`),
/// rounded with `R`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pad_narrow<const R: bool>(
    plan: &Plan,
    imgs: &[f32],
    count: usize,
    out: &mut [f32],
) {
    let g = &plan.g;
    let plane = g.h * g.w;
    assert!(
        count <= plan.group
            && imgs.len() >= count * g.c_in * plane
            && out.len() >= plan.padded_len()
    );
    for img in 0..count {
        let base = plan.narrow_image_at(img).0;
        for ci in 0..g.c_in {
            let src = imgs.as_ptr().add((img * g.c_in + ci) * plane);
            let dst = out.as_mut_ptr().add(base + (ci * plan.hp + g.pad) * g.w);
            copy_run::<R>(src, dst, plane);
        }
    }
}

/// Transposes 8 rows of 8 floats in registers: `out[j][i] = rows[i][j]`.
#[inline(always)]
unsafe fn transpose8(r: &mut [__m256; 8]) {
    let mut t = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Per 128-bit half, u[4i + j] holds rows 4i..4i+4 of column (half·4 + j).
    let mut u = [_mm256_setzero_ps(); 8];
    let pd = _mm256_castps_pd;
    let ps = _mm256_castpd_ps;
    for i in 0..2 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        u[4 * i] = ps(_mm256_unpacklo_pd(pd(a), pd(c)));
        u[4 * i + 1] = ps(_mm256_unpackhi_pd(pd(a), pd(c)));
        u[4 * i + 2] = ps(_mm256_unpacklo_pd(pd(b), pd(d)));
        u[4 * i + 3] = ps(_mm256_unpackhi_pd(pd(b), pd(d)));
    }
    for j in 0..4 {
        r[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
        r[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
    }
}

/// One image `[c][h][w]` (`c` a multiple of 8) into the interior of a zero-bordered
/// channels-last buffer (as `cpu::pack::channels_last_padded`): `out[((y + pad)·wp + x +
/// pad)·c + ch] = img[ch][y][x]`, rounded with `R`.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn channels_last_padded<const R: bool>(
    img: &[f32],
    (c, h, w): (usize, usize, usize),
    (pad, wp): (usize, usize),
    out: &mut [f32],
) {
    assert!(c.is_multiple_of(8) && img.len() >= c * h * w);
    assert!(out.len() >= ((h + 2 * pad - 1) * wp + w + pad) * c);
    let mut r = [_mm256_setzero_ps(); 8];
    for y in 0..h {
        let whole = w / 8 * 8;
        for x0 in (0..whole).step_by(8) {
            for c0 in (0..c).step_by(8) {
                for (i, r) in r.iter_mut().enumerate() {
                    *r = cvt::<R>(_mm256_loadu_ps(
                        img.as_ptr().add(((c0 + i) * h + y) * w + x0),
                    ));
                }
                transpose8(&mut r);
                let dst = out.as_mut_ptr().add(((y + pad) * wp + x0 + pad) * c + c0);
                for (j, &v) in r.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(j * c), v);
                }
            }
        }
        for x in whole..w {
            let dst = out.as_mut_ptr().add(((y + pad) * wp + x + pad) * c);
            for ch in 0..c {
                *dst.add(ch) = cvt1::<R>(img[(ch * h + y) * w + x]);
            }
        }
    }
}

/// bf16 pairs of two vectors: lane i = `bf16(lo[i]) | bf16(hi[i]) << 16` (the layout
/// `vdpbf16ps` and `tdpbf16ps` read: the even element in the low half).
#[inline(always)]
unsafe fn pair8(lo: __m256, hi: __m256) -> __m256 {
    let lo = _mm256_srli_epi32::<16>(_mm256_castps_si256(round8(lo)));
    _mm256_castsi256_ps(_mm256_or_si256(lo, _mm256_castps_si256(round8(hi))))
}

/// One pair as [`pair8`] does it.
#[inline(always)]
fn pair1(lo: f32, hi: f32) -> u32 {
    (crate::bf16::round(lo).to_bits() >> 16) | (crate::bf16::round(hi).to_bits() & 0xffff_0000)
}

/// `out[i] = pair(lo[i], hi[i])` for `n` lanes (`hi` absent: zero).
#[inline(always)]
unsafe fn pair_run(lo: *const f32, hi: Option<*const f32>, out: *mut u32, n: usize) {
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        let h = hi.map_or(_mm256_setzero_ps(), |h| _mm256_loadu_ps(h.add(i)));
        _mm256_storeu_ps(out.add(i).cast(), pair8(_mm256_loadu_ps(lo.add(i)), h));
        i += 8;
    }
    while i < n {
        *out.add(i) = pair1(*lo.add(i), hi.map_or(0.0, |h| *h.add(i)));
        i += 1;
    }
}

/// One image as bf16 channel pairs in a zero-bordered padded buffer of 32-bit lanes (as
/// `cpu::pack::pad_image_pairs`): `out[(j·hp + y + pad)·wp + x + pad] = pair(img[2j][y][x],
/// img[2j+1][y][x])`, an odd last channel paired with zero.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pad_image_pairs(plan: &Plan, img: &[f32], out: &mut [u32]) {
    let g = &plan.g;
    let pairs = g.c_in.div_ceil(2);
    assert!(img.len() >= g.c_in * g.h * g.w && out.len() >= pairs * plan.hp * plan.wp);
    for j in 0..pairs {
        for y in 0..g.h {
            let lo = img.as_ptr().add((2 * j * g.h + y) * g.w);
            let hi = (2 * j + 1 < g.c_in).then(|| img.as_ptr().add(((2 * j + 1) * g.h + y) * g.w));
            let dst = out
                .as_mut_ptr()
                .add((j * plan.hp + y + g.pad) * plan.wp + g.pad);
            pair_run(lo, hi, dst, g.w);
        }
    }
}

/// bf16 pairs of rows (as `cpu::pack::bf16_row_pairs`): `out[j][p] = pair(rows[2j][p],
/// rows[2j+1][p])` for `rows` (`n_rows x ld`), an odd last row paired with zero.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn row_pairs(rows: &[f32], n_rows: usize, ld: usize, out: &mut [u32]) {
    assert!(rows.len() >= n_rows * ld && out.len() >= n_rows.div_ceil(2) * ld);
    for j in 0..n_rows.div_ceil(2) {
        let lo = rows.as_ptr().add(2 * j * ld);
        let hi = (2 * j + 1 < n_rows).then(|| rows.as_ptr().add((2 * j + 1) * ld));
        pair_run(lo, hi, out.as_mut_ptr().add(j * ld), ld);
    }
}

/// Two images' values paired lane by lane (as `cpu::pack::image_pairs`): `out[i] = pair(a[i],
/// b[i])`, `b` absent: zero.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn image_pairs(a: &[f32], b: Option<&[f32]>, out: &mut [u32]) {
    assert!(out.len() >= a.len() && b.is_none_or(|b| b.len() == a.len()));
    pair_run(a.as_ptr(), b.map(|b| b.as_ptr()), out.as_mut_ptr(), a.len());
}

/// Two images `[c][h][w]` (`c` a multiple of 8) paired lane by lane, channels-last in the
/// interior of a zero-bordered buffer (as `cpu::pack::channels_last_image_pairs`).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn channels_last_image_pairs(
    a: &[f32],
    b: Option<&[f32]>,
    (c, h, w): (usize, usize, usize),
    (pad, wp): (usize, usize),
    out: &mut [u32],
) {
    assert!(c.is_multiple_of(8) && a.len() >= c * h * w && b.is_none_or(|b| b.len() == a.len()));
    assert!(out.len() >= ((h + 2 * pad - 1) * wp + w + pad) * c);
    let (mut ra, mut rb) = ([_mm256_setzero_ps(); 8], [_mm256_setzero_ps(); 8]);
    for y in 0..h {
        let whole = w / 8 * 8;
        for x0 in (0..whole).step_by(8) {
            for c0 in (0..c).step_by(8) {
                let at = |i: usize| ((c0 + i) * h + y) * w + x0;
                for i in 0..8 {
                    ra[i] = _mm256_loadu_ps(a.as_ptr().add(at(i)));
                    rb[i] = match b {
                        Some(b) => _mm256_loadu_ps(b.as_ptr().add(at(i))),
                        None => _mm256_setzero_ps(),
                    };
                }
                transpose8(&mut ra);
                transpose8(&mut rb);
                let dst = out.as_mut_ptr().add(((y + pad) * wp + x0 + pad) * c + c0);
                for j in 0..8 {
                    _mm256_storeu_ps(dst.add(j * c).cast(), pair8(ra[j], rb[j]));
                }
            }
        }
        for x in whole..w {
            let dst = out.as_mut_ptr().add(((y + pad) * wp + x + pad) * c);
            for ch in 0..c {
                let at = (ch * h + y) * w + x;
                *dst.add(ch) = pair1(a[at], b.map_or(0.0, |b| b[at]));
            }
        }
    }
}

/// The first `n` lanes (`n <= 8`) as a mask vector.
#[inline(always)]
unsafe fn first(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The adjoint of im2col for stride 2 with 3x3 taps (pad 1) or 1x1 (pad 0), vectorised (as
/// `cpu::pack::col2im_stride2`, on 8-lane vectors): `img` (zeroed by the caller) `+=` every
/// column entry at the pixel it came from. Other geometries: `false`, nothing done. Each input
/// row takes, per 8 output columns, its even pixels from tap kx = 1 and its odd ones from
/// kx = 2 (this column) plus kx = 0 (the next), interleaved in registers.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn col2im_stride2(g: &ConvShape, col: &[f32], img: &mut [f32]) -> bool {
    if g.stride != 2 || !((g.k == 3 && g.pad == 1) || (g.k == 1 && g.pad == 0)) {
        return false;
    }
    let p = g.out_pixels();
    assert!(col.len() >= g.col_rows() * p && img.len() >= g.c_in * g.h * g.w);
    let load = |n: usize, at: *const f32| match n {
        8 => _mm256_loadu_ps(at),
        0 => _mm256_setzero_ps(),
        n => _mm256_maskload_ps(at, first(n)),
    };
    let row_of = |tap_row: usize, oy: usize| col.as_ptr().add(tap_row * p + oy * g.ow);
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for oy in 0..g.oh {
                let Some(iy) = g.input_row(oy, ky) else {
                    continue;
                };
                let dst = img.as_mut_ptr().add((ci * g.h + iy) * g.w);
                let taps = (ci * g.k + ky) * g.k;
                for ox in (0..g.ow).step_by(8) {
                    let n = (g.ow - ox).min(8);
                    let (even, odd) = if g.k == 3 {
                        // Pixel 2x gets kx = 1 of column x; 2x + 1 gets kx = 2 of x and kx = 0
                        // of x + 1.
                        let n0 = (g.ow - ox - 1).min(8);
                        let s0 = load(n0, row_of(taps, oy).add(ox + 1));
                        let s1 = load(n, row_of(taps + 1, oy).add(ox));
                        let s2 = load(n, row_of(taps + 2, oy).add(ox));
                        (s1, _mm256_add_ps(s2, s0))
                    } else {
                        (load(n, row_of(taps, oy).add(ox)), _mm256_setzero_ps())
                    };
                    // [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7], in order.
                    let (l, h) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
                    let lo = _mm256_permute2f128_ps::<0x20>(l, h);
                    let hi = _mm256_permute2f128_ps::<0x31>(l, h);
                    let x = 2 * ox;
                    for (at, v) in [(x, lo), (x + 8, hi)] {
                        let m = g.w.saturating_sub(at).min(8);
                        if m == 8 {
                            let d = dst.add(at);
                            _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), v));
                        } else if m > 0 {
                            let d = dst.add(at);
                            let sum = _mm256_add_ps(_mm256_maskload_ps(d, first(m)), v);
                            _mm256_maskstore_ps(d, first(m), sum);
                        }
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    //! Each packer against the layout's definition (and `bf16::round` for the rounding ones),
    //! on shapes with ragged vectors.
    use super::*;
    use crate::bf16::round;
    use crate::testutil::rng;
    use rand::Rng;

    fn avx2() -> bool {
        let ok = is_x86_feature_detected!("avx2");
        if !ok {
            eprintln!("skipped: this CPU has no AVX2 (a CPU-capability skip)");
        }
        ok
    }

    fn values(r: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.gen_range(-3.0f32..3.0)).collect()
    }

    #[test]
    fn round8_is_bf16_round_bit_for_bit() {
        if !avx2() {
            return;
        }
        let mut r = rng(31);
        let mut v: Vec<f32> = (0..4000).map(|_| f32::from_bits(r.gen())).collect();
        v.extend([
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::MAX,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            1e-40,
            -0.0,
        ]);
        v.resize(v.len().next_multiple_of(8), 0.5);
        let mut out = vec![0.0f32; v.len()];
        // SAFETY: AVX2 checked; equal lengths.
        unsafe { copy::<true>(&v, &mut out) };
        for (a, b) in v.iter().zip(&out) {
            assert_eq!(round(*a).to_bits(), b.to_bits(), "{a:e}");
        }
    }

    #[test]
    fn im2col_from_the_padded_image_is_the_reference_im2col() {
        if !avx2() {
            return;
        }
        let mut r = rng(32);
        for (xs, ws, s) in [
            ([1, 3, 7, 19], [2, 3, 3, 3], 2),
            ([1, 2, 16, 33], [2, 2, 3, 3], 2),
            ([1, 2, 5, 9], [2, 2, 3, 3], 1),
            ([1, 4, 8, 8], [2, 4, 1, 1], 2),
        ] {
            for rounded in [false, true] {
                let g = ConvShape::new(&xs, &ws, s);
                let plan = Plan::new(g, false);
                let img = values(&mut r, g.c_in * g.h * g.w);
                let mut xp = vec![0.0f32; plan.padded_len()];
                let mut col = vec![0.0f32; g.col_rows() * plan.ld];
                // SAFETY: AVX2 checked; buffers of the plan's sizes.
                unsafe {
                    if rounded {
                        pad_image::<true>(&plan, &img, &mut xp);
                    } else {
                        pad_image::<false>(&plan, &img, &mut xp);
                    }
                    im2col(&plan, &xp, &mut col);
                }
                let src: Vec<f32> = if rounded {
                    img.iter().map(|&v| round(v)).collect()
                } else {
                    img.clone()
                };
                let mut want = vec![0.0f32; g.col_rows() * g.out_pixels()];
                crate::conv::reference::im2col(&g, &src, &mut want);
                let p = g.out_pixels();
                for k in 0..g.col_rows() {
                    assert_eq!(
                        &col[k * plan.ld..][..p],
                        &want[k * p..][..p],
                        "{xs:?} k {k}"
                    );
                    assert!(col[k * plan.ld + p..][..plan.ld - p]
                        .iter()
                        .all(|&v| v == 0.0));
                }
            }
        }
    }

    #[test]
    fn channels_last_copy_transposes_and_pads() {
        if !avx2() {
            return;
        }
        let mut r = rng(33);
        let (c, h, w, pad) = (16, 3, 11, 1);
        let wp = w + 2 * pad;
        let img = values(&mut r, c * h * w);
        let mut out = vec![0.0f32; (h + 2 * pad) * wp * c];
        // SAFETY: AVX2 checked; out holds the padded image.
        unsafe { channels_last_padded::<true>(&img, (c, h, w), (pad, wp), &mut out) };
        for y in 0..h + 2 * pad {
            for x in 0..wp {
                for ch in 0..c {
                    let inside = (pad..h + pad).contains(&y) && (pad..w + pad).contains(&x);
                    let want = if inside {
                        round(img[(ch * h + y - pad) * w + x - pad])
                    } else {
                        0.0
                    };
                    assert_eq!(out[(y * wp + x) * c + ch], want, "({y}, {x}, {ch})");
                }
            }
        }
    }

    #[test]
    fn pairs_are_two_rounded_values_low_half_first() {
        if !avx2() {
            return;
        }
        let mut r = rng(34);
        let pair =
            |lo: f32, hi: f32| (round(lo).to_bits() >> 16) | (round(hi).to_bits() & 0xffff_0000);
        let (a, b) = (values(&mut r, 37), values(&mut r, 37));
        let mut out = vec![0u32; 37];
        // SAFETY: AVX2 checked; equal lengths.
        unsafe { image_pairs(&a, Some(&b), &mut out) };
        assert!((0..37).all(|i| out[i] == pair(a[i], b[i])));
        // SAFETY: as above.
        unsafe { image_pairs(&a, None, &mut out) };
        assert!((0..37).all(|i| out[i] == pair(a[i], 0.0)));
        // Rows: 5 rows of 16, the last paired with zero.
        let rows = values(&mut r, 5 * 16);
        let mut out = vec![0u32; 3 * 16];
        // SAFETY: as above.
        unsafe { row_pairs(&rows, 5, 16, &mut out) };
        for j in 0..3 {
            for p in 0..16 {
                let hi = if j < 2 {
                    rows[(2 * j + 1) * 16 + p]
                } else {
                    0.0
                };
                assert_eq!(out[j * 16 + p], pair(rows[2 * j * 16 + p], hi));
            }
        }
        // A padded image of channel pairs, 3 channels (the last paired with zero).
        let g = ConvShape::new(&[1, 3, 4, 11], &[2, 3, 3, 3], 1);
        let plan = Plan::new(g, true);
        let img = values(&mut r, 3 * 4 * 11);
        let mut out = vec![0u32; plan.pairs_len()];
        // SAFETY: as above; the buffer is the plan's.
        unsafe { pad_image_pairs(&plan, &img, &mut out) };
        for j in 0..2 {
            for y in 0..plan.hp {
                for x in 0..plan.wp {
                    let inside = (1..5).contains(&y) && (1..12).contains(&x);
                    let want = if inside {
                        let at = |c: usize| img[(c * 4 + y - 1) * 11 + x - 1];
                        pair(at(2 * j), if j == 0 { at(1) } else { 0.0 })
                    } else {
                        0
                    };
                    assert_eq!(
                        out[(j * plan.hp + y) * plan.wp + x],
                        want,
                        "({j}, {y}, {x})"
                    );
                }
            }
        }
        // Channels-last pairs of two images, 16 channels, a ragged row of 11.
        let (c, h, w, pad) = (16, 2, 11, 1);
        let wp = w + 2;
        let (a, b) = (values(&mut r, c * h * w), values(&mut r, c * h * w));
        let mut out = vec![0u32; (h + 2) * wp * c];
        // SAFETY: as above.
        unsafe { channels_last_image_pairs(&a, Some(&b), (c, h, w), (pad, wp), &mut out) };
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let at = (ch * h + y) * w + x;
                    assert_eq!(out[((y + 1) * wp + x + 1) * c + ch], pair(a[at], b[at]));
                }
            }
        }
    }

    #[test]
    fn col2im_stride2_is_the_reference_col2im() {
        if !avx2() {
            return;
        }
        let mut r = rng(35);
        // Odd and even widths, rows off the vector multiple, both tap sizes.
        for (xs, ws) in [
            ([1, 2, 7, 7], [1, 2, 3, 3]),
            ([1, 3, 16, 34], [1, 3, 3, 3]),
            ([1, 2, 9, 19], [1, 2, 1, 1]),
            ([1, 1, 32, 32], [1, 1, 3, 3]),
        ] {
            let g = ConvShape::new(&xs, &ws, 2);
            let col = values(&mut r, g.col_rows() * g.out_pixels());
            let mut want = vec![0.0f32; g.c_in * g.h * g.w];
            crate::conv::reference::col2im(&g, &col, &mut want);
            let mut got = vec![0.0f32; want.len()];
            // SAFETY: AVX2 checked; buffers of the geometry's sizes.
            assert!(unsafe { col2im_stride2(&g, &col, &mut got) });
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{xs:?}: {a} vs {b}"
                );
            }
        }
        let g = ConvShape::new(&[1, 1, 8, 8], &[1, 1, 3, 3], 1);
        // SAFETY: stride 1 is refused before any access.
        assert!(!unsafe { col2im_stride2(&g, &[], &mut []) });
    }
}
