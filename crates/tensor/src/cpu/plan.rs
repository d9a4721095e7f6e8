//! How the fast convolution reads one image: the B operand's source buffer and the kernels'
//! walks over it, worked out once per call from the geometry.
//!
//! Stride-1 convolutions with rows of at least 16 pixels read the zero-padded image in place
//! ("direct"): tap (ci, ky, kx) of output pixel (oy, ox) is `xp[ci][oy + ky][ox + kx]`, so B is
//! `xp` at offset `offs[tap] + oy·wp + ox`. The rest (stride 2, maps narrower than a vector)
//! first lay the padded image out as im2col rows of `ld` floats (`offs[k] = k·ld`).

use super::gemm_f32::{lane_mask, PixelVec, Tile, Walk};
use crate::conv::ConvGeom;

/// Per-image buffers and walks of one convolution.
pub(crate) struct Plan {
    pub g: ConvGeom,
    /// Read in place (no im2col).
    pub direct: bool,
    /// Padded image: row length, rows per channel.
    pub wp: usize,
    pub hp: usize,
    /// Floats of the padded image buffer (with a vector of slack: masked-off lanes of the last
    /// pixels may read past its end).
    pub padded_len: usize,
    /// im2col row length (a multiple of the NN tile), when not direct.
    pub ld: usize,
    /// Offset of each k (tap) in the B source.
    pub offs: Vec<usize>,
    /// The bf16 B source pairs k: direct, input channels `(2j, 2j+1)` at one tap (pair
    /// `j·taps + tap` at `(j·hp + ky)·wp + kx` in a channel-paired padded image); im2col, rows
    /// `(2j, 2j+1)` (at `j·ld`).
    pub pair_offs: Vec<usize>,
    /// NN tiles over the output pixels.
    pub tiles: Tiles,
    /// NT walk over the output pixels.
    pub walk: Walk,
}

/// NN tiles of 1, 2 or 4 vectors (small maps use narrow tiles rather than padding).
pub(crate) enum Tiles {
    V1(Vec<Tile<1>>),
    V2(Vec<Tile<2>>),
    V4(Vec<Tile<4>>),
}

/// `(src, dst, mask)` of every 16-pixel vector, grouped into tiles of `NV` (the last padded
/// with vectors that store nothing).
fn group<const NV: usize>(vecs: &[(usize, usize, u16)]) -> Vec<Tile<NV>> {
    vecs.chunks(NV)
        .map(|c| Tile {
            src: std::array::from_fn(|v| c.get(v).map_or(0, |e| e.0)),
            dst: std::array::from_fn(|v| c.get(v).map_or(0, |e| e.1)),
            mask: std::array::from_fn(|v| c.get(v).map_or(0, |e| e.2)),
        })
        .collect()
}

impl Plan {
    /// The plan for `g`; `allow_direct: false` always goes through im2col (whose rows are
    /// then a multiple of 32 floats, whole bf16 vectors).
    pub fn new(g: ConvGeom, allow_direct: bool) -> Plan {
        let (wp, hp) = (g.w + 2 * g.pad, g.h + 2 * g.pad);
        let padded_len = g.cin * hp * wp + 16;
        let direct = allow_direct && g.stride == 1 && g.wo >= 16;
        let p = g.out_pixels();
        // (offset in the B source, offset in a C row, lanes) per output vector.
        let vecs: Vec<(usize, usize, u16)> = if direct {
            let per_row = g.wo.div_ceil(16);
            (0..g.ho)
                .flat_map(|oy| {
                    (0..per_row).map(move |vx| {
                        let x = 16 * vx;
                        (oy * wp + x, oy * g.wo + x, lane_mask(x, g.wo))
                    })
                })
                .collect()
        } else {
            (0..p.div_ceil(16))
                .map(|v| (16 * v, 16 * v, lane_mask(16 * v, p)))
                .collect()
        };
        let nv = match vecs.len() {
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        let ld = p.next_multiple_of(16 * nv).next_multiple_of(32);
        let offs = if direct {
            let mut offs = Vec::with_capacity(g.col_rows());
            for ci in 0..g.cin {
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        offs.push((ci * hp + ky) * wp + kx);
                    }
                }
            }
            offs
        } else {
            (0..g.col_rows()).map(|k| k * ld).collect()
        };
        let taps = g.k * g.k;
        let pair_offs = if direct {
            (0..g.cin.div_ceil(2) * taps)
                .map(|j| {
                    let (cj, tap) = (j / taps, j % taps);
                    (cj * hp + tap / g.k) * wp + tap % g.k
                })
                .collect()
        } else {
            (0..g.col_rows().div_ceil(2)).map(|j| j * ld).collect()
        };
        let walk = Walk::new(vecs.iter().map(|&(src, a, mask)| PixelVec { a, src, mask }));
        let tiles = match nv {
            1 => Tiles::V1(group(&vecs)),
            2 => Tiles::V2(group(&vecs)),
            _ => Tiles::V4(group(&vecs)),
        };
        Plan {
            g,
            direct,
            wp,
            hp,
            padded_len,
            ld,
            offs,
            pair_offs,
            tiles,
            walk,
        }
    }

    /// The two k (in the fp32 order: input channel, then tap) of bf16 pair `j`; `None` for the
    /// zero that pads an odd count.
    pub fn pair_ks(&self, j: usize) -> (usize, Option<usize>) {
        let (taps, kk) = (self.g.k * self.g.k, self.g.col_rows());
        let (lo, hi) = if self.direct {
            let (cj, tap) = (j / taps, j % taps);
            (2 * cj * taps + tap, (2 * cj + 1) * taps + tap)
        } else {
            (2 * j, 2 * j + 1)
        };
        (lo, (hi < kk).then_some(hi))
    }

    /// 32-bit lanes of one image's bf16 B source: the channel-paired padded image (direct) or
    /// the paired im2col rows.
    pub fn pairs_len(&self) -> usize {
        if self.direct {
            (self.g.cin.div_ceil(2) * self.hp * self.wp + 16).next_multiple_of(16)
        } else {
            self.g.col_rows().div_ceil(2) * self.ld
        }
    }

    /// Floats of one image's B source: the padded image (direct) or its im2col matrix.
    /// A multiple of 16, so consecutive images' sources start equally aligned.
    pub fn src_len(&self) -> usize {
        if self.direct {
            self.padded_len.next_multiple_of(16)
        } else {
            self.g.col_rows() * self.ld
        }
    }
}
