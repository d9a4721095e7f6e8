//! The fp32 weight gradient from a channels-last copy of the input: `dW[co][tap][ci] =
//! Σ_images Σ_pixels dy[co][p] · xc[p's input position + tap][ci]`, vectorised over 16 input
//! channels. A tile of `MR` output channels x `NV` such vectors lives in registers through the
//! whole sum (no lane sums at the end, unlike [`crate::gemm::fp32::nt`]); each pixel broadcasts
//! `MR` values of `dy` and loads `NV` aligned channel vectors. The channels-last copy
//! (`pack::channels_last_padded`) is the only packing: `cin·h·w` values per image against the
//! `9·cin·h·w` of an im2col.
//!
//! Sums run over images in order, pixels in row-major order: fixed by the shapes.

// The kernels index their accumulator tiles by (row, vector): clearer than iterator chains.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::gemm::fp32::PixelGrid;
use crate::gemm::simd::dot_bf16;

/// Output channels and channel vectors per tile.
const MR: usize = 8;
const NV: usize = 3;

#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const V: usize>(
    images: &[(*const f32, *const f32)],
    grid: PixelGrid,
    ldy: usize,
    koffs: &[usize],
    c: *mut f32,
    ldc: usize,
) {
    let ko: [usize; V] = std::array::from_fn(|v| koffs[v]);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for &(dy, x) in images {
        for oy in 0..grid.ho {
            let (dy_row, x_row) = (dy.add(oy * grid.wo), x.add(oy * grid.row_step));
            for ox in 0..grid.wo {
                let (a, b) = (dy_row.add(ox), x_row.add(ox * grid.col_step));
                let mut xv = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    xv[v] = _mm512_loadu_ps(b.add(ko[v]));
                }
                for m in 0..R {
                    let av = _mm512_set1_ps(*a.add(m * ldy));
                    for v in 0..V {
                        acc[m][v] = _mm512_fmadd_ps(av, xv[v], acc[m][v]);
                    }
                }
            }
        }
    }
    for m in 0..R {
        for v in 0..V {
            _mm512_storeu_ps(c.add(m * ldc + 16 * v), acc[m][v]);
        }
    }
}

/// The body of [`wgrad`] and [`wgrad_bf16`]: the output in tiles of up to `MR` rows x `NV`
/// channel vectors, each by `$tile::<rows, vectors>` (const generics: one instance per shape).
macro_rules! tiled {
    ($tile:ident, $pairs:expr, $grid:expr, ($mrows:expr, $ldy:expr), $koffs:expr, $c:expr) => {{
        let (pairs, grid, mrows, ldy, koffs, c) = ($pairs, $grid, $mrows, $ldy, $koffs, $c);
        let ldc = 16 * koffs.len();
        assert!(c.len() >= mrows * ldc);
        let mut shifted = Vec::with_capacity(pairs.len());
        for m in (0..mrows).step_by(MR) {
            shifted.clear();
            shifted.extend(pairs.iter().map(|&(dy, x)| (dy.add(m * ldy), x)));
            let im = &shifted[..];
            for kv in (0..koffs.len()).step_by(NV) {
                let (ko, cp) = (&koffs[kv..], c.as_mut_ptr().add(m * ldc + 16 * kv));
                macro_rules! by_v {
                    ($r:literal) => {
                        match NV.min(koffs.len() - kv) {
                            1 => $tile::<$r, 1>(im, grid, ldy, ko, cp, ldc),
                            2 => $tile::<$r, 2>(im, grid, ldy, ko, cp, ldc),
                            _ => $tile::<$r, NV>(im, grid, ldy, ko, cp, ldc),
                        }
                    };
                }
                match MR.min(mrows - m) {
                    1 => by_v!(1),
                    2 => by_v!(2),
                    3 => by_v!(3),
                    4 => by_v!(4),
                    5 => by_v!(5),
                    6 => by_v!(6),
                    7 => by_v!(7),
                    _ => by_v!(8),
                }
            }
        }
    }};
}

/// `C[co][16·kv + lane] = Σ_images Σ_pixels dy[co][p] · x[p's offset + koffs[kv] + lane]` for
/// `co < mrows`, `kv < koffs.len()`: `images` are `(dy, x)` pairs (`dy` rows `ldy` apart, `x`
/// channels-last), `C` is `mrows x 16·koffs.len()`, overwritten.
///
/// # Safety
/// The CPU must have AVX-512F; every read the grid and offsets describe must be in bounds.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn wgrad(
    images: &[(*const f32, *const f32)],
    grid: PixelGrid,
    (mrows, ldy): (usize, usize),
    koffs: &[usize],
    c: &mut [f32],
) {
    tiled!(tile, images, grid, (mrows, ldy), koffs, c);
}

#[inline(never)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_bf16<const R: usize, const V: usize>(
    pairs: &[(*const u32, *const u32)],
    grid: PixelGrid,
    ldy: usize,
    koffs: &[usize],
    c: *mut f32,
    ldc: usize,
) {
    let ko: [usize; V] = std::array::from_fn(|v| koffs[v]);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for &(dy, x) in pairs {
        for oy in 0..grid.ho {
            let (dy_row, x_row) = (dy.add(oy * grid.wo), x.add(oy * grid.row_step));
            for ox in 0..grid.wo {
                let (a, b) = (dy_row.add(ox), x_row.add(ox * grid.col_step));
                let mut xv = [_mm512_setzero_si512(); V];
                for v in 0..V {
                    xv[v] = _mm512_loadu_si512(b.add(ko[v]).cast());
                }
                for m in 0..R {
                    let av = _mm512_set1_epi32(*a.add(m * ldy) as i32);
                    for v in 0..V {
                        acc[m][v] = dot_bf16(acc[m][v], av, xv[v]);
                    }
                }
            }
        }
    }
    for m in 0..R {
        for v in 0..V {
            _mm512_storeu_ps(c.add(m * ldc + 16 * v), acc[m][v]);
        }
    }
}

/// [`wgrad`] with bf16 operands on `vdpbf16ps`, each 32-bit lane pairing the same position of
/// two images (`pack::image_pairs`, `pack::channels_last_image_pairs`): `pairs` are
/// `(dy pair, x pair)` buffers, so every pixel step sums both images' products.
///
/// # Safety
/// The CPU must have AVX-512F and AVX512-BF16; every read must be in bounds.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn wgrad_bf16(
    pairs: &[(*const u32, *const u32)],
    grid: PixelGrid,
    (mrows, ldy): (usize, usize),
    koffs: &[usize],
    c: &mut [f32],
) {
    tiled!(tile_bf16, pairs, grid, (mrows, ldy), koffs, c);
}
