//! How the fused batch norm's backward knows which outputs a ReLU zeroed: the [`ReluMask`] the
//! dispatch passes in, and its per-plane view, [`plane_mask`], that both SIMD bodies
//! (`fast.rs`'s AVX-512 one and `fast_avx2.rs`) read their lanes through.

use crate::Tensor;

/// How the backward pass knows which outputs a fused ReLU zeroed.
#[derive(Clone, Copy)]
pub(crate) enum ReluMask<'a> {
    /// No ReLU followed.
    None,
    /// Its output: zeroed where `out <= 0` (kept where NaN).
    Output(&'a Tensor),
    /// The forward's per-channel affine map: zeroed where `scale·x + shift <= 0` — the same
    /// FMA the forward computed, so the same decision, without reading the output.
    Affine(&'a [f32], &'a [f32]),
}

/// Which lanes a fused ReLU kept, per plane: none masked, `!(out <= 0)`, or
/// `!(scale·x + shift <= 0)`.
pub(super) const NO_RELU: u8 = 0;
pub(super) const BY_OUTPUT: u8 = 1;
pub(super) const BY_AFFINE: u8 = 2;

/// One plane's view of the ReLU mask.
#[derive(Clone, Copy)]
pub(super) struct PlaneMask {
    /// The plane's first output value (`BY_OUTPUT`).
    pub out: *const f32,
    /// The channel's affine map (`BY_AFFINE`).
    pub scale: f32,
    pub shift: f32,
}

/// The mode and the per-plane mask of plane `ch` of image `img`.
pub(super) fn plane_mask(
    relu: ReluMask<'_>,
    img: usize,
    ch: usize,
    c: usize,
    hw: usize,
) -> (u8, PlaneMask) {
    let none = PlaneMask {
        out: std::ptr::null(),
        scale: 0.0,
        shift: 0.0,
    };
    match relu {
        ReluMask::None => (NO_RELU, none),
        ReluMask::Output(o) => (
            BY_OUTPUT,
            PlaneMask {
                out: o.data()[(img * c + ch) * hw..].as_ptr(),
                ..none
            },
        ),
        ReluMask::Affine(scale, shift) => (
            BY_AFFINE,
            PlaneMask {
                scale: scale[ch],
                shift: shift[ch],
                ..none
            },
        ),
    }
}
