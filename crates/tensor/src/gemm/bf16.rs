//! bf16 GEMM micro-kernels on AVX512-BF16's `vdpbf16ps`, the shapes of [`super::fp32`]:
//! each instruction multiplies 16 pairs of bf16 values exactly and adds both products to 16
//! f32 accumulators, so every lane still sums exact products of bf16-rounded operands in f32
//! (the twin's semantics) while doing twice the work of an fp32 FMA. The pairs run along the
//! summed dimension: k for [`nn`] (packed by `pack::bf16_row_pairs`), pixels for [`nt`]
//! (`pack::bf16_along_rows`).
//!
//! One deviation from the twin's f32 FMAs, beyond the order of the sums: the instruction
//! treats subnormal inputs and results as zero (below 1.2e-38, far under any value a ResNet
//! step produces that matters).

// The kernels index their accumulator tiles by (row, vector): clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

use super::fp32::{hsum, Tile, NN_MR};
use crate::bf16::round;
use std::arch::x86_64::*;

use super::simd::dot_bf16;

const NT_MR: usize = 4;
const NT_KR: usize = 6;

/// `A` (`m x k`) rounded to bf16 and packed for [`nn`]: tiles of [`NN_MR`] rows, each stored
/// `[k/2][rows]` with the pair `(a[row][2j], a[row][2j+1])` in one lane (an odd k pads zero).
pub(crate) struct PackedPairs {
    data: Vec<u32>,
    pub m: usize,
    /// Pairs along k: `ceil(k / 2)`.
    pub kp: usize,
}

impl PackedPairs {
    /// Packs `pair(row, j)` = the two values of A's pair `j` in `row`, for `row < m`, `j < kp`.
    pub fn new(m: usize, kp: usize, pair: impl Fn(usize, usize) -> (f32, f32)) -> Self {
        let bits = |v: f32| round(v).to_bits() >> 16;
        let mut data = Vec::with_capacity(m * kp);
        for t in (0..m).step_by(NN_MR) {
            let rows = NN_MR.min(m - t);
            for j in 0..kp {
                data.extend((t..t + rows).map(|row| {
                    let (lo, hi) = pair(row, j);
                    bits(lo) | bits(hi) << 16
                }));
            }
        }
        PackedPairs { data, m, kp }
    }
}

// Its own function, so the register allocator sees one tile's loop alone.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_tile<const MR: usize, const NV: usize, const MASKED: bool>(
    kp: usize,
    a: *const u32,
    offs: *const usize,
    masks: *const u16,
    src: *const u32,
    tile: &Tile<NV>,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut a = a;
    for j in 0..kp {
        let b = src.add(*offs.add(j));
        let mut bv = [_mm512_setzero_si512(); NV];
        if MASKED {
            let mask = *masks.add(j);
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_epi32(mask, b.add(tile.src[v]).cast());
            }
        } else {
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_si512(b.add(tile.src[v]).cast());
            }
        }
        for (m, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(*a.add(m) as i32);
            for v in 0..NV {
                acc[v] = dot_bf16(acc[v], av, bv[v]);
            }
        }
        a = a.add(MR);
    }
    for (m, acc) in acc.iter().enumerate() {
        for v in 0..NV {
            if tile.mask[v] != 0 {
                _mm512_mask_storeu_ps(c.add(m * ldc + tile.dst[v]), tile.mask[v], acc[v]);
            }
        }
    }
}

/// `C[m][p] = Σ_j A[m][j]·src[offs[j] + p's offset]` over bf16 pairs: the bf16 form of
/// [`super::fp32::nn`] (masks alike), `src` and A holding pairs along k in 32-bit lanes.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16; `src` must be readable 16 lanes past every
/// `offs[j] + tile.src[v]` (checked), and `C` writable at every masked lane.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn nn<const NV: usize>(
    a: &PackedPairs,
    (offs, masks): (&[usize], &[u16]),
    src: &[u32],
    tiles: &[Tile<NV>],
    c: *mut f32,
    ldc: usize,
) {
    let (m, kp) = (a.m, a.kp);
    assert!(offs.len() == kp && (masks.is_empty() || masks.len() == kp));
    let reach = offs.iter().max().copied().unwrap_or(0)
        + tiles.iter().flat_map(|t| t.src).max().unwrap_or(0)
        + 16;
    assert!(kp == 0 || reach <= src.len(), "nn: B reads past its buffer");
    for tile in tiles {
        for t in (0..m).step_by(NN_MR) {
            let ap = a.data.as_ptr().add(t * kp);
            let (o, mk, s, cp) = (offs.as_ptr(), masks.as_ptr(), src.as_ptr(), c.add(t * ldc));
            macro_rules! rows {
                ($masked:literal) => {
                    match m - t {
                        1 => nn_tile::<1, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
                        2 => nn_tile::<2, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
                        3 => nn_tile::<3, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
                        4 => nn_tile::<4, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
                        5 => nn_tile::<5, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
                        _ => nn_tile::<NN_MR, NV, $masked>(kp, ap, o, mk, s, tile, cp, ldc),
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

// Its own function, so the register allocator sees one tile's loop alone (inlined into
// the dispatch it spilled an accumulator on every iteration).
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn nt_tile<const MR: usize, const KR: usize>(
    groups: &[(*const u32, *const u32)],
    lda: usize,
    ldb: usize,
    nvec: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); KR]; MR];
    for &(a, b) in groups {
        for pv in 0..nvec {
            let mut av = [_mm512_setzero_si512(); MR];
            for (m, av) in av.iter_mut().enumerate() {
                *av = _mm512_loadu_si512(a.add(m * lda + 16 * pv).cast());
            }
            for j in 0..KR {
                let bv = _mm512_loadu_si512(b.add(j * ldb + 16 * pv).cast());
                for m in 0..MR {
                    acc[m][j] = dot_bf16(acc[m][j], av[m], bv);
                }
            }
        }
    }
    for (m, acc) in acc.iter().enumerate() {
        for (j, &v) in acc.iter().enumerate() {
            *c.add(m * ldc + j) += hsum(v);
        }
    }
}

/// `C[m][j] += Σ_g Σ_p A_g[m][p]·B_g[j][p]` with bf16 operands paired along the pixels
/// (`lda` / `ldb` lanes per row, `nvec` vectors of 16 lanes = 32 pixels each; pixels past the
/// valid ones zero in one of the two). `C` is `mrows x krows`, row-major.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16, and every `A_g` / `B_g` must be readable for
/// `mrows` / `krows` rows of `nvec` vectors.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn nt(
    groups: &[(*const u32, *const u32)],
    (mrows, lda): (usize, usize),
    (krows, ldb): (usize, usize),
    nvec: usize,
    c: &mut [f32],
) {
    assert!(c.len() >= mrows * krows);
    let ldc = krows;
    let mut shifted: Vec<(*const u32, *const u32)> = Vec::with_capacity(groups.len());
    for j in (0..krows).step_by(NT_KR) {
        for m in (0..mrows).step_by(NT_MR) {
            shifted.clear();
            shifted.extend(
                groups
                    .iter()
                    .map(|&(a, b)| (a.add(m * lda), b.add(j * ldb))),
            );
            let cp = c.as_mut_ptr().add(m * ldc + j);
            let g = &shifted[..];
            macro_rules! tile {
                ($mr:literal, $($kr:literal)+) => {
                    match krows - j {
                        $($kr => nt_tile::<$mr, $kr>(g, lda, ldb, nvec, cp, ldc),)+
                        _ => nt_tile::<$mr, NT_KR>(g, lda, ldb, nvec, cp, ldc),
                    }
                };
            }
            match mrows - m {
                1 => tile!(1, 1 2 3 4 5),
                2 => tile!(2, 1 2 3 4 5),
                3 => tile!(3, 1 2 3 4 5),
                _ => tile!(4, 1 2 3 4 5),
            }
        }
    }
}
