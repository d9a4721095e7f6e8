//! The fused batch norm's passes over whole tensors, written once for every SIMD body: each
//! body (`fast_avx512.rs`, `fast_avx2.rs`) provides the four per-plane kernels of
//! [`PlaneKernels`]; the functions here thread over images (rayon, one image per task), pick
//! the kernel's ReLU mode per plane and add the per-image sums in image order, so results are
//! independent of the thread count. Also the [`ReluMask`] by which the backward knows which
//! outputs a fused ReLU zeroed, and its per-plane view.

use crate::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
pub(crate) const NO_RELU: u8 = 0;
pub(crate) const BY_OUTPUT: u8 = 1;
pub(crate) const BY_AFFINE: u8 = 2;

/// One plane's view of the ReLU mask.
#[derive(Clone, Copy)]
pub(crate) struct PlaneMask {
    /// The plane's first output value (`BY_OUTPUT`).
    pub out: *const f32,
    /// The channel's affine map (`BY_AFFINE`).
    pub scale: f32,
    pub shift: f32,
}

/// The mode and the per-plane mask of plane `ch` of image `img`.
fn plane_mask(relu: ReluMask<'_>, img: usize, ch: usize, c: usize, hw: usize) -> (u8, PlaneMask) {
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

/// One SIMD body's per-plane kernels: `n` contiguous values of one channel of one image.
///
/// # Safety
/// Every method needs the body's instructions (the caller has detected them) and pointers
/// valid for `n` values.
pub(crate) trait PlaneKernels {
    /// `(Σ (v − k), Σ (v − k)²)` over `p`, in f64.
    unsafe fn moments(p: &[f32], k: f64) -> (f64, f64);
    /// `out = a·x + b` (+ `res` with `RES`) (then `max(0, v)` with `RELU`).
    unsafe fn affine<const RELU: bool, const RES: bool>(
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        n: usize,
        a: f32,
        b: f32,
    );
    /// `(Σ g, Σ g·(x − mean))` in f64, `g` = `dy` under the ReLU mask of mode `MODE`.
    unsafe fn grad_sums<const MODE: u8>(
        x: *const f32,
        dy: *const f32,
        pm: PlaneMask,
        n: usize,
        mean: f64,
    ) -> (f64, f64);
    /// `dx = k·g + a·x + b`, `g` as in [`Self::grad_sums`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn backward<const MODE: u8>(
        x: *const f32,
        dy: *const f32,
        pm: PlaneMask,
        dx: *mut f32,
        n: usize,
        k: f32,
        a: f32,
        b: f32,
    );
}

/// Per channel `(Σ_image a, Σ_image b)` of per-image, per-channel pairs, added in image order.
fn sum_images(per_image: &[Vec<(f64, f64)>], c: usize) -> Vec<(f64, f64)> {
    (0..c)
        .map(|ch| {
            per_image.iter().fold((0.0, 0.0), |acc, img| {
                (acc.0 + img[ch].0, acc.1 + img[ch].1)
            })
        })
        .collect()
}

/// Per channel, the batch mean and biased variance of `x` (f64).
///
/// # Safety
/// `K`'s instructions.
pub(crate) unsafe fn moments<K: PlaneKernels>(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (n, c, h, w) = x.dims4();
    let hw = h * w;
    let data = x.data();
    // Each channel's sums are taken relative to its first value (exact in f64), so a mean far
    // from zero does not cancel the variance's digits away.
    let shift: Vec<f64> = (0..c).map(|ch| data[ch * hw] as f64).collect();
    let per_image: Vec<Vec<(f64, f64)>> = data
        .par_chunks(c * hw)
        .map(|img| {
            (0..c)
                .map(|ch| K::moments(&img[ch * hw..][..hw], shift[ch]))
                .collect()
        })
        .collect();
    let count = (n * hw) as f64;
    let (mut means, mut vars) = (vec![0.0; c], vec![0.0; c]);
    for (ch, (s, q)) in sum_images(&per_image, c).into_iter().enumerate() {
        let d = s / count;
        means[ch] = shift[ch] + d;
        // Rounding can take the one-pass variance a hair below 0; clamp it, but let a NaN
        // through (`f64::max` would turn it into 0), as the reference's two passes do.
        let var = q / count - d * d;
        vars[ch] = if var < 0.0 { 0.0 } else { var };
    }
    (means, vars)
}

/// The per-channel affine map (+ `residual`) (+ ReLU) into a fresh tensor.
///
/// # Safety
/// `K`'s instructions.
pub(crate) unsafe fn affine<K: PlaneKernels>(
    x: &Tensor,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    residual: Option<&Tensor>,
) -> Tensor {
    let (_, c, h, w) = x.dims4();
    let (hw, len) = (h * w, c * h * w);
    let res = residual.map(|r| r.data());
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(len)
            .zip(x.data().par_chunks(len))
            .enumerate()
            .for_each(|(i, (o, xi))| {
                for ch in 0..c {
                    let at = ch * hw;
                    let (src, dst) = (xi.as_ptr().add(at), o.as_mut_ptr().add(at).cast());
                    let r = res.map_or(std::ptr::null(), |r| r[i * len + at..].as_ptr());
                    let (a, b) = (scale[ch], shift[ch]);
                    match (relu, res.is_some()) {
                        (false, false) => K::affine::<false, false>(src, r, dst, hw, a, b),
                        (true, false) => K::affine::<true, false>(src, r, dst, hw, a, b),
                        (false, true) => K::affine::<false, true>(src, r, dst, hw, a, b),
                        (true, true) => K::affine::<true, true>(src, r, dst, hw, a, b),
                    }
                }
            })
    };
    // SAFETY: every plane of every image is written.
    Tensor::host_filled(x.shape(), fill)
}

/// Per channel `(Σ g, Σ g·(x − mean))` with `g` = `dy` under the ReLU mask.
///
/// # Safety
/// `K`'s instructions.
pub(crate) unsafe fn grad_sums<K: PlaneKernels>(
    x: &Tensor,
    dy: &Tensor,
    relu: ReluMask<'_>,
    mean: &[f32],
) -> Vec<(f64, f64)> {
    let (_, c, h, w) = x.dims4();
    let hw = h * w;
    let per_image: Vec<Vec<(f64, f64)>> = x
        .data()
        .par_chunks(c * hw)
        .zip(dy.data().par_chunks(c * hw))
        .enumerate()
        .map(|(i, (xi, gi))| {
            (0..c)
                .map(|ch| {
                    let at = ch * hw;
                    let (xp, gp, m) = (xi.as_ptr().add(at), gi.as_ptr().add(at), mean[ch] as f64);
                    match plane_mask(relu, i, ch, c, hw) {
                        (BY_OUTPUT, pm) => K::grad_sums::<BY_OUTPUT>(xp, gp, pm, hw, m),
                        (BY_AFFINE, pm) => K::grad_sums::<BY_AFFINE>(xp, gp, pm, hw, m),
                        (_, pm) => K::grad_sums::<NO_RELU>(xp, gp, pm, hw, m),
                    }
                })
                .collect()
        })
        .collect();
    sum_images(&per_image, c)
}

/// The input gradient `dx = k·g + a·x + b` (per channel) into a fresh tensor.
///
/// # Safety
/// `K`'s instructions.
pub(crate) unsafe fn backward_apply<K: PlaneKernels>(
    x: &Tensor,
    dy: &Tensor,
    relu: ReluMask<'_>,
    k: &[f32],
    a: &[f32],
    b: &[f32],
) -> Tensor {
    let (_, c, h, w) = x.dims4();
    let (hw, len) = (h * w, c * h * w);
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(len)
            .zip(x.data().par_chunks(len))
            .zip(dy.data().par_chunks(len))
            .enumerate()
            .for_each(|(i, ((dxi, xi), gi))| {
                for ch in 0..c {
                    let at = ch * hw;
                    let (xp, gp, dp) = (
                        xi.as_ptr().add(at),
                        gi.as_ptr().add(at),
                        dxi.as_mut_ptr().add(at).cast(),
                    );
                    let (kk, aa, bb) = (k[ch], a[ch], b[ch]);
                    match plane_mask(relu, i, ch, c, hw) {
                        (BY_OUTPUT, pm) => K::backward::<BY_OUTPUT>(xp, gp, pm, dp, hw, kk, aa, bb),
                        (BY_AFFINE, pm) => K::backward::<BY_AFFINE>(xp, gp, pm, dp, hw, kk, aa, bb),
                        (_, pm) => K::backward::<NO_RELU>(xp, gp, pm, dp, hw, kk, aa, bb),
                    }
                }
            })
    };
    // SAFETY: every plane of every image is written.
    Tensor::host_filled(x.shape(), fill)
}
