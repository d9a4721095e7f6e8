//! Operand packing for the micro-kernels: im2col into rows padded to the kernels' vector
//! multiple (zeros past the last pixel), and the bf16 forms `vdpbf16ps` consumes (pairs of
//! values along the summed dimension in one 32-bit lane, each rounded exactly as
//! [`crate::bf16::round`] does).

use super::plan::Plan;
use crate::conv::ConvShape;
use crate::gemm::simd::{for_vectors, lane_mask, load, store};
use std::arch::x86_64::*;

/// `n` floats from `src` to `dst`, in vectors (masked at the end).
#[inline(always)]
unsafe fn copy_run(src: *const f32, dst: *mut f32, n: usize) {
    // Rows of a ResNet map are 32, 16, 8 or 4 floats: straight-line copies for whole vectors
    // (as a loop LLVM turns them into a call to memmove per row, which costs more than the
    // copy here).
    match n {
        16 => _mm512_storeu_ps(dst, _mm512_loadu_ps(src)),
        32 => {
            _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
            _mm512_storeu_ps(dst.add(16), _mm512_loadu_ps(src.add(16)));
        }
        _ => for_vectors!(n, |i, m| { store(m, dst.add(i), load(m, src.add(i))) }),
    }
}

/// Copies one image `[c][h][w]` into the interior of the plan's padded buffer `[c][hp][wp]`.
/// The border is not written: it must be zero already (a fresh zeroed buffer, reused for
/// images of the same plan).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pad_image(plan: &Plan, img: &[f32], xp: &mut [f32]) {
    let g = &plan.g;
    assert!(img.len() >= g.c_in * g.h * g.w && xp.len() >= plan.padded_len());
    for ci in 0..g.c_in {
        for y in 0..g.h {
            let src = img.as_ptr().add((ci * g.h + y) * g.w);
            let dst = xp
                .as_mut_ptr()
                .add((ci * plan.hp + y + g.pad) * plan.wp + g.pad);
            copy_run(src, dst, g.w);
        }
    }
}

/// im2col from the padded image: `col[k][oy·wo + ox] = xp[ci][oy·s + ky][ox·s + kx]`, rows of
/// `plan.ld`. Columns past the pixels are not written (zero from allocation, as for
/// [`pad_image`]). Strides 1 and 2.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn im2col(plan: &Plan, xp: &[f32], col: &mut [f32]) {
    let g = &plan.g;
    assert!(g.stride <= 2 && xp.len() >= plan.padded_len() && col.len() >= g.col_rows() * plan.ld);
    // Even elements of two vectors: pixels ox..ox+16 of a stride-2 row.
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
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
                        copy_run(src, dst, g.ow);
                        continue;
                    }
                    for ox in (0..g.ow).step_by(16) {
                        // Elements 2·ox .. 2·(last pixel) of the row.
                        let span = 2 * (g.ow - ox).min(16) - 1;
                        let a = _mm512_maskz_loadu_ps(lane_mask(0, span), src.add(2 * ox));
                        let b = _mm512_maskz_loadu_ps(lane_mask(16, span), src.add(2 * ox + 16));
                        let v = _mm512_permutex2var_ps(a, evens, b);
                        _mm512_mask_storeu_ps(dst.add(ox), lane_mask(ox, g.ow), v);
                    }
                }
            }
        }
    }
}

/// Copies `rows` rows of `len` values (`src` rows `len` apart) into `dst` rows `ld` apart,
/// zero past `len`: a matrix the kernels may read in whole vectors.
pub(crate) fn pad_rows(src: &[f32], rows: usize, len: usize, dst: &mut [f32], ld: usize) {
    for (d, s) in dst
        .chunks_exact_mut(ld)
        .zip(src.chunks_exact(len))
        .take(rows)
    {
        d[..len].copy_from_slice(s);
        d[len..].fill(0.0);
    }
}

/// 16 floats rounded to bf16 (ties to even, NaN kept quiet: [`crate::bf16::round`]), each as
/// the top 16 bits of a 32-bit lane (low bits zero).
#[inline(always)]
pub(crate) unsafe fn round_bf16(v: __m512) -> __m512i {
    let u = _mm512_castps_si512(v);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(u), _mm512_set1_epi32(1));
    let rounded = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    let abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
    let quiet = _mm512_or_si512(u, _mm512_set1_epi32(0x0040_0000));
    let hi = _mm512_mask_blend_epi32(nan, rounded, quiet);
    _mm512_and_si512(hi, _mm512_set1_epi32(0xffff_0000u32 as i32))
}

/// bf16 pairs along rows: `out[j][p] = bf16(rows[2j][p]) | bf16(rows[2j+1][p]) << 16` for
/// `rows` (`n_rows x ld`, `ld` a multiple of 16); an odd last row is paired with zero. `out` is
/// `ceil(n_rows/2) x ld` 32-bit lanes: the B operand of the bf16 NN kernel.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn bf16_row_pairs(rows: &[f32], n_rows: usize, ld: usize, out: &mut [u32]) {
    assert!(
        ld.is_multiple_of(16) && rows.len() >= n_rows * ld && out.len() >= n_rows.div_ceil(2) * ld
    );
    for j in 0..n_rows.div_ceil(2) {
        let lo_row = rows.as_ptr().add(2 * j * ld);
        let hi_row = (2 * j + 1 < n_rows).then(|| rows.as_ptr().add((2 * j + 1) * ld));
        let dst = out.as_mut_ptr().add(j * ld);
        for p in (0..ld).step_by(16) {
            let lo = _mm512_srli_epi32::<16>(round_bf16(_mm512_loadu_ps(lo_row.add(p))));
            let hi = match hi_row {
                Some(r) => round_bf16(_mm512_loadu_ps(r.add(p))),
                None => _mm512_setzero_si512(),
            };
            _mm512_storeu_si512(dst.add(p).cast(), _mm512_or_si512(lo, hi));
        }
    }
}

/// bf16 pairs along each row: `out[r][i] = bf16(rows[r][2i]) | bf16(rows[r][2i+1]) << 16` for
/// `n_rows` rows of `ld` floats (`ld` a multiple of 32): the operands of the bf16 NT kernel,
/// which sums over the pixels of a row. `out` rows are `ld / 2` lanes.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn bf16_along_rows(rows: &[f32], n_rows: usize, ld: usize, out: &mut [u32]) {
    assert!(ld.is_multiple_of(32) && rows.len() >= n_rows * ld && out.len() >= n_rows * ld / 2);
    // Lane i of the result takes the rounded high halves of elements 2i and 2i+1.
    let idx = _mm512_set_epi16(
        63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27, 25, 23, 21, 19,
        17, 15, 13, 11, 9, 7, 5, 3, 1,
    );
    for r in 0..n_rows {
        let src = rows.as_ptr().add(r * ld);
        let dst = out.as_mut_ptr().add(r * ld / 2);
        for p in (0..ld).step_by(32) {
            let a = round_bf16(_mm512_loadu_ps(src.add(p)));
            let b = round_bf16(_mm512_loadu_ps(src.add(p + 16)));
            // 16-bit element 2i+1 of `a` is the high half of float i: pick the odd halves of
            // both, in order.
            let packed = _mm512_permutex2var_epi16(a, idx, b);
            _mm512_storeu_si512(dst.add(p / 2).cast(), packed);
        }
    }
}

/// Transposes 16 rows of 16 floats in registers: `out[j][i] = rows[i][j]`.
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Per 128-bit lane L, u[4i + j] holds rows 4i..4i+4 of column 4L + j.
    let mut u = [_mm512_setzero_ps(); 16];
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        u[4 * i] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Gather lane L of the four row groups into column 4L + j.
    for j in 0..4 {
        let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        let ab_lo = _mm512_shuffle_f32x4::<0x44>(a, b);
        let ab_hi = _mm512_shuffle_f32x4::<0xee>(a, b);
        let cd_lo = _mm512_shuffle_f32x4::<0x44>(c, d);
        let cd_hi = _mm512_shuffle_f32x4::<0xee>(c, d);
        r[j] = _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo);
        r[4 + j] = _mm512_shuffle_f32x4::<0xdd>(ab_lo, cd_lo);
        r[8 + j] = _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi);
        r[12 + j] = _mm512_shuffle_f32x4::<0xdd>(ab_hi, cd_hi);
    }
}

/// One image `[c][h][w]` (`c` a multiple of 16) into the interior of a zero-bordered
/// channels-last buffer: `out[((y + pad)·wp + x + pad)·c + ch] = img[ch][y][x]`. The border is
/// not written (zero already, as for [`pad_image`]).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn channels_last_padded(
    img: &[f32],
    (c, h, w): (usize, usize, usize),
    (pad, wp): (usize, usize),
    out: &mut [f32],
) {
    assert!(c.is_multiple_of(16) && img.len() >= c * h * w);
    assert!(out.len() >= ((h + 2 * pad - 1) * wp + w + pad) * c);
    let mut r = [_mm512_setzero_ps(); 16];
    for y in 0..h {
        for x0 in (0..w).step_by(16) {
            let (n, m) = ((w - x0).min(16), lane_mask(x0, w));
            for c0 in (0..c).step_by(16) {
                for (i, r) in r.iter_mut().enumerate() {
                    *r = load(m, img.as_ptr().add(((c0 + i) * h + y) * w + x0));
                }
                transpose16(&mut r);
                let dst = out.as_mut_ptr().add(((y + pad) * wp + x0 + pad) * c + c0);
                for (j, &v) in r.iter().enumerate() {
                    if j < n {
                        _mm512_storeu_ps(dst.add(j * c), v);
                    }
                }
            }
        }
    }
}

/// bf16 pairs of two vectors: lane i = `bf16(lo[i]) | bf16(hi[i]) << 16`.
#[inline(always)]
unsafe fn pair_bf16(lo: __m512, hi: __m512) -> __m512i {
    _mm512_or_si512(_mm512_srli_epi32::<16>(round_bf16(lo)), round_bf16(hi))
}

/// One image `[c][h][w]` as bf16 channel pairs in the interior of a zero-bordered padded
/// buffer `[ceil(c/2)][hp][wp]` of 32-bit lanes: `out[(j·hp + y + pad)·wp + x + pad] =
/// bf16(img[2j][y][x]) | bf16(img[2j+1][y][x]) << 16` (an odd last channel pairs with zero).
/// The B operand of the direct bf16 convolution, which pairs k along input channels.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pad_image_pairs(plan: &Plan, img: &[f32], out: &mut [u32]) {
    let g = &plan.g;
    let pairs = g.c_in.div_ceil(2);
    assert!(img.len() >= g.c_in * g.h * g.w && out.len() >= pairs * plan.hp * plan.wp);
    let zero = _mm512_setzero_ps();
    for j in 0..pairs {
        for y in 0..g.h {
            let lo = img.as_ptr().add((2 * j * g.h + y) * g.w);
            let hi = (2 * j + 1 < g.c_in).then(|| img.as_ptr().add(((2 * j + 1) * g.h + y) * g.w));
            let dst = out
                .as_mut_ptr()
                .add((j * plan.hp + y + g.pad) * plan.wp + g.pad);
            for_vectors!(g.w, |i, m| {
                let h = match hi {
                    Some(p) => load(m, p.add(i)),
                    None => zero,
                };
                let v = pair_bf16(load(m, lo.add(i)), h);
                store(m, dst.add(i).cast(), _mm512_castsi512_ps(v));
            });
        }
    }
}

/// Two images' values paired lane by lane: `out[i] = bf16(a[i]) | bf16(b[i]) << 16` (`b`
/// absent: zero). The weight gradient's bf16 operands pair the same position of two images.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn image_pairs(a: &[f32], b: Option<&[f32]>, out: &mut [u32]) {
    let n = a.len();
    assert!(out.len() >= n && b.is_none_or(|b| b.len() == n));
    let zero = _mm512_setzero_ps();
    for_vectors!(n, |i, m| {
        let h = match b {
            Some(b) => load(m, b.as_ptr().add(i)),
            None => zero,
        };
        let v = pair_bf16(load(m, a.as_ptr().add(i)), h);
        store(m, out.as_mut_ptr().add(i).cast(), _mm512_castsi512_ps(v));
    });
}

/// Two images `[c][h][w]` (`c` a multiple of 16) paired as in [`image_pairs`], channels-last
/// in the interior of a zero-bordered buffer (as [`channels_last_padded`]): lane
/// `((y + pad)·wp + x + pad)·c + ch` pairs `a[ch][y][x]` with `b[ch][y][x]`.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn channels_last_image_pairs(
    a: &[f32],
    b: Option<&[f32]>,
    (c, h, w): (usize, usize, usize),
    (pad, wp): (usize, usize),
    out: &mut [u32],
) {
    assert!(c.is_multiple_of(16) && a.len() >= c * h * w && b.is_none_or(|b| b.len() == a.len()));
    assert!(out.len() >= ((h + 2 * pad - 1) * wp + w + pad) * c);
    let (mut ra, mut rb) = ([_mm512_setzero_ps(); 16], [_mm512_setzero_ps(); 16]);
    for y in 0..h {
        for x0 in (0..w).step_by(16) {
            let (n, m) = ((w - x0).min(16), lane_mask(x0, w));
            for c0 in (0..c).step_by(16) {
                let at = |i: usize| ((c0 + i) * h + y) * w + x0;
                for i in 0..16 {
                    ra[i] = load(m, a.as_ptr().add(at(i)));
                    rb[i] = match b {
                        Some(b) => load(m, b.as_ptr().add(at(i))),
                        None => _mm512_setzero_ps(),
                    };
                }
                transpose16(&mut ra);
                transpose16(&mut rb);
                let dst = out.as_mut_ptr().add(((y + pad) * wp + x0 + pad) * c + c0);
                for j in 0..16 {
                    if j < n {
                        let v = pair_bf16(ra[j], rb[j]);
                        _mm512_storeu_si512(dst.add(j * c).cast(), v);
                    }
                }
            }
        }
    }
}

/// `count` images `[c][h][w]` into a narrow layout's buffer ([`Plan`]): each channel plane
/// below its top padding rows, one contiguous copy (the padding rows and guards are not
/// written: zero already, as for [`pad_image`]).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pad_narrow(plan: &Plan, imgs: &[f32], count: usize, out: &mut [f32]) {
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
            for_vectors!(plane, |i, m| { store(m, dst.add(i), load(m, src.add(i))) });
        }
    }
}

/// [`pad_narrow`] with input channels paired in bf16 lanes (as [`pad_image_pairs`]).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pad_narrow_pairs(plan: &Plan, imgs: &[f32], count: usize, out: &mut [u32]) {
    let g = &plan.g;
    let plane = g.h * g.w;
    assert!(
        count <= plan.group
            && imgs.len() >= count * g.c_in * plane
            && out.len() >= plan.pairs_len()
    );
    for img in 0..count {
        let base = plan.narrow_image_at(img).1;
        let channel = |c: usize| &imgs[(img * g.c_in + c) * plane..][..plane];
        for j in 0..g.c_in.div_ceil(2) {
            let hi = (2 * j + 1 < g.c_in).then(|| channel(2 * j + 1));
            let at = base + (j * plan.hp + g.pad) * g.w;
            image_pairs(channel(2 * j), hi, &mut out[at..at + plane]);
        }
    }
}

/// The adjoint of im2col for stride 2 with 3x3 taps (pad 1) or 1x1 (pad 0), vectorised: `img`
/// (zeroed by the caller) `+=` every column entry at the pixel it came from, as
/// `conv::reference::col2im` does (in another order). Other geometries: `false`, nothing done.
/// Each input row gathers, per 16 output columns, its even pixels from tap kx = 1 and its odd
/// ones from kx = 2 (this column) plus kx = 0 (the next), interleaved in registers.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn col2im_stride2(g: &ConvShape, col: &[f32], img: &mut [f32]) -> bool {
    if g.stride != 2 || !((g.k == 3 && g.pad == 1) || (g.k == 1 && g.pad == 0)) {
        return false;
    }
    let p = g.out_pixels();
    assert!(col.len() >= g.col_rows() * p && img.len() >= g.c_in * g.h * g.w);
    // Lane i of the pair (lo, hi) of outputs: even[i / 2] for even i, odd[i / 2] for odd i.
    let lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    let hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    let zero = _mm512_setzero_ps();
    let row_of = |tap_row: usize, oy: usize| col.as_ptr().add(tap_row * p + oy * g.ow);
    for ci in 0..g.c_in {
        for ky in 0..g.k {
            for oy in 0..g.oh {
                let Some(iy) = g.input_row(oy, ky) else {
                    continue;
                };
                let dst = img.as_mut_ptr().add((ci * g.h + iy) * g.w);
                let taps = (ci * g.k + ky) * g.k;
                for ox in (0..g.ow).step_by(16) {
                    let m = lane_mask(ox, g.ow);
                    let (even, odd) = if g.k == 3 {
                        // Pixel 2x gets kx = 1 of column x; 2x + 1 gets kx = 2 of x and kx = 0
                        // of x + 1.
                        let s0 = load(lane_mask(ox + 1, g.ow), row_of(taps, oy).add(ox + 1));
                        let s1 = load(m, row_of(taps + 1, oy).add(ox));
                        let s2 = load(m, row_of(taps + 2, oy).add(ox));
                        (s1, _mm512_add_ps(s2, s0))
                    } else {
                        (load(m, row_of(taps, oy).add(ox)), zero)
                    };
                    let x = 2 * ox;
                    let lo = _mm512_permutex2var_ps(even, lo_idx, odd);
                    let hi = _mm512_permutex2var_ps(even, hi_idx, odd);
                    let (ml, mh) = (lane_mask(x, g.w), lane_mask(x + 16, g.w));
                    store(ml, dst.add(x), _mm512_add_ps(load(ml, dst.add(x)), lo));
                    if mh != 0 {
                        store(
                            mh,
                            dst.add(x + 16),
                            _mm512_add_ps(load(mh, dst.add(x + 16)), hi),
                        );
                    }
                }
                // Column -1 (the left padding) of kx = 0: nothing to add; pixel 2·wo, if the
                // image has it, only ever gets kx = 0 of column wo, which does not exist.
            }
        }
    }
    true
}
