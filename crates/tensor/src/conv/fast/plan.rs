//! How the fast convolution reads its input: the B operand's source buffer and the kernels'
//! walks over it, worked out once per call from the geometry. Three layouts:
//! - [`Layout::Wide`] (stride 1, rows of 16 pixels or more): the zero-padded image read in
//!   place: tap (ci, ky, kx) of output pixel (oy, ox) is `xp[ci][oy + ky][ox + kx]`, so B is
//!   `xp` at `offs[tap] + oy·wp + ox`.
//! - [`Layout::Narrow`] (stride 1, rows of 8, 4 or 2 pixels): the image padded above and below
//!   only, so a vector of 16 output pixels spans whole rows and still reads 16 consecutive
//!   values per tap; lanes whose tap falls left or right of the image are masked off (a mask
//!   per tap). Maps under 64 pixels put several images in one buffer and one tile.
//! - [`Layout::Im2col`] (the rest: stride 2, other widths): im2col rows of `ld` floats, built
//!   from the padded image (`offs[k] = k·ld`).
//!
//! bf16 reads the same layouts with input channels paired in 32-bit lanes (direct ones) or
//! im2col rows paired (`pair_offs`).

use crate::conv::ConvShape;
use crate::gemm::fp32::{lane_mask, PixelVec, Tile, Walk};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Wide,
    Narrow,
    Im2col,
}

/// Lanes a narrow layout's buffer keeps before and after its images, so that every tap offset
/// is non-negative and masked-off lanes stay inside the buffer.
const GUARD: usize = 16;

/// One convolution's buffers and walks.
pub(crate) struct Plan {
    pub g: ConvShape,
    pub layout: Layout,
    /// Padded image: row length, rows per channel.
    pub wp: usize,
    pub hp: usize,
    /// Images per buffer (and per NN task): more than one only for narrow maps under 64 pixels.
    pub group: usize,
    /// Lanes of one image in a narrow buffer, fp32 and bf16 pairs.
    block: usize,
    pair_block: usize,
    /// im2col row length (a multiple of the NN tile), for [`Layout::Im2col`].
    pub ld: usize,
    /// Offset of each k (input channel, tap) in the B source.
    pub offs: Vec<usize>,
    /// Narrow layout: the lanes each k reads (its tap inside the image's rows); else empty.
    pub masks: Vec<u16>,
    /// The bf16 B source pairs k: direct layouts, input channels `(2j, 2j+1)` at one tap;
    /// im2col, rows `(2j, 2j+1)` (at `j·ld`).
    pub pair_offs: Vec<usize>,
    pub pair_masks: Vec<u16>,
    /// NN tiles over one full group's output pixels.
    pub tiles: Tiles,
    /// NT walk over one image's output pixels (wide and im2col layouts).
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

fn tiles_of(vecs: &[(usize, usize, u16)]) -> Tiles {
    match vecs.len() {
        1 => Tiles::V1(group(vecs)),
        2 | 3 => Tiles::V2(group(vecs)),
        _ => Tiles::V4(group(vecs)),
    }
}

impl Plan {
    /// The plan for `g`: the narrow or wide layout where they apply, else im2col;
    /// `allow_direct: false` always takes im2col (whose rows are then a multiple of 32 floats,
    /// whole bf16 vectors) with the wide walk's kernels.
    pub fn new(g: ConvShape, allow_direct: bool) -> Plan {
        let (wp, hp) = (g.w + 2 * g.pad, g.h + 2 * g.pad);
        let p = g.out_pixels();
        let layout = if !allow_direct || g.stride != 1 {
            Layout::Im2col
        } else if g.ow >= 16 {
            Layout::Wide
        } else if 16 % g.ow == 0 && p.is_multiple_of(16) {
            Layout::Narrow
        } else {
            Layout::Im2col
        };
        let group = if layout == Layout::Narrow {
            (64 / p).max(1)
        } else {
            1
        };
        let (block, pair_block) = (g.c_in * hp * g.w, g.c_in.div_ceil(2) * hp * g.w);
        // (offset in the B source, offset in C, lanes) per output vector of one group.
        let vecs: Vec<(usize, usize, u16)> = match layout {
            Layout::Wide => (0..g.oh)
                .flat_map(|oy| {
                    (0..g.ow.div_ceil(16)).map(move |vx| {
                        let x = 16 * vx;
                        (oy * wp + x, oy * g.ow + x, lane_mask(x, g.ow))
                    })
                })
                .collect(),
            Layout::Narrow => (0..group)
                .flat_map(|img| (0..p / 16).map(move |v| (img, 16 * v)))
                .map(|(img, at)| (img * block + at, img * g.c_out * p + at, u16::MAX))
                .collect(),
            Layout::Im2col => (0..p.div_ceil(16))
                .map(|v| (16 * v, 16 * v, lane_mask(16 * v, p)))
                .collect(),
        };
        let tiles = tiles_of(&vecs);
        let nv = match &tiles {
            Tiles::V1(_) => 1,
            Tiles::V2(_) => 2,
            Tiles::V4(_) => 4,
        };
        let ld = p.next_multiple_of(16 * nv).next_multiple_of(32);
        let (taps, kk) = (g.k * g.k, g.col_rows());
        // Offset of (channel plane c, tap) in a direct layout; a narrow row has no side padding,
        // so its taps start `pad` to the left of the output pixel (past the guard).
        let tap_off = |c: usize, tap: usize| match layout {
            Layout::Narrow => GUARD + (c * hp + tap / g.k) * g.w + tap % g.k - g.pad,
            _ => (c * hp + tap / g.k) * wp + tap % g.k,
        };
        // The lanes of a narrow vector (16 / w whole rows) whose tap column is inside the row.
        let tap_mask = |tap: usize| {
            (0..16)
                .filter(|l| {
                    (l % g.w + tap % g.k)
                        .checked_sub(g.pad)
                        .is_some_and(|x| x < g.w)
                })
                .fold(0u16, |m, l| m | 1 << l)
        };
        let (offs, pair_offs): (Vec<usize>, Vec<usize>) = match layout {
            Layout::Im2col => (
                (0..kk).map(|k| k * ld).collect(),
                (0..kk.div_ceil(2)).map(|j| j * ld).collect(),
            ),
            _ => (
                (0..kk).map(|k| tap_off(k / taps, k % taps)).collect(),
                (0..g.c_in.div_ceil(2) * taps)
                    .map(|j| tap_off(j / taps, j % taps))
                    .collect(),
            ),
        };
        let (masks, pair_masks) = if layout == Layout::Narrow {
            (
                (0..kk).map(|k| tap_mask(k % taps)).collect(),
                (0..pair_offs.len()).map(|j| tap_mask(j % taps)).collect(),
            )
        } else {
            (vec![], vec![])
        };
        let walk = if layout == Layout::Narrow {
            Walk::new(std::iter::empty())
        } else {
            Walk::new(vecs.iter().map(|&(src, a, mask)| PixelVec { a, src, mask }))
        };
        Plan {
            g,
            layout,
            wp,
            hp,
            group,
            block,
            pair_block,
            ld,
            offs,
            masks,
            pair_offs,
            pair_masks,
            tiles,
            walk,
        }
    }

    /// Whether the kernels read the padded image in place (no im2col).
    pub fn direct(&self) -> bool {
        self.layout != Layout::Im2col
    }

    /// The tiles for a group of `count` images of a narrow layout (the last group of a batch
    /// may be short; bf16 buffers hold an image in fewer lanes), or `None`: use `tiles`.
    pub fn group_tiles(&self, count: usize, pairs: bool) -> Option<Tiles> {
        if self.layout != Layout::Narrow || (count == self.group && !pairs) {
            return None;
        }
        let p = self.g.out_pixels();
        let block = if pairs { self.pair_block } else { self.block };
        let vecs: Vec<(usize, usize, u16)> = (0..count)
            .flat_map(|img| (0..p / 16).map(move |v| (img, 16 * v)))
            .map(|(img, at)| (img * block + at, img * self.g.c_out * p + at, u16::MAX))
            .collect();
        Some(tiles_of(&vecs))
    }

    /// Where image `img` of a narrow group starts in its buffer (fp32 lanes, bf16 pairs).
    pub fn narrow_image_at(&self, img: usize) -> (usize, usize) {
        (GUARD + img * self.block, GUARD + img * self.pair_block)
    }

    /// The two k (in the fp32 order: input channel, then tap) of bf16 pair `j`; `None` for the
    /// zero that pads an odd count.
    pub fn pair_ks(&self, j: usize) -> (usize, Option<usize>) {
        let (taps, kk) = (self.g.k * self.g.k, self.g.col_rows());
        let (lo, hi) = if self.direct() {
            let (cj, tap) = (j / taps, j % taps);
            (2 * cj * taps + tap, (2 * cj + 1) * taps + tap)
        } else {
            (2 * j, 2 * j + 1)
        };
        (lo, (hi < kk).then_some(hi))
    }

    /// Floats of the padded image buffer: the wide layout's padded image with a vector of
    /// slack (masked-off lanes of the last pixels read past it), or a narrow group with its
    /// guards. A multiple of 16, so consecutive buffers start equally aligned.
    pub fn padded_len(&self) -> usize {
        match self.layout {
            Layout::Narrow => 2 * GUARD + self.group * self.block,
            _ => self.g.c_in * self.hp * self.wp + 16,
        }
        .next_multiple_of(16)
    }

    /// 32-bit lanes of the bf16 B source: the channel-paired padded image or narrow group, or
    /// the paired im2col rows.
    pub fn pairs_len(&self) -> usize {
        match self.layout {
            Layout::Wide => (self.g.c_in.div_ceil(2) * self.hp * self.wp + 16).next_multiple_of(16),
            Layout::Narrow => (2 * GUARD + self.group * self.pair_block).next_multiple_of(16),
            Layout::Im2col => self.g.col_rows().div_ceil(2) * self.ld,
        }
    }

    /// Floats of the fp32 B source: the padded buffer (direct) or one im2col matrix.
    pub fn src_len(&self) -> usize {
        if self.direct() {
            self.padded_len()
        } else {
            self.g.col_rows() * self.ld
        }
    }
}
