//! The fast CPU convolution: the input read in place from padded copies, or im2col'd where it
//! cannot be (`pack.rs`, `plan.rs`), and micro-kernels image by image or in fixed groups of
//! images. Which micro-kernels, per pass and shape, is [`choose`]'s decision ([`ConvKernels`]):
//! fp32 on AVX-512 (`gemm_f32.rs`, `wgrad.rs`) or AVX2 (`gemm::avx2_f32`), bf16 on `vdpbf16ps`
//! (`gemm_bf16.rs`), on AMX tiles (`gemm::amx`), or on the fp32 kernels with operands rounded
//! to bf16 as they are packed.
//! - forward: `y_i = W · col(x_i)`;
//! - input gradient, stride 1: the forward conv of `dy` with the turned weights
//!   (`W'[ci][co][ky][kx] = W[co][ci][k-1-ky][k-1-kx]`), so it gathers instead of scattering;
//!   stride 2: `col2im(Wᵀ · dy_i)`;
//! - weight gradient: `dW += Σ_i dy_i · col(x_i)ᵀ` over fixed groups of images, the groups'
//!   sums added in order: from a channels-last copy of the input where the input channels come
//!   in whole vectors (bf16 pairs: two images per lane), else lane-sum tiles over im2col rows.
//!
//! Each function returns `None` (or `false`) when no fast kernel runs the pass here, and the
//! caller runs the reference.

// Off x86-64 the fast bodies compile out, leaving their helpers unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use crate::conv::ConvShape;
use crate::cpu::{bf16_dot_preferred, kernels, Kernels};
use crate::{Precision, Tensor};
use std::sync::atomic::{AtomicU8, Ordering};

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// The micro-kernels one convolution pass runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernels {
    /// fp32 FMAs on AVX2 (bf16: on operands rounded to bf16 as they are packed — the twin's
    /// exact products, f32 sums).
    Avx2,
    /// fp32 FMAs on AVX-512 (bf16 likewise).
    Avx512,
    /// `vdpbf16ps` (bf16).
    Avx512Bf16,
    /// AMX tiles (bf16).
    Amx,
    /// The AMX tile logic on the plain-Rust model of the instructions: any CPU with AVX2
    /// (tests).
    AmxModel,
}

impl ConvKernels {
    const ALL: [ConvKernels; 5] = [
        ConvKernels::Avx2,
        ConvKernels::Avx512,
        ConvKernels::Avx512Bf16,
        ConvKernels::Amx,
        ConvKernels::AmxModel,
    ];

    pub fn is_amx(self) -> bool {
        matches!(self, ConvKernels::Amx | ConvKernels::AmxModel)
    }

    fn bit(self) -> u8 {
        1 << ConvKernels::ALL.iter().position(|&k| k == self).unwrap()
    }

    /// The name `train bench` prints; bf16 on the fp32 kernels is marked as such.
    fn name(self, precision: Precision) -> &'static str {
        match (self, precision) {
            (ConvKernels::Avx2, Precision::Fp32) => "avx2",
            (ConvKernels::Avx2, Precision::Bf16) => "avx2 (bf16-rounded operands)",
            (ConvKernels::Avx512, Precision::Fp32) => "avx512",
            (ConvKernels::Avx512, Precision::Bf16) => "avx512 (bf16-rounded operands)",
            (ConvKernels::Avx512Bf16, _) => "vdpbf16ps",
            (ConvKernels::Amx, _) => "amx",
            (ConvKernels::AmxModel, _) => "amx model",
        }
    }
}

/// The shapes the fast path takes: strides 1 and 2 (every ResNet convolution).
fn fits(stride: usize) -> bool {
    stride == 1 || stride == 2
}

/// What runs `pass` of a convolution of geometry `g` in `precision` on a CPU running `level`
/// (`dot`: whether `vdpbf16ps` beats fp32 on rounded operands, [`bf16_dot_preferred`]);
/// `None`: the reference. fp32: the widest fp32 kernels. bf16: AMX where the shape fills its
/// tiles, else `vdpbf16ps` where it pays, else the fp32 kernels on rounded operands — so bf16
/// is never a slower kernel than fp32 on the same CPU.
pub fn choose(
    level: Kernels,
    dot: bool,
    precision: Precision,
    pass: Pass,
    g: &ConvShape,
) -> Option<ConvKernels> {
    if !fits(g.stride) {
        return None;
    }
    Some(match (precision, level) {
        (_, Kernels::Reference) => return None,
        (_, Kernels::Avx2) => ConvKernels::Avx2,
        (Precision::Fp32, _) | (Precision::Bf16, Kernels::Avx512) => ConvKernels::Avx512,
        (Precision::Bf16, Kernels::Amx) if amx_fits(pass, g) => ConvKernels::Amx,
        (Precision::Bf16, _) if dot => ConvKernels::Avx512Bf16,
        (Precision::Bf16, _) => ConvKernels::Avx512,
    })
}

/// Whether AMX takes `pass` of `g` (shapes whose tiles are at least half full).
pub fn amx_fits(pass: Pass, g: &ConvShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::amx_fits(pass, g);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pass, g);
        false
    }
}

/// Which kernels ran each pass, per precision: a bit per [`ConvKernels`], and the top bit for
/// the reference.
static USED: [[AtomicU8; 2]; 3] = [const { [const { AtomicU8::new(0) }; 2] }; 3];
const REFERENCE_BIT: u8 = 0x80;

fn record(pass: Pass, precision: Precision, bit: u8) {
    let p = usize::from(precision == Precision::Bf16);
    USED[pass as usize][p].fetch_or(bit, Ordering::Relaxed);
}

/// The kernels this process's convolutions in `precision` ran so far, per pass:
/// `fwd amx+avx512 (bf16-rounded operands), bwd-data amx, bwd-weight amx` (`train bench`).
pub fn kernels_used(precision: Precision) -> String {
    let p = usize::from(precision == Precision::Bf16);
    let passes = [
        (Pass::Forward, "fwd"),
        (Pass::BackwardData, "bwd-data"),
        (Pass::BackwardWeight, "bwd-weight"),
    ];
    passes
        .iter()
        .filter_map(|&(pass, label)| {
            let bits = USED[pass as usize][p].load(Ordering::Relaxed);
            let mut names: Vec<&str> = ConvKernels::ALL
                .iter()
                .filter(|k| bits & k.bit() != 0)
                .map(|k| k.name(precision))
                .collect();
            if bits & REFERENCE_BIT != 0 {
                names.push("reference");
            }
            (!names.is_empty()).then(|| format!("{label} {}", names.join("+")))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernels a pass runs with the kernels in use, recorded; `None`: the reference.
fn pick(precision: Precision, pass: Pass, g: &ConvShape) -> Option<ConvKernels> {
    let k = choose(kernels(), bf16_dot_preferred(), precision, pass, g);
    record(pass, precision, k.map_or(REFERENCE_BIT, ConvKernels::bit));
    k
}

/// Whether the fast path runs `precision` with the kernels in use (every family runs both).
pub fn available(precision: Precision) -> bool {
    let _ = precision;
    kernels() >= Kernels::Avx2
}

/// `y = conv(x, weight)`, or `None` without fast kernels for it.
pub fn forward(x: &Tensor, weight: &Tensor, stride: usize, precision: Precision) -> Option<Tensor> {
    let g = ConvShape::new(x.shape(), weight.shape(), stride);
    let kern = pick(precision, Pass::Forward, &g)?;
    Some(forward_on(kern, x, weight, stride, precision))
}

/// The input gradient of `y = conv(x, weight)`, or `None` without fast kernels for it.
pub fn backward_data(
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
    precision: Precision,
) -> Option<Tensor> {
    let g = ConvShape::new(x_shape, weight.shape(), stride);
    let kern = pick(precision, Pass::BackwardData, &g)?;
    Some(backward_data_on(
        kern, dy, weight, x_shape, stride, precision,
    ))
}

/// Accumulates the weight gradient of `y = conv(x, weight)` into `dweight`; `false` (nothing
/// done) without fast kernels for it.
pub fn backward_weight(
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) -> bool {
    let g = ConvShape::new(x.shape(), dweight.shape(), stride);
    let Some(kern) = pick(precision, Pass::BackwardWeight, &g) else {
        return false;
    };
    backward_weight_on(kern, x, dy, stride, dweight, precision);
    true
}

/// Panics unless this CPU (and process) can run `kern`: the `_on` functions run what they
/// are told, so a caller that names kernels (tests, benches) must ask [`runs`] first.
#[track_caller]
fn check_runs(kern: ConvKernels, precision: Precision) {
    assert!(
        runs(kern, precision),
        "{kern:?} cannot run {precision} on this CPU"
    );
}

/// Whether this CPU can run `kern` for `precision` (whatever `RESNET_CPU_KERNELS` says).
pub fn runs(kern: ConvKernels, precision: Precision) -> bool {
    let cpu = crate::cpu::supported();
    let bf16 = precision == Precision::Bf16;
    match kern {
        ConvKernels::Avx2 => cpu >= Kernels::Avx2,
        ConvKernels::Avx512 => cpu >= Kernels::Avx512,
        ConvKernels::Avx512Bf16 => bf16 && cpu >= Kernels::Avx512Bf16,
        ConvKernels::Amx => bf16 && cpu >= Kernels::Amx,
        ConvKernels::AmxModel => bf16 && cpu >= Kernels::Avx2,
    }
}

/// [`forward`] on the named kernels. Panics where they cannot run ([`runs`]).
pub fn forward_on(
    kern: ConvKernels,
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    precision: Precision,
) -> Tensor {
    check_runs(kern, precision);
    assert!(
        fits(stride),
        "stride {stride}: the fast convolution takes 1 and 2"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the instructions were checked.
    return unsafe { x86::forward(kern, x, weight, stride, precision) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no fast kernels off x86-64 ({x:?}, {weight:?})")
}

/// [`backward_data`] on the named kernels. Panics where they cannot run ([`runs`]).
pub fn backward_data_on(
    kern: ConvKernels,
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
    precision: Precision,
) -> Tensor {
    check_runs(kern, precision);
    assert!(
        fits(stride),
        "stride {stride}: the fast convolution takes 1 and 2"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the instructions were checked.
    return unsafe { x86::backward_data(kern, dy, weight, x_shape, stride, precision) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no fast kernels off x86-64 ({dy:?}, {weight:?}, {x_shape:?})")
}

/// [`backward_weight`] on the named kernels. Panics where they cannot run ([`runs`]), and for
/// AMX where [`choose`] would not take it (input channels not in whole 16-lane vectors).
pub fn backward_weight_on(
    kern: ConvKernels,
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) {
    check_runs(kern, precision);
    assert!(
        fits(stride),
        "stride {stride}: the fast convolution takes 1 and 2"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the instructions were checked.
    unsafe {
        x86::backward_weight(kern, x, dy, stride, dweight, precision)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no fast kernels off x86-64 ({x:?}, {dy:?}, {dweight:?})")
}

#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(target_arch = "x86_64")]
mod pack_avx2;
#[cfg(target_arch = "x86_64")]
mod plan;
#[cfg(target_arch = "x86_64")]
mod wgrad;
#[cfg(target_arch = "x86_64")]
mod x86;
