//! fp32 GEMM micro-kernels for AVX2 + FMA CPUs (16 ymm registers of 8 floats): the three
//! products of the convolutions on the operands and walks of `cpu::plan` (whose pixel vectors
//! are 16 wide: here each is two halves of 8). Same contracts as the AVX-512 kernels of
//! `gemm::fp32` and `conv::fast::wgrad`, so a pass swaps one for the other:
//! - [`nn`]: `C[m][p] = Σ_k A[m][k]·B[k][p]` in tiles of 6 rows x 16 pixels (12 accumulators);
//!   A packed ([`PackedA`]), B read through the tap-offset table (a lane mask per k for the
//!   narrow layout, applied as an AND: the masked lanes are inside the buffer by the plan's
//!   guards).
//! - [`nt`]: `C[m][k] += Σ_p A[m][p]·B[k][p]` in 3 x 4 tiles of 8-lane accumulators over a group
//!   of images, then a fixed lane-sum tree per element.
//! - [`wgrad`]: the channels-last weight gradient, 6 output channels x 2 vectors of 8 input
//!   channels per tile, the whole sum in registers.
//!
//! Every element is one chain of FMAs in an order fixed by the shapes (never by the thread
//! count). The bf16 passes on these CPUs run these same kernels on operands rounded to bf16
//! as they are packed (`conv::fast::pack_avx2`): products of bf16 values are exact in f32, so that
//! is the twin's arithmetic exactly, up to the order of the sums.

// The kernels index their accumulator tiles by (row, vector): clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

use crate::gemm::fp32::{PackedA, PixelGrid, PixelVec, Tile, Walk, NN_MR};
use std::arch::x86_64::*;

/// Lane masks of 8 floats, one per byte of a 16-lane mask: entry `b` has all bits set in lane
/// `i` where bit `i` of `b` is.
static LANES: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if b & (1 << i) != 0 {
                t[b][i] = u32::MAX;
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// The 8-lane mask vector of byte `b` of a 16-lane mask.
#[inline(always)]
unsafe fn lanes(b: u16) -> __m256i {
    _mm256_loadu_si256(LANES[(b & 0xff) as usize].as_ptr().cast())
}

/// 8 floats at `p`, the lanes outside `m` (a byte of a lane mask) read as zero without being
/// touched.
#[inline(always)]
unsafe fn load_masked(m: u16, p: *const f32) -> __m256 {
    _mm256_maskload_ps(p, lanes(m))
}

/// 8 floats at `p`: all of them (`FULL`), or the lanes of `m` as [`load_masked`].
// (No closures around SIMD values: a closure does not get the target feature.)
#[inline(always)]
unsafe fn load<const FULL: bool>(m: u16, p: *const f32) -> __m256 {
    if FULL {
        _mm256_loadu_ps(p)
    } else {
        load_masked(m, p)
    }
}

/// Stores the lanes of `m` (a byte of a lane mask) of `v` at `p`.
#[inline(always)]
unsafe fn store_masked(m: u16, p: *mut f32, v: __m256) {
    match m & 0xff {
        0xff => _mm256_storeu_ps(p, v),
        0 => {}
        _ => _mm256_maskstore_ps(p, lanes(m), v),
    }
}

/// One NN tile: `MR` rows x 16 pixels of C from `k` steps.
// Its own function, so the register allocator sees one tile's loop alone.
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_tile<const MR: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    offs: *const usize,
    masks: *const u16,
    src: *const f32,
    (at, dst, mask): (usize, usize, u16),
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let mut a = a;
    for kk in 0..k {
        let b = src.add(*offs.add(kk) + at);
        let (mut b0, mut b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
        if MASKED {
            // The plan keeps masked-off lanes inside the buffer: a plain load, then zeroed.
            let m = *masks.add(kk);
            b0 = _mm256_and_ps(b0, _mm256_castsi256_ps(lanes(m)));
            b1 = _mm256_and_ps(b1, _mm256_castsi256_ps(lanes(m >> 8)));
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
        a = a.add(MR);
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.add(r * ldc + dst);
        store_masked(mask, row, acc[0]);
        store_masked(mask >> 8, row.add(8), acc[1]);
    }
}

/// `C[m][p] = Σ_k A[m][k]·src[offs[k] + p's offset]` for every pixel vector of `tiles` (each
/// computed alone, 16 pixels at a time); with `masks` (one per k) only those lanes of B count,
/// the others taken as zero. `C` rows are `ldc` apart. [`crate::gemm::fp32::nn`]'s contract.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `src` must be readable 16 floats past every `offs[k] +
/// tile.src[v]` (checked), and `C` writable at every `m·ldc + tile.dst[v]` lane of the masks.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nn<const NV: usize>(
    a: &PackedA,
    (offs, masks): (&[usize], &[u16]),
    src: &[f32],
    tiles: &[Tile<NV>],
    c: *mut f32,
    ldc: usize,
) {
    let (m, k) = (a.m, a.k);
    assert!(offs.len() == k && (masks.is_empty() || masks.len() == k));
    let reach = offs.iter().max().copied().unwrap_or(0)
        + tiles.iter().flat_map(|t| t.src).max().unwrap_or(0)
        + 16;
    assert!(k == 0 || reach <= src.len(), "nn: B reads past its buffer");
    for tile in tiles {
        for v in 0..NV {
            if tile.mask[v] == 0 {
                continue;
            }
            let vec = (tile.src[v], tile.dst[v], tile.mask[v]);
            for t in (0..m).step_by(NN_MR) {
                let ap = a.data().as_ptr().add(t * k);
                let (o, mk, s, cp) = (offs.as_ptr(), masks.as_ptr(), src.as_ptr(), c.add(t * ldc));
                macro_rules! rows {
                    ($masked:literal) => {
                        match m - t {
                            1 => nn_tile::<1, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                            2 => nn_tile::<2, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                            3 => nn_tile::<3, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                            4 => nn_tile::<4, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                            5 => nn_tile::<5, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                            _ => nn_tile::<NN_MR, $masked>(k, ap, o, mk, s, vec, cp, ldc),
                        }
                    };
                }
                if masks.is_empty() {
                    rows!(false)
                } else {
                    rows!(true)
                }
            }
        }
    }
}

/// The sum of a vector's 8 lanes, in a fixed order (halves, then quarters, then pairs).
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let e = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(e, _mm_movehdup_ps(e)))
}

/// Rows (m) and columns (k) of C per NT tile: 12 accumulators, 3 A vectors, 1 B vector.
const NT_MR: usize = 3;
const NT_KR: usize = 4;

/// One image's share of an NT tile. `FULL`: every vector of `walk` has all 16 lanes (plain
/// loads); else both operands' loads are masked.
#[inline(always)]
unsafe fn nt_image<const MR: usize, const KR: usize, const FULL: bool>(
    mut acc: [[__m256; KR]; MR],
    a: *const f32,
    lda: usize,
    src: *const f32,
    offs: &[usize; KR],
    walk: &[PixelVec],
) -> [[__m256; KR]; MR] {
    for pv in walk {
        for half in 0..2 {
            let (at, bits) = (pv.a + 8 * half, pv.mask >> (8 * half));
            let mut av = [_mm256_setzero_ps(); MR];
            for (r, av) in av.iter_mut().enumerate() {
                *av = load::<FULL>(bits, a.add(r * lda + at));
            }
            let b = src.add(pv.src + 8 * half);
            for j in 0..KR {
                let bv = load::<FULL>(bits, b.add(offs[j]));
                for r in 0..MR {
                    acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
                }
            }
        }
    }
    acc
}

#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn nt_tile<const MR: usize, const KR: usize>(
    images: &[(*const f32, *const f32)],
    lda: usize,
    offs: &[usize],
    walk: &Walk,
    c: *mut f32,
    ldc: usize,
) {
    let offs: [usize; KR] = std::array::from_fn(|j| offs[j]);
    let mut acc = [[_mm256_setzero_ps(); KR]; MR];
    for &(a, src) in images {
        acc = nt_image::<MR, KR, true>(acc, a, lda, src, &offs, &walk.full);
        acc = nt_image::<MR, KR, false>(acc, a, lda, src, &offs, &walk.partial);
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, &v) in acc.iter().enumerate() {
            *c.add(r * ldc + j) += hsum(v);
        }
    }
}

/// `C[m][k] += Σ_images Σ_pv A[m][pv]·src[offs[k] + pv]` over the pixel vectors of `walk`:
/// [`crate::gemm::fp32::nt`]'s contract. Lanes outside a vector's mask are read as zero
/// in both operands.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every unmasked lane read must be inside its image's buffers.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn nt(
    images: &[(*const f32, *const f32)],
    (mrows, lda): (usize, usize),
    offs: &[usize],
    walk: &Walk,
    c: &mut [f32],
) {
    let krows = offs.len();
    assert!(c.len() >= mrows * krows);
    let ldc = krows;
    let mut shifted: Vec<(*const f32, *const f32)> = Vec::with_capacity(images.len());
    for j in (0..krows).step_by(NT_KR) {
        let o = &offs[j..];
        for m in (0..mrows).step_by(NT_MR) {
            shifted.clear();
            shifted.extend(images.iter().map(|&(a, s)| (a.add(m * lda), s)));
            let cp = c.as_mut_ptr().add(m * ldc + j);
            let im = &shifted[..];
            macro_rules! tile {
                ($mr:literal) => {
                    match NT_KR.min(krows - j) {
                        1 => nt_tile::<$mr, 1>(im, lda, o, walk, cp, ldc),
                        2 => nt_tile::<$mr, 2>(im, lda, o, walk, cp, ldc),
                        3 => nt_tile::<$mr, 3>(im, lda, o, walk, cp, ldc),
                        _ => nt_tile::<$mr, NT_KR>(im, lda, o, walk, cp, ldc),
                    }
                };
            }
            match mrows - m {
                1 => tile!(1),
                2 => tile!(2),
                _ => tile!(3),
            }
        }
    }
}

/// Output channels and 8-channel vectors per weight-gradient tile.
const WG_MR: usize = 6;
const WG_NV: usize = 2;

#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn wgrad_tile<const R: usize, const V: usize>(
    images: &[(*const f32, *const f32)],
    grid: PixelGrid,
    ldy: usize,
    koffs: &[usize],
    c: *mut f32,
    ldc: usize,
) {
    let ko: [usize; V] = std::array::from_fn(|v| koffs[v]);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for &(dy, x) in images {
        for oy in 0..grid.ho {
            let (dy_row, x_row) = (dy.add(oy * grid.wo), x.add(oy * grid.row_step));
            for ox in 0..grid.wo {
                let (a, b) = (dy_row.add(ox), x_row.add(ox * grid.col_step));
                let mut xv = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    xv[v] = _mm256_loadu_ps(b.add(ko[v]));
                }
                for m in 0..R {
                    let av = _mm256_broadcast_ss(&*a.add(m * ldy));
                    for v in 0..V {
                        acc[m][v] = _mm256_fmadd_ps(av, xv[v], acc[m][v]);
                    }
                }
            }
        }
    }
    for m in 0..R {
        for v in 0..V {
            _mm256_storeu_ps(c.add(m * ldc + 8 * v), acc[m][v]);
        }
    }
}

/// `C[co][8·kv + lane] = Σ_images Σ_pixels dy[co][p] · x[p's offset + koffs[kv] + lane]` for
/// `co < mrows`, `kv < koffs.len()` (offsets of 8-channel vectors): `images` are `(dy, x)`
/// pairs (`dy` rows `ldy` apart, `x` channels-last, see `conv::fast::wgrad`), `C` is
/// `mrows x 8·koffs.len()`, overwritten.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every read the grid and offsets describe must be in bounds.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn wgrad(
    images: &[(*const f32, *const f32)],
    grid: PixelGrid,
    (mrows, ldy): (usize, usize),
    koffs: &[usize],
    c: &mut [f32],
) {
    let ldc = 8 * koffs.len();
    assert!(c.len() >= mrows * ldc);
    let mut shifted = Vec::with_capacity(images.len());
    for m in (0..mrows).step_by(WG_MR) {
        shifted.clear();
        shifted.extend(images.iter().map(|&(dy, x)| (dy.add(m * ldy), x)));
        let im = &shifted[..];
        for kv in (0..koffs.len()).step_by(WG_NV) {
            let (ko, cp) = (&koffs[kv..], c.as_mut_ptr().add(m * ldc + 8 * kv));
            macro_rules! by_v {
                ($r:literal) => {
                    match WG_NV.min(koffs.len() - kv) {
                        1 => wgrad_tile::<$r, 1>(im, grid, ldy, ko, cp, ldc),
                        _ => wgrad_tile::<$r, WG_NV>(im, grid, ldy, ko, cp, ldc),
                    }
                };
            }
            match WG_MR.min(mrows - m) {
                1 => by_v!(1),
                2 => by_v!(2),
                3 => by_v!(3),
                4 => by_v!(4),
                5 => by_v!(5),
                _ => by_v!(6),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against a plain f64 sum of the same products, on shapes that reach every
    //! tile edge (rows past a whole tile, masked lanes, one and several images).
    use super::*;
    use crate::gemm::simd::lane_mask;
    use crate::testutil::rng;
    use rand::Rng;

    fn avx2() -> bool {
        let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if !ok {
            eprintln!("skipped: this CPU has no AVX2+FMA (a CPU-capability skip)");
        }
        ok
    }

    fn values(r: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect()
    }

    /// f32 sums of at most a few hundred products of values in (-1, 1): 1e-5 of the largest
    /// magnitude is ample for any order of the additions, and a wrong term is off by ~0.1.
    fn close(got: f32, want: f64, scale: f64) {
        assert!(
            (got as f64 - want).abs() <= 1e-5 * scale.max(1.0),
            "{got} vs {want}"
        );
    }

    #[test]
    fn nn_matches_the_sum_masked_and_not() {
        if !avx2() {
            return;
        }
        let mut r = rng(21);
        for (m, k, pixels, masked) in [(13, 7, 40usize, false), (6, 20, 16, true), (4, 3, 33, true)]
        {
            let a = values(&mut r, m * k);
            let packed = PackedA::new(m, k, |i, j| a[i * k + j]);
            // B row j starts at offs[j]; pixel vectors of 16, the last one ragged.
            let ld = pixels.next_multiple_of(16) + 16;
            let src = values(&mut r, k * ld + 16);
            let offs: Vec<usize> = (0..k).map(|j| j * ld + j % 3).collect();
            let masks: Vec<u16> = if masked {
                (0..k)
                    .map(|j| 0xffffu16.rotate_left(j as u32) ^ 0x0101)
                    .collect()
            } else {
                vec![]
            };
            let vecs: Vec<Tile<1>> = (0..pixels.div_ceil(16))
                .map(|v| Tile {
                    src: [16 * v],
                    dst: [16 * v],
                    mask: [lane_mask(16 * v, pixels)],
                })
                .collect();
            let mut c = vec![f32::NAN; m * pixels];
            // SAFETY: AVX2+FMA checked; every read and write is inside the buffers above.
            unsafe {
                nn(
                    &packed,
                    (&offs, &masks),
                    &src,
                    &vecs,
                    c.as_mut_ptr(),
                    pixels,
                )
            };
            for i in 0..m {
                for p in 0..pixels {
                    let want: f64 = (0..k)
                        .filter(|&j| masks.is_empty() || masks[j] & (1 << (p % 16)) != 0)
                        .map(|j| a[i * k + j] as f64 * src[offs[j] + p] as f64)
                        .sum();
                    close(c[i * pixels + p], want, k as f64);
                }
            }
        }
    }

    #[test]
    fn nt_matches_the_sum_over_images() {
        if !avx2() {
            return;
        }
        let mut r = rng(22);
        let (m, krows, pixels, count) = (5, 7, 37usize, 3);
        let lda = pixels.next_multiple_of(16);
        let a: Vec<Vec<f32>> = (0..count).map(|_| values(&mut r, m * lda)).collect();
        let b: Vec<Vec<f32>> = (0..count)
            .map(|_| values(&mut r, krows * lda + 16))
            .collect();
        let offs: Vec<usize> = (0..krows).map(|j| j * lda).collect();
        let walk = Walk::new((0..pixels.div_ceil(16)).map(|v| PixelVec {
            a: 16 * v,
            src: 16 * v,
            mask: lane_mask(16 * v, pixels),
        }));
        let images: Vec<(*const f32, *const f32)> =
            (0..count).map(|i| (a[i].as_ptr(), b[i].as_ptr())).collect();
        let start = values(&mut r, m * krows);
        let mut c = start.clone();
        // SAFETY: AVX2+FMA checked; the walk stays inside each image's rows.
        unsafe { nt(&images, (m, lda), &offs, &walk, &mut c) };
        for i in 0..m {
            for j in 0..krows {
                let want: f64 = start[i * krows + j] as f64
                    + (0..count)
                        .flat_map(|n| (0..pixels).map(move |p| (n, p)))
                        .map(|(n, p)| a[n][i * lda + p] as f64 * b[n][offs[j] + p] as f64)
                        .sum::<f64>();
                close(c[i * krows + j], want, (count * pixels) as f64);
            }
        }
    }

    #[test]
    fn wgrad_matches_the_sum() {
        if !avx2() {
            return;
        }
        let mut r = rng(23);
        // 7 output channels (a full tile and a ragged one), 24 input channels (3 vectors: a
        // pair and a single), a 3x5 output grid over a channels-last input of stride 2.
        let (m, cin, ho, wo, count) = (7, 24, 3, 5, 2);
        let grid = PixelGrid {
            ho,
            wo,
            col_step: 2 * cin,
            row_step: 2 * (2 * wo + 1) * cin,
        };
        let x_len = (2 * ho + 1) * (2 * wo + 1) * cin + 8;
        let dy: Vec<Vec<f32>> = (0..count).map(|_| values(&mut r, m * ho * wo)).collect();
        let x: Vec<Vec<f32>> = (0..count).map(|_| values(&mut r, x_len)).collect();
        let koffs: Vec<usize> = vec![0, 8, 16, cin + 8];
        let images: Vec<(*const f32, *const f32)> = (0..count)
            .map(|i| (dy[i].as_ptr(), x[i].as_ptr()))
            .collect();
        let mut c = vec![f32::NAN; m * 8 * koffs.len()];
        // SAFETY: AVX2+FMA checked; every offset stays inside x_len.
        unsafe { wgrad(&images, grid, (m, ho * wo), &koffs, &mut c) };
        for co in 0..m {
            for (kv, &ko) in koffs.iter().enumerate() {
                for lane in 0..8 {
                    let want: f64 = (0..count)
                        .flat_map(|n| (0..ho * wo).map(move |p| (n, p)))
                        .map(|(n, p)| {
                            let at = (p / wo) * grid.row_step + (p % wo) * grid.col_step;
                            dy[n][co * ho * wo + p] as f64 * x[n][at + ko + lane] as f64
                        })
                        .sum();
                    close(c[co * 8 * koffs.len() + 8 * kv + lane], want, 30.0);
                }
            }
        }
    }
}
