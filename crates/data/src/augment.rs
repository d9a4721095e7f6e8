//! Turning one raw image into a normalised, augmented `f32` network input.

use crate::format::{IMAGE_BYTES, IMAGE_SIDE};
use crate::normalize::Normalization;

/// Largest crop offset: the standard CIFAR recipe pads by 4 pixels.
pub const MAX_SHIFT: i32 = 4;
/// `f32` values per written sample: 3 x 32 x 32.
pub const SAMPLE_LEN: usize = IMAGE_BYTES;

const SIDE: i32 = IMAGE_SIDE as i32;
const PLANE: usize = IMAGE_SIDE * IMAGE_SIDE;

/// One sample's augmentation: a crop of the zero-padded image at offset `(dx, dy)`
/// relative to the unpadded image (each in `-4..=4`), then an optional horizontal flip
/// of the cropped result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SampleAug {
    pub dx: i32,
    pub dy: i32,
    pub flip: bool,
}

impl SampleAug {
    /// No crop shift, no flip.
    pub const IDENTITY: SampleAug = SampleAug {
        dx: 0,
        dy: 0,
        flip: false,
    };
}

/// Writes the normalised, augmented CHW image into `out` (`3 * 32 * 32` floats).
///
/// Convention (matches torchvision `RandomCrop(32, padding=4)` then
/// `RandomHorizontalFlip()` then `Normalize(mean, std)`):
///
/// ```text
/// out[c][y][x] = (P(c, y + dy, x' + dx) / 255 - mean[c]) / std[c],
///     x' = 31 - x if flip else x
/// ```
///
/// where `P` is the raw image with `P = 0` outside `0..32`: padding is zero in raw pixel
/// space, so padded positions become `-mean[c] / std[c]` after normalisation. The flip
/// mirrors the *cropped* image; equivalently, flip the raw image and crop it at
/// `(-dx, dy)`.
///
/// Panics if `image` is not [`IMAGE_BYTES`] long or `out` is not [`SAMPLE_LEN`] long.
pub fn write_sample(image: &[u8], aug: SampleAug, norm: &Normalization, out: &mut [f32]) {
    assert_eq!(image.len(), IMAGE_BYTES, "image must be 3*32*32 bytes");
    assert_eq!(out.len(), SAMPLE_LEN, "out must hold 3*32*32 floats");
    for c in 0..3 {
        let scale = 1.0 / (255.0 * norm.std[c]);
        let pad = -norm.mean[c] / norm.std[c];
        let src = &image[c * PLANE..(c + 1) * PLANE];
        let dst = &mut out[c * PLANE..(c + 1) * PLANE];
        for (y, row_out) in dst.chunks_exact_mut(IMAGE_SIDE).enumerate() {
            let sy = y as i32 + aug.dy;
            if !(0..SIDE).contains(&sy) {
                row_out.fill(pad);
                continue;
            }
            let row = &src[sy as usize * IMAGE_SIDE..(sy as usize + 1) * IMAGE_SIDE];
            for (x, o) in row_out.iter_mut().enumerate() {
                let xc = if aug.flip {
                    SIDE - 1 - x as i32
                } else {
                    x as i32
                };
                let sx = xc + aug.dx;
                *o = if (0..SIDE).contains(&sx) {
                    // Same formula as the padding value so that a shifted pixel of value 0
                    // and a padded pixel are bit-identical.
                    row[sx as usize] as f32 * scale + pad
                } else {
                    pad
                };
            }
        }
    }
}
