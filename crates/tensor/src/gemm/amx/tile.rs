//! The AMX kernels' tile logic, over any [`TileOps`] (the model or the real instructions):
//! which tiles hold what, where each load reads, the order of the accumulations, and how the
//! edges (rows past `m`, pixels outside a vector's mask) are cut. Both kernels keep a 2 x 2
//! block of C tiles (tmm0-3) against two A tiles (tmm4-5) and two B tiles (tmm6-7), so each
//! pair of loads feeds four `tdpbf16ps`.
//! - [`nn`]: `C[m][p] = Σ_k A[m][k]·B[k][p]` (forward, input gradient): A pre-tiled
//!   ([`TiledA`]), B rows (pairs along k) read in place through [`KBlocks`] — k blocks of
//!   equally spaced rows of the conv's bf16 source — for 16-pixel vectors.
//! - [`wgrad`]: `dW[co][tap][ci] = Σ_pairs Σ_pixels dy[co][p]·x[p + tap][ci]` on pairs of
//!   images (each 32-bit lane holds the same element of two images): K runs along a row of
//!   output pixels, so A (dy) rows are contiguous and B (channels-last x) rows `col_step` apart.
//!
//! Every output element's sum has an order fixed by the shapes: per instruction as the
//! instruction defines it (see [`super`]), instructions in k-block order.

use super::{TileConfig, TileOps, ROWS};
use crate::gemm::fp32::PixelGrid;

/// A (`m x k`) as bf16 pairs along k, tiled: for each block of 16 rows and each k block of
/// `len` pairs, a `[16][len]` tile of 32-bit lanes (low half the even element); rows past `m`
/// are zero.
pub(crate) struct TiledA {
    data: Vec<u32>,
    pub m: usize,
    pub blocks: usize,
    pub len: usize,
}

impl TiledA {
    /// `pair(row, block, i)`: the two values (already bf16) of pair `i` of k block `block`.
    pub fn new(
        m: usize,
        blocks: usize,
        len: usize,
        pair: impl Fn(usize, usize, usize) -> (f32, f32),
    ) -> Self {
        assert!((1..=16).contains(&len));
        let mb = m.div_ceil(ROWS);
        let mut data = vec![0u32; mb * blocks * ROWS * len];
        for (t, tile) in data.chunks_exact_mut(ROWS * len).enumerate() {
            let (rb, b) = (t / blocks, t % blocks);
            for r in 0..ROWS.min(m - rb * ROWS) {
                for i in 0..len {
                    let (lo, hi) = pair(rb * ROWS + r, b, i);
                    tile[r * len + i] = (lo.to_bits() >> 16) | (hi.to_bits() & 0xffff_0000);
                }
            }
        }
        TiledA {
            data,
            m,
            blocks,
            len,
        }
    }

    fn tile(&self, row_block: usize, block: usize) -> *const u8 {
        self.data[(row_block * self.blocks + block) * ROWS * self.len..]
            .as_ptr()
            .cast()
    }
}

/// Where B's k blocks are in the source: row `r` (a pair of k) of block `b` at pixel offset
/// `p` is `src[base[b] + r·stride + p]`; every block has `len` rows.
pub(crate) struct KBlocks {
    pub base: Vec<usize>,
    pub stride: usize,
    pub len: usize,
}

/// One 16-pixel output vector: its offset in a row of B, in a row of C, and its real lanes.
pub(crate) type PixelVector = (usize, usize, u16);

/// C tiles as stored, for the copy out.
type CTiles = [[[f32; 16]; ROWS]; 4];

/// `ldtilecfg`'s shapes for both kernels: C 16 x 16 f32, A 16 rows of `k` pairs, B `k` rows.
fn config(k: usize) -> TileConfig {
    let mut cfg = TileConfig::new();
    for t in 0..4 {
        cfg = cfg.tile(t, ROWS, 64);
    }
    cfg.tile(4, ROWS, 4 * k)
        .tile(5, ROWS, 4 * k)
        .tile(6, k, 64)
        .tile(7, k, 64)
}

/// Zeroes the C tiles of a block of one or two row blocks x one or two columns.
unsafe fn zero_c<O: TileOps, const TWO_M: bool, const TWO_N: bool>(ops: &mut O) {
    ops.zero::<0>();
    if TWO_N {
        ops.zero::<1>();
    }
    if TWO_M {
        ops.zero::<2>();
        if TWO_N {
            ops.zero::<3>();
        }
    }
}

/// The four products of a block: C(i, j) += A(i)·B(j) for the tiles loaded.
unsafe fn products<O: TileOps, const TWO_M: bool, const TWO_N: bool>(ops: &mut O) {
    ops.dpbf16ps::<0, 4, 6>();
    if TWO_N {
        ops.dpbf16ps::<1, 4, 7>();
    }
    if TWO_M {
        ops.dpbf16ps::<2, 5, 6>();
        if TWO_N {
            ops.dpbf16ps::<3, 5, 7>();
        }
    }
}

/// Stores the block's C tiles into `out` (tile `2i + j` for row block i, column j).
unsafe fn store_c<O: TileOps, const TWO_M: bool, const TWO_N: bool>(ops: &mut O, out: &mut CTiles) {
    ops.store::<0>(out[0].as_mut_ptr().cast(), 64);
    if TWO_N {
        ops.store::<1>(out[1].as_mut_ptr().cast(), 64);
    }
    if TWO_M {
        ops.store::<2>(out[2].as_mut_ptr().cast(), 64);
        if TWO_N {
            ops.store::<3>(out[3].as_mut_ptr().cast(), 64);
        }
    }
}

/// One NN block: row blocks `mb` (and `mb + 1`), vectors `v[0]` (and `v[1]`).
unsafe fn nn_block<O: TileOps, const TWO_M: bool, const TWO_N: bool>(
    ops: &mut O,
    a: &TiledA,
    src: &[u32],
    kb: &KBlocks,
    mb: usize,
    v: [usize; 2],
    out: &mut CTiles,
) {
    zero_c::<O, TWO_M, TWO_N>(ops);
    let (a_stride, b_stride) = (4 * a.len, 4 * kb.stride);
    for (b, &base) in kb.base.iter().enumerate() {
        ops.load::<4>(a.tile(mb, b), a_stride);
        if TWO_M {
            ops.load::<5>(a.tile(mb + 1, b), a_stride);
        }
        let rows = src.as_ptr().add(base);
        ops.load::<6>(rows.add(v[0]).cast(), b_stride);
        if TWO_N {
            ops.load::<7>(rows.add(v[1]).cast(), b_stride);
        }
        products::<O, TWO_M, TWO_N>(ops);
    }
    store_c::<O, TWO_M, TWO_N>(ops, out);
}

/// `C[m][p] = Σ_k A[m][k]·B[k][p]` for every vector of `vecs`, B's rows of pairs in `src` at
/// `kb`; C rows `ldc` apart, only rows `< a.m` and each vector's lanes written.
///
/// # Safety
/// `ops` must be runnable on this CPU (the model always is); `C` writable at every row below
/// `a.m` at each vector's lanes. B's reads are checked against `src`.
pub(crate) unsafe fn nn<O: TileOps>(
    ops: &mut O,
    a: &TiledA,
    src: &[u32],
    kb: &KBlocks,
    vecs: &[PixelVector],
    c: *mut f32,
    ldc: usize,
) {
    assert!(kb.len == a.len && kb.base.len() == a.blocks);
    let reach = kb.base.iter().max().copied().unwrap_or(0)
        + (kb.len - 1) * kb.stride
        + vecs.iter().map(|v| v.0).max().unwrap_or(0)
        + 16;
    assert!(
        a.blocks == 0 || reach <= src.len(),
        "amx nn: B reads past its buffer"
    );
    let mut out: CTiles = [[[0.0; 16]; ROWS]; 4];
    let row_blocks = a.m.div_ceil(ROWS);
    ops.configure(&config(a.len));
    for pair in vecs.chunks(2) {
        let v = [pair[0].0, pair.get(1).map_or(0, |p| p.0)];
        for mb in (0..row_blocks).step_by(2) {
            let (two_m, two_n) = (mb + 1 < row_blocks, pair.len() == 2);
            match (two_m, two_n) {
                (true, true) => nn_block::<O, true, true>(ops, a, src, kb, mb, v, &mut out),
                (true, false) => nn_block::<O, true, false>(ops, a, src, kb, mb, v, &mut out),
                (false, true) => nn_block::<O, false, true>(ops, a, src, kb, mb, v, &mut out),
                (false, false) => nn_block::<O, false, false>(ops, a, src, kb, mb, v, &mut out),
            }
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                if (i == 1 && !two_m) || (j == 1 && !two_n) {
                    continue;
                }
                let (_, dst, mask) = pair[j];
                let rows = ROWS.min(a.m.saturating_sub((mb + i) * ROWS));
                for (r, values) in out[2 * i + j].iter().enumerate().take(rows) {
                    let row = c.add(((mb + i) * ROWS + r) * ldc + dst);
                    for (lane, &value) in values.iter().enumerate() {
                        if mask & (1 << lane) != 0 {
                            *row.add(lane) = value;
                        }
                    }
                }
            }
        }
    }
    ops.release();
}

/// Pixels per k step of [`wgrad`]: the largest divisor of the row length up to 16 (K runs
/// along one row of output pixels).
pub(crate) fn wgrad_run(wo: usize) -> usize {
    (1..=16.min(wo))
        .rev()
        .find(|d| wo.is_multiple_of(*d))
        .unwrap_or(1)
}

/// One weight-gradient block: row blocks `mb` (and `mb + 1`) of output channels, channel
/// vectors `ko[0]` (and `ko[1]`), summed over every member's pixels.
#[allow(clippy::too_many_arguments)]
unsafe fn wgrad_block<O: TileOps, const TWO_M: bool, const TWO_N: bool>(
    ops: &mut O,
    members: &[(*const u32, *const u32)],
    grid: PixelGrid,
    ldy: usize,
    run: usize,
    mb: usize,
    ko: [usize; 2],
    out: &mut CTiles,
) {
    zero_c::<O, TWO_M, TWO_N>(ops);
    let (a_stride, b_stride) = (4 * ldy, 4 * grid.col_step);
    for &(dy, x) in members {
        let dy = dy.add(mb * ROWS * ldy);
        for oy in 0..grid.ho {
            for ox in (0..grid.wo).step_by(run) {
                let a = dy.add(oy * grid.wo + ox);
                ops.load::<4>(a.cast(), a_stride);
                if TWO_M {
                    ops.load::<5>(a.add(ROWS * ldy).cast(), a_stride);
                }
                let b = x.add(oy * grid.row_step + ox * grid.col_step);
                ops.load::<6>(b.add(ko[0]).cast(), b_stride);
                if TWO_N {
                    ops.load::<7>(b.add(ko[1]).cast(), b_stride);
                }
                products::<O, TWO_M, TWO_N>(ops);
            }
        }
    }
    store_c::<O, TWO_M, TWO_N>(ops, out);
}

/// `C[co][16·kv + lane] = Σ_members Σ_pixels dy[co][p] · x[p's offset + koffs[kv] + lane]` on
/// bf16 pairs (each lane two images): `conv::fast::wgrad::wgrad_bf16`'s contract. `C` is
/// `mrows x 16·koffs.len()`, overwritten.
///
/// # Safety
/// `ops` must be runnable on this CPU; every member's `dy` must be readable for
/// `16·ceil(mrows / 16)` rows of `ldy` lanes (rows past `mrows` may hold anything: their sums
/// are dropped), and `x` at every pixel offset plus `koffs[kv]` for 16 lanes.
pub(crate) unsafe fn wgrad<O: TileOps>(
    ops: &mut O,
    members: &[(*const u32, *const u32)],
    grid: PixelGrid,
    (mrows, ldy): (usize, usize),
    koffs: &[usize],
    c: &mut [f32],
) {
    let ldc = 16 * koffs.len();
    assert!(c.len() >= mrows * ldc);
    let run = wgrad_run(grid.wo);
    let mut out: CTiles = [[[0.0; 16]; ROWS]; 4];
    let row_blocks = mrows.div_ceil(ROWS);
    ops.configure(&config(run));
    for kv in (0..koffs.len()).step_by(2) {
        let ko = [koffs[kv], koffs.get(kv + 1).copied().unwrap_or(0)];
        for mb in (0..row_blocks).step_by(2) {
            let (two_m, two_n) = (mb + 1 < row_blocks, kv + 1 < koffs.len());
            let (m, g) = (members, grid);
            match (two_m, two_n) {
                (true, true) => wgrad_block::<O, true, true>(ops, m, g, ldy, run, mb, ko, &mut out),
                (true, false) => {
                    wgrad_block::<O, true, false>(ops, m, g, ldy, run, mb, ko, &mut out)
                }
                (false, true) => {
                    wgrad_block::<O, false, true>(ops, m, g, ldy, run, mb, ko, &mut out)
                }
                (false, false) => {
                    wgrad_block::<O, false, false>(ops, m, g, ldy, run, mb, ko, &mut out)
                }
            }
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                if (i == 1 && !two_m) || (j == 1 && !two_n) {
                    continue;
                }
                let rows = ROWS.min(mrows.saturating_sub((mb + i) * ROWS));
                for (r, values) in out[2 * i + j].iter().enumerate().take(rows) {
                    let at = ((mb + i) * ROWS + r) * ldc + 16 * (kv + j);
                    c[at..at + 16].copy_from_slice(values);
                }
            }
        }
    }
    ops.release();
}

#[cfg(test)]
mod tests {
    //! The tile logic through the model against plain sums of the same bf16 products, on
    //! shapes with ragged edges; and the model against the real instructions, bit for bit,
    //! where the CPU has AMX.
    use super::super::model::Model;
    use super::*;
    use crate::bf16::round;
    use crate::testutil::rng;
    use rand::Rng;

    fn bf16_values(r: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| round(r.gen_range(-1.0f32..1.0))).collect()
    }

    fn pair_lanes(lo: &[f32], hi: &[f32]) -> Vec<u32> {
        lo.iter()
            .zip(hi)
            .map(|(l, h)| (l.to_bits() >> 16) | (h.to_bits() & 0xffff_0000))
            .collect()
    }

    /// An NN problem: A `m x 2·kp`, B rows of pairs at `kb`, pixel vectors with masks.
    struct NnCase {
        a: Vec<f32>,
        tiled: TiledA,
        src: Vec<u32>,
        lo: Vec<f32>,
        hi: Vec<f32>,
        kb: KBlocks,
        vecs: Vec<PixelVector>,
        pixels: usize,
    }

    fn nn_case(r: &mut impl Rng, m: usize, blocks: usize, len: usize, pixels: usize) -> NnCase {
        let kp = blocks * len;
        let a = bf16_values(r, m * 2 * kp);
        let tiled = TiledA::new(m, blocks, len, |row, b, i| {
            let j = b * len + i;
            (a[row * 2 * kp + 2 * j], a[row * 2 * kp + 2 * j + 1])
        });
        // Blocks 3·ld + 5 apart, rows `ld` apart: equally spaced rows, unequally spaced blocks.
        let ld = pixels.next_multiple_of(16) + 16;
        let kb = KBlocks {
            base: (0..blocks).map(|b| b * (len * ld + 5)).collect(),
            stride: ld,
            len,
        };
        let n = blocks * (len * ld + 5) + 16;
        let (lo, hi) = (bf16_values(r, n), bf16_values(r, n));
        let src = pair_lanes(&lo, &hi);
        let vecs = (0..pixels.div_ceil(16))
            .map(|v| {
                (
                    16 * v,
                    16 * v,
                    crate::gemm::simd::lane_mask(16 * v, pixels) & 0x7fff,
                )
            })
            .collect();
        NnCase {
            a,
            tiled,
            src,
            lo,
            hi,
            kb,
            vecs,
            pixels,
        }
    }

    fn run_nn<O: TileOps>(ops: &mut O, case: &NnCase, m: usize) -> Vec<f32> {
        let mut c = vec![-7.0f32; m * case.pixels];
        // SAFETY: C holds m rows of the vectors' pixels; B's reach is checked.
        unsafe {
            nn(
                ops,
                &case.tiled,
                &case.src,
                &case.kb,
                &case.vecs,
                c.as_mut_ptr(),
                case.pixels,
            )
        };
        c
    }

    #[test]
    fn nn_through_the_model_is_the_sum_of_the_products() {
        let mut r = rng(41);
        // Rows past one and two row blocks, one and several k blocks, an odd vector count,
        // the last lane of every vector masked off (left as it was).
        for (m, blocks, len, pixels) in [(5, 1, 3, 20), (37, 3, 16, 45), (16, 2, 8, 16)] {
            let case = nn_case(&mut r, m, blocks, len, pixels);
            let c = run_nn(&mut Model::default(), &case, m);
            let kp = blocks * len;
            for row in 0..m {
                for p in 0..pixels {
                    let got = c[row * pixels + p];
                    if p % 16 == 15 {
                        assert_eq!(got, -7.0, "masked lane written");
                        continue;
                    }
                    let want: f64 = (0..kp)
                        .map(|j| {
                            let (b, i) = (j / len, j % len);
                            let at = case.kb.base[b] + i * case.kb.stride + p;
                            let av = &case.a[row * 2 * kp + 2 * j..];
                            av[0] as f64 * case.lo[at] as f64 + av[1] as f64 * case.hi[at] as f64
                        })
                        .sum();
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * (2 * kp) as f64,
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    /// A weight-gradient problem on a channels-last grid (stride 2, a padded row).
    struct WgCase {
        dy: Vec<Vec<u32>>,
        x: Vec<Vec<u32>>,
        dyv: Vec<(Vec<f32>, Vec<f32>)>,
        xv: Vec<(Vec<f32>, Vec<f32>)>,
        grid: PixelGrid,
        koffs: Vec<usize>,
    }

    fn wg_case(r: &mut impl Rng, m: usize, cin: usize, (ho, wo): (usize, usize)) -> WgCase {
        let members = 2;
        let wp = 2 * wo + 1;
        let grid = PixelGrid {
            ho,
            wo,
            col_step: 2 * cin,
            row_step: 2 * wp * cin,
        };
        let x_len = (2 * ho + 1) * wp * cin;
        // dy rows past m up to the row block, as the contract says they may be read.
        let dy_len = m.next_multiple_of(16) * ho * wo;
        let (mut dy, mut x, mut dyv, mut xv) = (vec![], vec![], vec![], vec![]);
        for _ in 0..members {
            let (a, b) = (bf16_values(r, dy_len), bf16_values(r, dy_len));
            dy.push(pair_lanes(&a, &b));
            dyv.push((a, b));
            let (a, b) = (bf16_values(r, x_len), bf16_values(r, x_len));
            x.push(pair_lanes(&a, &b));
            xv.push((a, b));
        }
        let taps = [0, cin, wp * cin + cin];
        let koffs = taps
            .iter()
            .flat_map(|&t| (0..cin).step_by(16).map(move |c0| t + c0))
            .collect();
        WgCase {
            dy,
            x,
            dyv,
            xv,
            grid,
            koffs,
        }
    }

    fn run_wgrad<O: TileOps>(ops: &mut O, case: &WgCase, m: usize) -> Vec<f32> {
        let members: Vec<(*const u32, *const u32)> = case
            .dy
            .iter()
            .zip(&case.x)
            .map(|(d, x)| (d.as_ptr(), x.as_ptr()))
            .collect();
        let mut c = vec![f32::NAN; m * 16 * case.koffs.len()];
        let p = case.grid.ho * case.grid.wo;
        // SAFETY: dy holds whole row blocks; every x offset is inside the case's grid.
        unsafe { wgrad(ops, &members, case.grid, (m, p), &case.koffs, &mut c) };
        c
    }

    #[test]
    fn wgrad_through_the_model_is_the_sum_of_the_products() {
        let mut r = rng(42);
        // Output channels past one and two row blocks; 2 and 3 channel vectors; rows of 6
        // pixels (runs of 6) and 16.
        for (m, cin, hw) in [(20, 32, (2, 6)), (7, 48, (1, 16)), (33, 16, (2, 4))] {
            let case = wg_case(&mut r, m, cin, hw);
            let c = run_wgrad(&mut Model::default(), &case, m);
            let (g, ldc) = (case.grid, 16 * case.koffs.len());
            for co in 0..m {
                for (kv, &ko) in case.koffs.iter().enumerate() {
                    for lane in 0..16 {
                        let mut want = 0.0f64;
                        for (d, x) in case.dyv.iter().zip(&case.xv) {
                            for p in 0..g.ho * g.wo {
                                let at =
                                    (p / g.wo) * g.row_step + (p % g.wo) * g.col_step + ko + lane;
                                let dy_at = co * g.ho * g.wo + p;
                                want += d.0[dy_at] as f64 * x.0[at] as f64
                                    + d.1[dy_at] as f64 * x.1[at] as f64;
                            }
                        }
                        let got = c[co * ldc + 16 * kv + lane];
                        assert!((got as f64 - want).abs() <= 1e-5 * 64.0, "{got} vs {want}");
                    }
                }
            }
        }
    }

    /// The model and the real instructions give the same bits on both kernels, including
    /// products that underflow into the denormal range (flushed) and sums that cancel. This
    /// needs a CPU with AMX (and Linux's permission): elsewhere it prints why and checks
    /// nothing — a skip for want of the instructions, not a pass. `RESNET_REQUIRE_AMX=1`
    /// (set by `.ci/run` where /proc/cpuinfo lists `amx_tile`) turns that skip into a failure,
    /// so an AMX machine whose tiles cannot be used does not pass quietly.
    #[test]
    fn model_and_real_agree_bit_for_bit() {
        if !super::super::available() {
            assert!(
                std::env::var_os("RESNET_REQUIRE_AMX").is_none(),
                "RESNET_REQUIRE_AMX is set, but this process cannot use AMX (the CPU lacks \
                 AMX-TILE/AMX-BF16, or Linux refused the tile state)"
            );
            eprintln!(
                "skipped: this CPU has no usable AMX (AMX-TILE/AMX-BF16 and the tile state), \
                 so the real instructions cannot run here; the model ran in the other tests"
            );
            return;
        }
        let mut r = rng(43);
        for (m, blocks, len, pixels) in [(37, 3, 16, 45), (16, 2, 8, 32), (5, 9, 2, 7)] {
            let mut case = nn_case(&mut r, m, blocks, len, pixels);
            // Tiny values: products below 2^-126 (flushed), sums at the edge of the range.
            for (i, v) in case.src.iter_mut().enumerate().step_by(7) {
                *v = (*v & 0x8000_8000) | if i % 2 == 0 { 0x0080_0081 } else { 0x0001_0100 };
            }
            let model = run_nn(&mut Model::default(), &case, m);
            let real = run_nn(&mut super::super::real::Real, &case, m);
            let same = model
                .iter()
                .zip(&real)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "nn: model and AMX differ ({m}, {blocks}, {len}, {pixels})"
            );
        }
        for (m, cin, hw) in [(20, 32, (2, 6)), (33, 16, (2, 8))] {
            let case = wg_case(&mut r, m, cin, hw);
            let model = run_wgrad(&mut Model::default(), &case, m);
            let real = run_wgrad(&mut super::super::real::Real, &case, m);
            let same = model
                .iter()
                .zip(&real)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "wgrad: model and AMX differ ({m}, {cin}, {hw:?})");
        }
    }
}
