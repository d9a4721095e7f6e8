//! fp32 GEMM micro-kernels (AVX-512) for the convolutions. Both vectorise over pixels, the
//! dimension every operand of a conv keeps contiguous in NCHW, and both read the B operand
//! through a table of tap offsets: `B[k][pixels] = src[offs[k] + pixel offset]`. With `src`
//! the zero-padded input image and `offs[k]` the offset of tap k = (ci, ky, kx), that is the
//! convolution read in place (no im2col); with `src` an im2col matrix, `offs[k] = k·ld`.
//! - [`nn`]: `C[m][p] = Σ_k A[m][k]·B[k][p]` (forward, and the input gradient): a tile of
//!   `MR` rows x `NV` 16-pixel vectors of C lives in registers while k runs; A comes packed
//!   ([`PackedA`]) so each k step broadcasts `MR` consecutive floats.
//! - [`nt`]: `C[m][k] += Σ_p A[m][p]·B[k][p]` (the weight gradient): `MR x KR` accumulators of
//!   16 lanes each run over all pixels of a group of images, then each is summed across its
//!   lanes (a fixed tree) into C.
//!
//! Every sum runs in a fixed order that depends only on the shapes.

// The kernels index their accumulator tiles by (row, vector): clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

/// Rows of C per NN tile (the last tile of a matrix may have fewer).
pub(crate) const NN_MR: usize = 6;
/// Rows (m) and columns (k) of C per NT tile.
const NT_MR: usize = 4;
const NT_KR: usize = 4; // 4 x 6 measured 1.4-1.7x slower

/// `A` (`m x k`) packed for [`nn`]: tiles of [`NN_MR`] rows, each stored k-major
/// (`[k][rows of the tile]`), so a k step reads its rows' values contiguously.
pub(crate) struct PackedA {
    data: Vec<f32>,
    pub m: usize,
    pub k: usize,
}

impl PackedA {
    /// Packs `a(row, col)` for `row < m`, `col < k`.
    pub fn new(m: usize, k: usize, a: impl Fn(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(m * k);
        for t in (0..m).step_by(NN_MR) {
            let rows = NN_MR.min(m - t);
            for col in 0..k {
                data.extend((t..t + rows).map(|row| a(row, col)));
            }
        }
        PackedA { data, m, k }
    }

    /// The packed values (tiles of [`NN_MR`] rows, each `[k][rows]`).
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

pub(crate) use super::simd::lane_mask;

/// `NV` vectors of output pixels computed together: where each reads B (offset in `src`,
/// added to a tap's offset), where it goes in a row of C, and which lanes are real pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile<const NV: usize> {
    pub src: [usize; NV],
    pub dst: [usize; NV],
    pub mask: [u16; NV],
}

/// One NN tile: `MR` rows x `NV` vectors of C from `k` steps.
// Its own function, so the register allocator sees one tile's loop alone (inlined into
// the dispatch it spilled an accumulator on every iteration).
#[inline(never)]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_tile<const MR: usize, const NV: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    offs: *const usize,
    masks: *const u16,
    src: *const f32,
    tile: &Tile<NV>,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut a = a;
    for kk in 0..k {
        let b = src.add(*offs.add(kk));
        // (No closures around SIMD values: a closure does not get the target feature, so
        // passing a vector through one would change its ABI.)
        let mut bv = [_mm512_setzero_ps(); NV];
        if MASKED {
            let mask = *masks.add(kk);
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_ps(mask, b.add(tile.src[v]));
            }
        } else {
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b.add(tile.src[v]));
            }
        }
        for (m, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(m));
            for v in 0..NV {
                acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
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

/// `C[m][p] = Σ_k A[m][k]·src[offs[k] + p's offset]` for every pixel vector of `tiles`, each
/// element one k-ordered chain of FMAs; with `masks` (one per k) only those lanes of B are
/// read, the others taken as zero. `C` rows are `ldc` apart.
///
/// # Safety
/// The CPU must have AVX-512F; `src` must be readable 16 floats past every `offs[k] +
/// tile.src[v]` (checked), and `C` writable at every `m·ldc + tile.dst[v]` lane of the masks.
#[target_feature(enable = "avx512f")]
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
        for t in (0..m).step_by(NN_MR) {
            let ap = a.data.as_ptr().add(t * k);
            let (o, mk, s, cp) = (offs.as_ptr(), masks.as_ptr(), src.as_ptr(), c.add(t * ldc));
            macro_rules! rows {
                ($masked:literal) => {
                    match m - t {
                        1 => nn_tile::<1, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
                        2 => nn_tile::<2, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
                        3 => nn_tile::<3, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
                        4 => nn_tile::<4, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
                        5 => nn_tile::<5, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
                        _ => nn_tile::<NN_MR, NV, $masked>(k, ap, o, mk, s, tile, cp, ldc),
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

/// The sum of a vector's 16 lanes, in a fixed order (halves, then quarters, ...).
#[inline(always)]
pub(crate) unsafe fn hsum(v: __m512) -> f32 {
    let top = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let h = _mm256_add_ps(_mm512_castps512_ps256(v), top);
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let e = _mm_add_ps(q, _mm_movehl_ps(q, q));
    let s = _mm_add_ss(e, _mm_movehdup_ps(e));
    _mm_cvtss_f32(s)
}

/// The weight gradient's walk over one image's pixels: the whole vectors, then the rest.
pub(crate) struct Walk {
    pub full: Vec<PixelVec>,
    pub partial: Vec<PixelVec>,
}

impl Walk {
    pub fn new(vecs: impl Iterator<Item = PixelVec>) -> Self {
        let (full, partial) = vecs.partition(|v| v.mask == u16::MAX);
        Walk { full, partial }
    }
}

/// One 16-pixel vector of the weight gradient's sum: its offset in a row of A (`dy`), in `src`
/// (added to a tap's offset), and its real lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PixelVec {
    pub a: usize,
    pub src: usize,
    pub mask: u16,
}

/// A vector of 16 floats, or of the lanes in `mask` (the others zero).
#[inline(always)]
unsafe fn load<const FULL: bool>(mask: u16, p: *const f32) -> __m512 {
    if FULL {
        _mm512_loadu_ps(p)
    } else {
        _mm512_maskz_loadu_ps(mask, p)
    }
}

/// One image's share of an NT tile: the accumulators after its pixel vectors. `FULL`: every
/// vector of `walk` has all 16 lanes (plain loads); else masked loads.
#[inline(always)]
unsafe fn nt_image<const MR: usize, const KR: usize, const FULL: bool>(
    mut acc: [[__m512; KR]; MR],
    a: *const f32,
    lda: usize,
    src: *const f32,
    offs: &[usize; KR],
    walk: &[PixelVec],
) -> [[__m512; KR]; MR] {
    for pv in walk {
        let mut av = [_mm512_setzero_ps(); MR];
        for (m, av) in av.iter_mut().enumerate() {
            *av = load::<FULL>(pv.mask, a.add(m * lda + pv.a));
        }
        let b = src.add(pv.src);
        for j in 0..KR {
            let bv = load::<FULL>(pv.mask, b.add(offs[j]));
            for m in 0..MR {
                acc[m][j] = _mm512_fmadd_ps(av[m], bv, acc[m][j]);
            }
        }
    }
    acc
}

/// One NT tile: `C[m][j] += Σ_images Σ_vectors A[m]·B[j]` for `MR x KR` elements.
// Its own function, so the register allocator sees one tile's loop alone (inlined into
// the dispatch it spilled an accumulator on every iteration).
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn nt_tile<const MR: usize, const KR: usize>(
    images: &[(*const f32, *const f32)],
    lda: usize,
    offs: &[usize],
    walk: &Walk,
    c: *mut f32,
    ldc: usize,
) {
    let offs: [usize; KR] = std::array::from_fn(|j| offs[j]);
    let mut acc = [[_mm512_setzero_ps(); KR]; MR];
    for &(a, src) in images {
        acc = nt_image::<MR, KR, true>(acc, a, lda, src, &offs, &walk.full);
        acc = nt_image::<MR, KR, false>(acc, a, lda, src, &offs, &walk.partial);
    }
    for (m, acc) in acc.iter().enumerate() {
        for (j, &v) in acc.iter().enumerate() {
            *c.add(m * ldc + j) += hsum(v);
        }
    }
}

/// `C[m][k] += Σ_images Σ_pv A[m][pv]·src[offs[k] + pv]` over the pixel vectors of `walk`,
/// for `images` = (A: `mrows` rows `lda` apart, src) pairs. `C` is `mrows x offs.len()`,
/// row-major. Lanes outside a vector's mask are read as zero in both operands.
///
/// # Safety
/// The CPU must have AVX-512F; every masked lane read must be inside its image's buffers.
#[target_feature(enable = "avx512f")]
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
                3 => tile!(3),
                _ => tile!(4),
            }
        }
    }
}

/// How the output pixels map onto one image's channels-last input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PixelGrid {
    pub ho: usize,
    pub wo: usize,
    /// Floats between consecutive output pixels of a row, and consecutive output rows, in the
    /// input (`stride·cin`, `stride·wp·cin`).
    pub col_step: usize,
    pub row_step: usize,
}
