//! The plans of the convolution launches: which tile a GEMM gets ([`ConvTile`]), its grid, and
//! how its reduction axis K is split over blockIdx.z ([`ConvShape`]'s plans). Pure functions,
//! tested without a GPU; `cuda.rs` launches what they plan.

use kernels::launch::LaunchConfig;

use super::{ConvShape, Precision};

/// Tile sizes of the implicit-GEMM convolution (must equal conv.cu's TILE_M/TILE_N/TILE_K).
pub const CONV_TILE_M: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_N: usize = 64;
/// See [`CONV_TILE_M`].
pub const CONV_TILE_K: usize = 16;
/// Threads per conv block (conv.cu's THREADS).
pub const CONV_THREADS: u32 = 256;
/// Threads per bf16 conv block (conv_bf16.cu's BF_THREADS: 4 warps), in every tile shape.
pub const CONV_BF16_THREADS: u32 = 128;

/// The block tile of a conv GEMM, chosen by its row count M (output channels forward and for
/// the weight gradient, input channels for the data gradient): a 64-row tile at M = 16 (the
/// first stage of the CIFAR ResNets) would spend 3/4 of its work on padding rows. The kernel
/// names carry the suffix, in both precisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvTile {
    /// 16 rows (`_m16`), for M <= 16.
    M16,
    /// 32 rows (`_m32`), for 16 < M <= 32.
    M32,
    /// 64 rows (no suffix), for M > 32.
    M64,
}

impl ConvTile {
    /// The tile for a GEMM with `m` rows.
    pub fn for_rows(m: usize) -> ConvTile {
        match m {
            0..=16 => ConvTile::M16,
            17..=32 => ConvTile::M32,
            _ => ConvTile::M64,
        }
    }
    /// (rows, columns) of the block tile: fp32 tiles hold 4096 outputs (256 threads x 4 x 4),
    /// bf16 ones 4 warps of 32-column mma tiles.
    pub fn dims(self, p: Precision) -> (usize, usize) {
        match (p, self) {
            (Precision::Fp32, ConvTile::M16) => (16, 256),
            (Precision::Fp32, ConvTile::M32) => (32, 128),
            (Precision::Fp32, ConvTile::M64) => (CONV_TILE_M, CONV_TILE_N),
            (Precision::Bf16, ConvTile::M16) => (16, 128),
            (Precision::Bf16, ConvTile::M32) => (32, 128),
            (Precision::Bf16, ConvTile::M64) => (64, 64),
        }
    }
}

impl ConvShape {
    /// Split-K plan for the weight gradient: `(splits, k_chunk)`. The reduction axis
    /// K = N*OH*OW is cut into `splits` chunks of `k_chunk` (a multiple of 32) so that the
    /// grid has at least ~512 blocks even when the weight tensor is a single 64x64 tile.
    pub fn weight_grad_plan(&self) -> (usize, usize) {
        const TARGET_BLOCKS: usize = 512;
        const MIN_CHUNK: usize = 256; // keep each split's GEMM long enough to be worth a block
        let k_total = self.n * self.oh * self.ow;
        let tiles =
            self.c_out.div_ceil(CONV_TILE_M) * (self.c_in * self.k * self.k).div_ceil(CONV_TILE_N);
        let want = TARGET_BLOCKS.div_ceil(tiles).max(1);
        let chunk = k_total.div_ceil(want).max(MIN_CHUNK);
        // A multiple of both tiles' K (16 fp32, 32 bf16), so no split ends in a half tile.
        let chunk = chunk.div_ceil(2 * CONV_TILE_K) * (2 * CONV_TILE_K);
        let splits = k_total.div_ceil(chunk).max(1);
        (splits, chunk)
    }

    /// Workspace elements the weight gradient ([`super::cuda::conv2d`]) needs: splits * w_len.
    pub fn weight_grad_workspace_len(&self) -> usize {
        self.weight_grad_plan().0 * self.w_len()
    }

    /// Split-K plan of the forward pass, `(splits, k_chunk)`: one split (k_chunk = K) unless
    /// its grid alone would leave the GPU underfilled ([`FILL_BLOCKS`]).
    pub fn forward_plan(&self, p: Precision) -> (usize, usize) {
        let (gx, gy) = gemm_blocks(self.c_out, self.n * self.oh * self.ow, p);
        split_to_fill(gx * gy, self.c_in * self.k * self.k)
    }

    /// Split-K plan of the data gradient, as [`ConvShape::forward_plan`].
    pub fn backward_data_plan(&self, p: Precision) -> (usize, usize) {
        let (gx, gy) = gemm_blocks(self.c_in, self.n * self.h * self.w, p);
        split_to_fill(gx * gy, self.c_out * self.k * self.k)
    }

    /// Workspace elements the forward pass needs: splits * y_len, or 0 with one split.
    pub fn forward_workspace_len(&self, p: Precision) -> usize {
        match self.forward_plan(p).0 {
            1 => 0,
            splits => splits * self.y_len(),
        }
    }

    /// Workspace elements the data gradient needs: splits * x_len, or 0 with one split.
    pub fn backward_data_workspace_len(&self, p: Precision) -> usize {
        match self.backward_data_plan(p).0 {
            1 => 0,
            splits => splits * self.x_len(),
        }
    }
}

/// Blocks a forward or data-gradient grid needs to fill the GPU: ~2 per SM of a 132-SM
/// H100/H200. The late stages' small maps give fewer (ResNet-20's 8x8 stage: 128 blocks of
/// 64 x 64, one per SM, 4 warps each, and every block walks all of K with no other warp to hide
/// its load latency); those grids split K over blockIdx.z instead, so that more, shorter blocks
/// run at once, and one reduction adds the splits.
pub const FILL_BLOCKS: usize = 264;

/// The shortest K range a split keeps (4 bf16 K tiles): shorter ones cost more in the
/// reduction's traffic than they save.
pub const MIN_SPLIT_K: usize = 128;

/// `(splits, k_chunk)` for a grid of `blocks` blocks reducing over `k`; k_chunk is a multiple
/// of both tiles' K step (16 fp32, 32 bf16), so no split ends inside a tile.
fn split_to_fill(blocks: usize, k: usize) -> (usize, usize) {
    if blocks >= FILL_BLOCKS || k < 2 * MIN_SPLIT_K {
        return (1, k);
    }
    let want = FILL_BLOCKS.div_ceil(blocks);
    let chunk = k.div_ceil(want).max(MIN_SPLIT_K);
    let chunk = chunk.div_ceil(2 * CONV_TILE_K) * (2 * CONV_TILE_K);
    match k.div_ceil(chunk) {
        1 => (1, k),
        splits => (splits, chunk),
    }
}

/// (column blocks, row blocks) of a GEMM with `m` rows and `ncols` columns.
fn gemm_blocks(m: usize, ncols: usize, p: Precision) -> (usize, usize) {
    let (bm, bn) = ConvTile::for_rows(m).dims(p);
    (ncols.div_ceil(bn), m.div_ceil(bm))
}

fn gemm_grid(m: usize, ncols: usize, z: usize, p: Precision) -> LaunchConfig {
    let (gx, gy) = gemm_blocks(m, ncols, p);
    let threads = match p {
        Precision::Fp32 => CONV_THREADS,
        Precision::Bf16 => CONV_BF16_THREADS,
    };
    LaunchConfig {
        grid_dim: (gx as u32, gy as u32, z as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launch configuration of `conv2d_forward`'s GEMM, z = its splits (pure; exposed for tests).
pub fn conv2d_forward_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_out, s.n * s.oh * s.ow, s.forward_plan(p).0, p)
}

/// Launch configuration of `conv2d_backward_data`'s GEMM, z = its splits (pure; exposed for
/// tests).
pub fn conv2d_backward_data_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_in, s.n * s.h * s.w, s.backward_data_plan(p).0, p)
}

/// Launch configuration of `conv2d_backward_weight_partial` (pure; exposed for tests).
pub fn conv2d_backward_weight_config(s: &ConvShape, p: Precision) -> LaunchConfig {
    gemm_grid(s.c_out, s.c_in * s.k * s.k, s.weight_grad_plan().0, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: usize, c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize) -> ConvShape {
        ConvShape::new(&[n, c_in, hw, hw], &[c_out, c_in, k, k], stride)
    }

    #[test]
    fn conv_grids_cover_the_gemms() {
        let s = conv(128, 16, 32, 32, 3, 2); // CIFAR stage transition
                                             // fp32 at 32 output channels: the 32 x 128 tile.
        let f = conv2d_forward_config(&s, Precision::Fp32);
        assert_eq!(
            f.grid_dim,
            ((128 * 16 * 16usize).div_ceil(128) as u32, 1, 1)
        );
        assert_eq!(f.block_dim, (CONV_THREADS, 1, 1));
        // bf16 at 32 output channels: the 32 x 128 tile.
        let b = conv2d_forward_config(&s, Precision::Bf16);
        assert_eq!(
            b.grid_dim,
            ((128 * 16 * 16usize).div_ceil(128) as u32, 1, 1)
        );
        assert_eq!(b.block_dim, (CONV_BF16_THREADS, 1, 1));
        for (m, tile, rows) in [
            (1, ConvTile::M16, 16),
            (16, ConvTile::M16, 16),
            (17, ConvTile::M32, 32),
            (32, ConvTile::M32, 32),
            (33, ConvTile::M64, 64),
            (512, ConvTile::M64, 64),
        ] {
            assert_eq!(ConvTile::for_rows(m), tile, "m = {m}");
            assert_eq!(tile.dims(Precision::Bf16).0, rows);
            assert_eq!(tile.dims(Precision::Fp32).0, rows);
            let (r, c) = tile.dims(Precision::Fp32);
            assert_eq!(
                r * c,
                16 * CONV_THREADS as usize,
                "4 x 4 outputs per fp32 thread"
            );
        }
        // Backward data has M = 16 input channels: the 16 x 256 tile.
        let d = conv2d_backward_data_config(&s, Precision::Fp32);
        assert_eq!(
            d.grid_dim,
            ((128 * 32 * 32usize).div_ceil(256) as u32, 1, 1)
        );
        // The weight gradient has M = 32 output channels, Ncols = 16 * 9: the 32 x 128 tile.
        let w = conv2d_backward_weight_config(&s, Precision::Fp32);
        assert_eq!(
            (w.grid_dim.0, w.grid_dim.1),
            ((16 * 9usize).div_ceil(128) as u32, 1)
        );
        assert_eq!(w.grid_dim.2 as usize, s.weight_grad_plan().0);
    }

    #[test]
    fn forward_and_data_grids_split_only_when_too_small_and_cover_k_once() {
        for p in [Precision::Fp32, Precision::Bf16] {
            // ResNet-20 at batch 128: stage 1 fills the GPU alone; stage 3 (8x8 maps, 64
            // channels: 128 blocks of 64 x 64) splits its K = 576.
            let stage1 = conv(128, 16, 32, 16, 3, 1);
            assert_eq!(stage1.forward_plan(p), (1, 16 * 9), "{p}");
            assert_eq!(stage1.forward_workspace_len(p), 0);
            assert_eq!(stage1.backward_data_workspace_len(p), 0);
            let stage3 = conv(128, 64, 8, 64, 3, 1);
            let (splits, _) = stage3.forward_plan(p);
            assert!(splits > 1, "{p}: {:?}", stage3.forward_plan(p));
            assert_eq!(stage3.forward_workspace_len(p), splits * stage3.y_len());
            assert_eq!(
                conv2d_forward_config(&stage3, p).grid_dim.2 as usize,
                splits
            );
            for s in [
                stage1,
                stage3,
                conv(128, 512, 4, 512, 3, 1), // depth 34, width 64, last stage
                conv(128, 128, 4, 128, 3, 1), // depth 34, width 16, last stage
                conv(1, 67, 4, 3, 3, 2),
                conv(1, 1, 1, 1, 1, 1),
                conv(128, 32, 16, 64, 1, 2),
            ] {
                let k_fwd = s.c_in * s.k * s.k;
                let k_bwd = s.c_out * s.k * s.k;
                for ((splits, chunk), k) in
                    [(s.forward_plan(p), k_fwd), (s.backward_data_plan(p), k_bwd)]
                {
                    assert!(splits * chunk >= k, "{s:?}: splits do not cover K");
                    if splits > 1 {
                        assert!((splits - 1) * chunk < k, "{s:?}: a split would be empty");
                        assert_eq!(chunk % (2 * CONV_TILE_K), 0, "{s:?}");
                        assert!(chunk >= MIN_SPLIT_K, "{s:?}");
                    } else {
                        assert_eq!(chunk, k, "{s:?}: one split takes all of K");
                    }
                }
            }
        }
    }

    #[test]
    fn weight_grad_split_covers_k_exactly_once() {
        for s in [
            conv(128, 3, 32, 16, 3, 1),
            conv(128, 16, 32, 16, 3, 1),
            conv(128, 64, 8, 64, 3, 1),
            conv(1, 1, 1, 1, 1, 1),
            conv(3, 5, 7, 9, 3, 2),
            conv(128, 32, 16, 64, 1, 2),
        ] {
            let (splits, chunk) = s.weight_grad_plan();
            let k = s.n * s.oh * s.ow;
            assert!(splits >= 1 && chunk % (2 * CONV_TILE_K) == 0, "{s:?}");
            assert!(splits * chunk >= k, "{s:?}: splits do not cover K");
            assert!((splits - 1) * chunk < k, "{s:?}: a split would be empty");
            assert_eq!(s.weight_grad_workspace_len(), splits * s.w_len());
            // The kernel computes split offsets in int.
            assert!(splits * chunk < i32::MAX as usize);
        }
    }
}
