//! Per-channel input normalisation statistics.

use crate::format::{Split, IMAGE_BYTES};

const PLANE: usize = IMAGE_BYTES / 3;

/// Per-channel mean and standard deviation of pixels scaled to `[0, 1]`; inputs are
/// fed to the network as `(pixel / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// No normalisation beyond scaling to `[0, 1]`.
    pub const IDENTITY: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Mean and population standard deviation (divide by N, as `numpy.std`) per channel
    /// over every pixel of the split. Accumulates integer sums, then f64, so the result
    /// does not depend on the image order and has no f32 drift over 51M pixels.
    ///
    /// Degenerate cases keep the normalisation finite: an empty split gives
    /// [`Normalization::IDENTITY`], and a constant channel gets `std = 1`.
    pub fn from_split(split: &Split) -> Self {
        let n = split.len();
        if n == 0 {
            return Self::IDENTITY;
        }
        let mut sum = [0u64; 3];
        let mut sum_sq = [0u64; 3];
        for img in split.images.chunks_exact(IMAGE_BYTES) {
            for (c, plane) in img.chunks_exact(PLANE).enumerate() {
                let (mut s, mut q) = (0u64, 0u64);
                for &p in plane {
                    let p = p as u64;
                    s += p;
                    q += p * p;
                }
                sum[c] += s;
                sum_sq[c] += q;
            }
        }
        let count = (n * PLANE) as f64;
        let mut mean = [0f32; 3];
        let mut std = [1f32; 3];
        for c in 0..3 {
            let m = sum[c] as f64 / count / 255.0;
            let ex2 = sum_sq[c] as f64 / count / (255.0 * 255.0);
            let var = (ex2 - m * m).max(0.0);
            mean[c] = m as f32;
            if var > 0.0 {
                std[c] = var.sqrt() as f32;
            }
        }
        Normalization { mean, std }
    }
}
