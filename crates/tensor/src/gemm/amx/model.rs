//! The tile instructions in plain Rust, as the Intel SDM (vol. 2, "TILELOADD", "TDPBF16PS",
//! "TILESTORED", "LDTILECFG") defines them: eight tiles of up to 16 rows of 64 bytes, shaped by
//! the loaded configuration. Where the hardware faults (an instruction before a configuration,
//! shapes that do not fit) the model panics.

use super::{TileConfig, TileOps, ROWS, ROW_BYTES};

/// Eight tile registers and their shapes.
pub(crate) struct Model {
    tiles: [[[u8; ROW_BYTES]; ROWS]; 8],
    rows: [usize; 8],
    colsb: [usize; 8],
    configured: bool,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            tiles: [[[0; ROW_BYTES]; ROWS]; 8],
            rows: [0; 8],
            colsb: [0; 8],
            configured: false,
        }
    }
}

/// An f32 whose exponent field is zero and significand is not (a denormal) becomes a zero
/// of its sign: how the instruction reads its inputs (DAZ) and writes its results (FTZ).
fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// A bf16 (16 bits) as the f32 with those top bits (`make_fp32` in the SDM), read DAZ.
fn bf16(bits: u16) -> f32 {
    flush(f32::from_bits((bits as u32) << 16))
}

impl Model {
    fn check(&self, t: u8) -> usize {
        assert!(
            self.configured,
            "AMX model: tile instruction before LDTILECFG"
        );
        let t = t as usize;
        assert!(
            t < 8 && self.rows[t] > 0,
            "AMX model: tile {t} is not configured"
        );
        t
    }

    fn word(&self, t: usize, r: usize, i: usize) -> [u8; 4] {
        self.tiles[t][r][4 * i..4 * i + 4].try_into().unwrap()
    }

    /// Element `i` of row `r` of tile `t` as f32 (C tiles).
    fn f32_at(&self, t: usize, r: usize, i: usize) -> f32 {
        f32::from_le_bytes(self.word(t, r, i))
    }

    /// The two bf16 of dword `i` of row `r` of tile `t`: (even, odd) = (low half, high half).
    fn pair_at(&self, t: usize, r: usize, i: usize) -> (f32, f32) {
        let w = u32::from_le_bytes(self.word(t, r, i));
        (bf16(w as u16), bf16((w >> 16) as u16))
    }
}

impl TileOps for Model {
    /// LDTILECFG: palette 1 only (as every kernel here); loading a configuration zeroes all
    /// tile data.
    unsafe fn configure(&mut self, cfg: &TileConfig) {
        assert_eq!(cfg.palette, 1, "AMX model: palette 1 only");
        assert_eq!(cfg.start_row, 0);
        for t in 0..8 {
            let (rows, colsb) = (cfg.rows[t] as usize, cfg.colsb[t] as usize);
            assert!(rows <= ROWS && colsb <= ROW_BYTES && (rows == 0) == (colsb == 0));
            self.rows[t] = rows;
            self.colsb[t] = colsb;
        }
        self.tiles = [[[0; ROW_BYTES]; ROWS]; 8];
        self.configured = true;
    }

    /// TILEZERO.
    unsafe fn zero<const T: u8>(&mut self) {
        let t = self.check(T);
        self.tiles[t] = [[0; ROW_BYTES]; ROWS];
    }

    /// TILELOADD: row `r < rows` is `colsb` bytes at `base + r·stride`, zero past `colsb`;
    /// rows past `rows` are zero.
    unsafe fn load<const T: u8>(&mut self, base: *const u8, stride: usize) {
        let t = self.check(T);
        let colsb = self.colsb[t];
        for r in 0..ROWS {
            let row = &mut self.tiles[t][r];
            row.fill(0);
            if r < self.rows[t] {
                // SAFETY: the caller's promise (the instruction reads the same bytes).
                let src = unsafe { std::slice::from_raw_parts(base.add(r * stride), colsb) };
                row[..colsb].copy_from_slice(src);
            }
        }
    }

    /// TDPBF16PS C, A, B (SDM "Operation"): for each row m of C and column n, an even and an
    /// odd f32 sum start at zero and take `fma(A[m].bf16[2k], B[k].bf16[2n], even)` and
    /// `fma(A[m].bf16[2k+1], B[k].bf16[2n+1], odd)` for k in order; then
    /// `C[m][n] = C[m][n] + (even + odd)`. DAZ and FTZ on every step, round to nearest even.
    unsafe fn dpbf16ps<const C: u8, const A: u8, const B: u8>(&mut self) {
        let (c, a, b) = (self.check(C), self.check(A), self.check(B));
        let (m_rows, n_cols, k_pairs) = (self.rows[c], self.colsb[c] / 4, self.colsb[a] / 4);
        assert!(
            self.rows[a] == m_rows && self.colsb[b] == self.colsb[c] && self.rows[b] == k_pairs,
            "AMX model: tdpbf16ps shapes do not fit (the CPU raises #UD)"
        );
        for m in 0..m_rows {
            let mut row = [0.0f32; 16];
            for (n, out) in row.iter_mut().enumerate().take(n_cols) {
                let (mut even, mut odd) = (0.0f32, 0.0f32);
                for k in 0..k_pairs {
                    let (a0, a1) = self.pair_at(a, m, k);
                    let (b0, b1) = self.pair_at(b, k, n);
                    even = flush(a0.mul_add(b0, even));
                    odd = flush(a1.mul_add(b1, odd));
                }
                *out = flush(flush(self.f32_at(c, m, n)) + flush(even + odd));
            }
            // write_row_and_zero: the row's bytes past colsb are zeroed.
            let dst = &mut self.tiles[c][m];
            dst.fill(0);
            for (n, v) in row.iter().enumerate().take(n_cols) {
                dst[4 * n..4 * n + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        // zero_upper_rows: rows past C's are zeroed.
        for m in m_rows..ROWS {
            self.tiles[c][m] = [0; ROW_BYTES];
        }
    }

    /// TILESTORED: row `r < rows`'s `colsb` bytes to `base + r·stride`.
    unsafe fn store<const T: u8>(&mut self, base: *mut u8, stride: usize) {
        let t = self.check(T);
        for r in 0..self.rows[t] {
            let src = &self.tiles[t][r][..self.colsb[t]];
            // SAFETY: the caller's promise (the instruction writes the same bytes).
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(r * stride), src.len()) };
        }
    }

    /// TILERELEASE: back to the unconfigured state.
    unsafe fn release(&mut self) {
        *self = Model::default();
    }
}

#[cfg(test)]
mod tests {
    //! The model against hand-worked cases of the SDM's definition: the order of the sums,
    //! DAZ/FTZ, the edges of loads and stores.
    use super::*;

    fn pair(lo: f32, hi: f32) -> u32 {
        (lo.to_bits() >> 16) | (hi.to_bits() & 0xffff_0000)
    }

    /// One `tdpbf16ps` of a 1x1 C (one pair column) over `k` pairs of A and B.
    fn dot(c0: f32, a: &[u32], b: &[u32]) -> f32 {
        let k = a.len();
        let mut m = Model::default();
        let cfg = TileConfig::new()
            .tile(0, 1, 4)
            .tile(1, 1, 4 * k)
            .tile(2, k, 4);
        let mut out = [c0];
        // SAFETY: every pointer covers the configured rows and bytes.
        unsafe {
            m.configure(&cfg);
            m.load::<0>(out.as_ptr().cast(), 4);
            m.load::<1>(a.as_ptr().cast(), 4 * k);
            m.load::<2>(b.as_ptr().cast(), 4);
            m.dpbf16ps::<0, 1, 2>();
            m.store::<0>(out.as_mut_ptr().cast(), 4);
        }
        out[0]
    }

    #[test]
    fn even_and_odd_sums_are_separate_then_added_to_c() {
        // Even lane: 1 + 2^-24 would vanish added to 1 directly, but the even sum starts at 0:
        // (2^-24·1) + (2^-24·1) = 2^-23, odd sum 0; then C + 2^-23 with C = 1: 1 + 2^-23.
        let e = 2f32.powi(-24);
        let a = [pair(e, 0.0), pair(e, 0.0)];
        let b = [pair(1.0, 0.0), pair(1.0, 0.0)];
        assert_eq!(dot(1.0, &a, &b), 1.0 + 2f32.powi(-23));
        // A chain that starts from C (one f32 sum in order) would give 1: 1 + 2^-24 rounds to
        // 1 (ties to even), twice.
        let chain = (1.0f32 + e) + e;
        assert_eq!(chain, 1.0);
        // The even and odd sums meet before C: 2^100 + (-2^100) cancel first, so a small C
        // survives.
        let big = 2f32.powi(100);
        let a = [pair(big, -big)];
        let b = [pair(1.0, 1.0)];
        assert_eq!(dot(3.0, &a, &b), 3.0);
    }

    #[test]
    fn denormals_in_are_zero_and_out_are_flushed() {
        let tiny = f32::MIN_POSITIVE; // 2^-126, normal; a bf16 exactly
                                      // A denormal bf16 input counts as zero: 2^-127 (denormal) · 1 adds nothing.
        let den = f32::from_bits(0x0040_0000); // 2^-127
        assert_eq!(dot(0.0, &[pair(den, 0.0)], &[pair(1.0, 0.0)]), 0.0);
        // A product below the normal range (2^-126 · 2^-1) is flushed: the sum stays 0, where
        // an IEEE FMA would give the denormal 2^-127.
        assert_eq!(dot(0.0, &[pair(tiny, 0.0)], &[pair(0.5, 0.0)]), 0.0);
        assert_ne!(tiny.mul_add(0.5, 0.0), 0.0);
        // The FMA is fused: the even sum after 2^-126·1 takes 2^-126·2^-1 + 2^-126 =
        // 1.5·2^-126 (normal) in one rounding; a product flushed first would leave 2^-126.
        let a = [pair(tiny, 0.0), pair(tiny, 0.0)];
        let b = [pair(1.0, 0.0), pair(0.5, 0.0)];
        assert_eq!(dot(0.0, &a, &b), 1.5 * tiny);
        // A denormal C reads as zero.
        assert_eq!(dot(den, &[pair(0.0, 0.0)], &[pair(0.0, 0.0)]), 0.0);
    }

    #[test]
    fn loads_zero_past_the_shape_and_stores_only_it() {
        let mut m = Model::default();
        let cfg = TileConfig::new().tile(3, 2, 8);
        let src: Vec<u8> = (0..64).collect();
        let mut dst = vec![0xaau8; 64];
        // SAFETY: 2 rows of 8 bytes, 16 apart, inside both buffers.
        unsafe {
            m.configure(&cfg);
            m.load::<3>(src.as_ptr(), 16);
            m.store::<3>(dst.as_mut_ptr(), 20);
        }
        assert_eq!(&m.tiles[3][0][..8], &src[0..8]);
        assert_eq!(&m.tiles[3][1][..8], &src[16..24]);
        assert!(m.tiles[3][0][8..].iter().all(|&b| b == 0));
        assert!(m.tiles[3][2..].iter().all(|r| r.iter().all(|&b| b == 0)));
        assert_eq!(&dst[0..8], &src[0..8]);
        assert_eq!(&dst[20..28], &src[16..24]);
        assert!(dst[8..20].iter().chain(&dst[28..]).all(|&b| b == 0xaa));
    }

    #[test]
    #[should_panic(expected = "shapes do not fit")]
    fn mismatched_shapes_fault() {
        let mut m = Model::default();
        let cfg = TileConfig::new()
            .tile(0, 16, 64)
            .tile(1, 16, 64)
            .tile(2, 8, 64);
        // SAFETY: no memory is touched.
        unsafe {
            m.configure(&cfg);
            m.dpbf16ps::<0, 1, 2>();
        }
    }
}
