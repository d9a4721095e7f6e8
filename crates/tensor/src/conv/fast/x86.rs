//! The x86-64 body of [`super`]: each pass as per-image kernel calls over a [`Plan`], on the
//! kernels [`ConvKernels`] names: AVX-512 or AVX2 fp32 micro-kernels (bf16: on operands
//! rounded as they are packed), `vdpbf16ps`, or AMX tiles (real, or the model in tests).

use super::pack;
use super::pack_avx2 as avx2_pack;
use super::plan::{Layout, Plan, Tiles};
use super::wgrad;
use super::{ConvKernels, Pass};
use crate::conv::reference::col2im;
use crate::conv::ConvShape;
use crate::gemm::amx::{model::Model, real::Real, tile as amx_tile};
use crate::gemm::avx2_f32;
use crate::gemm::bf16::{self as gemm_bf16, PackedPairs};
use crate::gemm::fp32::{self as gemm_f32, PackedA, PixelGrid};
use crate::{Precision, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Per-thread scratch, kept between calls (fresh buffers of this size are fresh pages from the
/// OS every time). The padded images in it rely on zero borders that only their interiors are
/// rewritten over ([`pack::pad_image`]): [`with_scratch`] zeroes everything when the plan changes.
#[derive(Default)]
struct Scratch {
    plan: Option<(ConvShape, Layout)>,
    xp: Vec<f32>,
    col: Vec<f32>,
    pairs: Vec<u32>,
    rows: Vec<f32>,
    channels_last: Vec<f32>,
    channels_last_pairs: Vec<u32>,
    dy_pairs: Vec<u32>,
    /// bf16-rounded copies of `dy` (the fp32 kernels' A operand on rounded operands).
    dy_rounded: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch, prepared for `plan`.
fn with_scratch<R>(plan: &Plan, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let key = Some((plan.g, plan.layout));
        if s.plan != key {
            s.xp.fill(0.0);
            s.col.fill(0.0);
            s.rows.fill(0.0);
            s.pairs.fill(0);
            s.channels_last.fill(0.0);
            s.channels_last_pairs.fill(0);
            s.dy_pairs.fill(0);
            s.dy_rounded.fill(0.0);
            s.plan = key;
        }
        f(&mut s)
    })
}

/// `len` elements of `v` starting at a 64-byte boundary (so whole vectors at multiples of 16
/// elements from the start are aligned loads); `v` grows (all zeros) if too short. The start
/// stays where it is while `v` does not grow.
fn sized<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    let slack = 64 / std::mem::size_of::<T>();
    if v.len() < len + slack {
        v.clear();
        v.resize(len + slack, T::default());
    }
    let skip = v.as_ptr().align_offset(64).min(slack);
    &mut v[skip..skip + len]
}

/// How the fp32 kernels' operands are copied: AVX-512 copies, or AVX2 copies that round to
/// bf16 (`round`) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packer {
    Avx512,
    Avx2 { round: bool },
}

/// The fp32 micro-kernels and the packer of their operands, for `kern` (an fp32 family) and
/// `precision`: bf16 rounds every operand as it is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct F32Path {
    avx512: bool,
    packer: Packer,
}

impl F32Path {
    fn new(kern: ConvKernels, precision: Precision) -> Self {
        let round = precision == Precision::Bf16;
        match kern {
            ConvKernels::Avx512 if !round => F32Path {
                avx512: true,
                packer: Packer::Avx512,
            },
            ConvKernels::Avx512 => F32Path {
                avx512: true,
                packer: Packer::Avx2 { round },
            },
            ConvKernels::Avx2 => F32Path {
                avx512: false,
                packer: Packer::Avx2 { round },
            },
            other => unreachable!("{other:?} is not an fp32 family"),
        }
    }

    fn rounds(self) -> bool {
        self.packer == Packer::Avx2 { round: true }
    }
}

/// `pad_image` by `packer`.
///
/// # Safety
/// AVX-512F for [`Packer::Avx512`], else AVX2.
unsafe fn pad_image(packer: Packer, plan: &Plan, img: &[f32], xp: &mut [f32]) {
    match packer {
        Packer::Avx512 => pack::pad_image(plan, img, xp),
        Packer::Avx2 { round: false } => avx2_pack::pad_image::<false>(plan, img, xp),
        Packer::Avx2 { round: true } => avx2_pack::pad_image::<true>(plan, img, xp),
    }
}

/// `dst` = `src`, rounded to bf16 with `round` (AVX2).
///
/// # Safety
/// AVX2.
unsafe fn copy_rounded(round: bool, src: &[f32], dst: &mut [f32]) {
    if round {
        avx2_pack::copy::<true>(src, dst)
    } else {
        avx2_pack::copy::<false>(src, dst)
    }
}

/// Lays out image `img` as the plan's B source in `slot` (`plan.src_len()` floats, zeroed when
/// first used): the padded image when the plan reads in place, else its im2col matrix (built
/// through the padded image in `xp`). Not for narrow layouts (groups of images).
///
/// # Safety
/// As [`pad_image`].
unsafe fn source_into(
    packer: Packer,
    plan: &Plan,
    img: &[f32],
    xp: &mut Vec<f32>,
    slot: &mut [f32],
) {
    match plan.layout {
        Layout::Wide => pad_image(packer, plan, img, slot),
        Layout::Im2col => {
            let xp = sized(xp, plan.padded_len());
            pad_image(packer, plan, img, xp);
            match packer {
                Packer::Avx512 => pack::im2col(plan, xp, slot),
                Packer::Avx2 { .. } => avx2_pack::im2col(plan, xp, slot),
            }
        }
        Layout::Narrow => unreachable!("narrow layouts take groups of images"),
    }
}

/// The plan a pass on `kern` reads its input through: AMX cannot mask lanes per tap, so it
/// takes im2col where the others would take the narrow layout.
fn plan_for(kern: ConvKernels, g: ConvShape) -> Plan {
    let plan = Plan::new(g, true);
    if kern.is_amx() && amx_k_blocks(&plan).is_none() {
        return Plan::new(g, false);
    }
    plan
}

/// The k blocks AMX reads the plan's bf16 source in (rows of pairs equally spaced within a
/// block), or `None` where the layout has none: the wide layout pairs input channels at each
/// tap (`hp·wp` apart), in blocks of up to 16 that divide the pairs; im2col rows of pairs (`ld`
/// apart), 16 a block, the last padded with zero rows.
fn amx_k_blocks(plan: &Plan) -> Option<amx_tile::KBlocks> {
    let g = &plan.g;
    match plan.layout {
        Layout::Wide => {
            let (taps, pairs) = (g.k * g.k, g.c_in.div_ceil(2));
            let len = if pairs <= 16 { pairs } else { 16 };
            if !pairs.is_multiple_of(len) {
                return None;
            }
            let base = (0..taps)
                .flat_map(|tap| (0..pairs).step_by(len).map(move |c| c * taps + tap))
                .map(|j| plan.pair_offs[j])
                .collect();
            Some(amx_tile::KBlocks {
                base,
                stride: plan.hp * plan.wp,
                len,
            })
        }
        Layout::Im2col => {
            let pairs = g.col_rows().div_ceil(2);
            let len = pairs.min(16);
            Some(amx_tile::KBlocks {
                base: (0..pairs.div_ceil(len))
                    .map(|b| b * len * plan.ld)
                    .collect(),
                stride: plan.ld,
                len,
            })
        }
        Layout::Narrow => None,
    }
}

/// The pair `j` of the AMX k blocks: block `b`, row `i`.
fn amx_pair(plan: &Plan, kb: &amx_tile::KBlocks, b: usize, i: usize) -> Option<usize> {
    let g = &plan.g;
    let j = match plan.layout {
        Layout::Wide => {
            let (taps, pairs) = (g.k * g.k, g.c_in.div_ceil(2));
            let per_tap = pairs / kb.len;
            let (tap, cb) = (b / per_tap, b % per_tap);
            (cb * kb.len + i) * taps + tap
        }
        _ => b * kb.len + i,
    };
    (j < plan.pair_offs.len()).then_some(j)
}

/// Whether AMX takes an NN product of `m` output rows on `plan`: whole tiles of rows
/// (16 or more) and k blocks of 8 pairs or more (half a tile's K); below that a tile does
/// mostly padding. A rule of thumb, not yet timed on an AMX machine.
fn amx_pays_nn(plan: &Plan, m: usize) -> bool {
    m >= 16 && amx_k_blocks(plan).is_some_and(|kb| kb.len >= 8)
}

/// Whether AMX takes `pass` of a convolution of geometry `g` (see [`amx_pays_nn`]; the weight
/// gradient: input channels in whole 16-lane vectors, runs of 8 output pixels or more).
pub(super) fn amx_fits(pass: Pass, g: &ConvShape) -> bool {
    let plan = |g: ConvShape| plan_for(ConvKernels::Amx, g);
    match pass {
        Pass::Forward => amx_pays_nn(&plan(*g), g.c_out),
        Pass::BackwardData if g.stride == 1 => {
            let turned =
                ConvShape::new(&[g.n, g.c_out, g.oh, g.ow], &[g.c_in, g.c_out, g.k, g.k], 1);
            amx_pays_nn(&plan(turned), g.c_in)
        }
        Pass::BackwardData => {
            let pointwise = ConvShape::new(
                &[g.n, g.c_out, g.oh, g.ow],
                &[g.col_rows(), g.c_out, 1, 1],
                1,
            );
            amx_pays_nn(&plan(pointwise), g.col_rows())
        }
        Pass::BackwardWeight => {
            g.c_in.is_multiple_of(16) && g.c_out >= 16 && amx_tile::wgrad_run(g.ow) >= 8
        }
    }
}

/// The A operand of an NN product, packed for the kernels of the pass.
enum PackedW {
    /// fp32 kernels (values rounded to bf16 for a bf16 pass).
    F32(PackedA, F32Path),
    /// `vdpbf16ps`.
    Bf16(PackedPairs),
    /// AMX tiles: A, B's k blocks, the output vectors; through the model or not.
    Amx {
        a: amx_tile::TiledA,
        kb: amx_tile::KBlocks,
        vecs: Vec<amx_tile::PixelVector>,
        model: bool,
    },
}

impl PackedW {
    /// `a(row, k)` for `row < m`, k in the fp32 order (input channel, then tap); bf16 pairs it
    /// as the plan's B source does.
    fn new(
        kern: ConvKernels,
        precision: Precision,
        plan: &Plan,
        m: usize,
        a: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let bf16 = crate::bf16::round;
        let pair = |row: usize, j: usize| {
            let (lo, hi) = plan.pair_ks(j);
            (bf16(a(row, lo)), hi.map_or(0.0, |hi| bf16(a(row, hi))))
        };
        match kern {
            ConvKernels::Avx512Bf16 => {
                PackedW::Bf16(PackedPairs::new(m, plan.pair_offs.len(), pair))
            }
            ConvKernels::Amx | ConvKernels::AmxModel => {
                let kb = amx_k_blocks(plan).expect("an AMX plan has k blocks");
                let a = amx_tile::TiledA::new(m, kb.base.len(), kb.len, |row, b, i| {
                    amx_pair(plan, &kb, b, i).map_or((0.0, 0.0), |j| pair(row, j))
                });
                let vecs = match &plan.tiles {
                    Tiles::V1(t) => flat(t),
                    Tiles::V2(t) => flat(t),
                    Tiles::V4(t) => flat(t),
                };
                PackedW::Amx {
                    a,
                    kb,
                    vecs,
                    model: kern == ConvKernels::AmxModel,
                }
            }
            _ => {
                let path = F32Path::new(kern, precision);
                let round = path.rounds();
                let packed = PackedA::new(m, plan.g.col_rows(), |r, k| {
                    if round {
                        bf16(a(r, k))
                    } else {
                        a(r, k)
                    }
                });
                PackedW::F32(packed, path)
            }
        }
    }

    /// `C = A · B(imgs)` into `c` (rows `p` apart, images `m·p` apart) for `count` images
    /// (one, or up to a narrow plan's group).
    ///
    /// # Safety
    /// The instructions of the kernels the A was packed for; `c` holds the images' `m` rows of
    /// pixels.
    unsafe fn times(
        &self,
        plan: &Plan,
        imgs: &[f32],
        count: usize,
        s: &mut Scratch,
        c: &mut [MaybeUninit<f32>],
    ) {
        let p = plan.g.out_pixels();
        assert!(count == 1 || plan.layout == Layout::Narrow);
        let group_tiles = plan.group_tiles(count, matches!(self, PackedW::Bf16(_)));
        let tiles = group_tiles.as_ref().unwrap_or(&plan.tiles);
        // Every element of `c` is written (the tiles' masks cover each row's pixels).
        let cp = c.as_mut_ptr().cast::<f32>();
        match self {
            PackedW::F32(a, path) => {
                assert!(c.len() >= count * a.m * p);
                let src = sized(&mut s.col, plan.src_len());
                match (plan.layout, path.packer) {
                    (Layout::Narrow, Packer::Avx512) => pack::pad_narrow(plan, imgs, count, src),
                    (Layout::Narrow, Packer::Avx2 { round: false }) => {
                        avx2_pack::pad_narrow::<false>(plan, imgs, count, src)
                    }
                    (Layout::Narrow, Packer::Avx2 { round: true }) => {
                        avx2_pack::pad_narrow::<true>(plan, imgs, count, src)
                    }
                    _ => source_into(path.packer, plan, imgs, &mut s.xp, src),
                }
                let (src, taps) = (&*src, (&plan.offs[..], &plan.masks[..]));
                match (tiles, path.avx512) {
                    (Tiles::V1(t), true) => gemm_f32::nn(a, taps, src, t, cp, p),
                    (Tiles::V2(t), true) => gemm_f32::nn(a, taps, src, t, cp, p),
                    (Tiles::V4(t), true) => gemm_f32::nn(a, taps, src, t, cp, p),
                    (Tiles::V1(t), false) => avx2_f32::nn(a, taps, src, t, cp, p),
                    (Tiles::V2(t), false) => avx2_f32::nn(a, taps, src, t, cp, p),
                    (Tiles::V4(t), false) => avx2_f32::nn(a, taps, src, t, cp, p),
                }
            }
            PackedW::Bf16(a) => {
                assert!(c.len() >= count * a.m * p);
                let pairs = sized(&mut s.pairs, plan.pairs_len());
                match plan.layout {
                    Layout::Wide => pack::pad_image_pairs(plan, imgs, pairs),
                    Layout::Narrow => pack::pad_narrow_pairs(plan, imgs, count, pairs),
                    Layout::Im2col => {
                        let col = sized(&mut s.col, plan.src_len());
                        source_into(Packer::Avx512, plan, imgs, &mut s.xp, col);
                        pack::bf16_row_pairs(col, plan.g.col_rows(), plan.ld, pairs);
                    }
                }
                let (src, taps) = (&*pairs, (&plan.pair_offs[..], &plan.pair_masks[..]));
                match tiles {
                    Tiles::V1(t) => gemm_bf16::nn(a, taps, src, t, cp, p),
                    Tiles::V2(t) => gemm_bf16::nn(a, taps, src, t, cp, p),
                    Tiles::V4(t) => gemm_bf16::nn(a, taps, src, t, cp, p),
                }
            }
            PackedW::Amx { a, kb, vecs, model } => {
                assert!(count == 1 && c.len() >= a.m * p);
                // Im2col: rows of pairs up to whole k blocks, those past the last pair zero.
                let len = match plan.layout {
                    Layout::Im2col => kb.base.len() * kb.len * plan.ld,
                    _ => plan.pairs_len(),
                };
                let pairs = sized(&mut s.pairs, len);
                match plan.layout {
                    Layout::Wide => avx2_pack::pad_image_pairs(plan, imgs, pairs),
                    _ => {
                        let col = sized(&mut s.col, plan.src_len());
                        let packer = Packer::Avx2 { round: false };
                        source_into(packer, plan, imgs, &mut s.xp, col);
                        avx2_pack::row_pairs(col, plan.g.col_rows(), plan.ld, pairs);
                        pairs[plan.pairs_len()..].fill(0);
                    }
                }
                if *model {
                    amx_tile::nn(&mut Model::default(), a, pairs, kb, vecs, cp, p);
                } else {
                    amx_tile::nn(&mut Real, a, pairs, kb, vecs, cp, p);
                }
            }
        }
    }
}

/// The output vectors of NN tiles, one by one.
fn flat<const NV: usize>(tiles: &[gemm_f32::Tile<NV>]) -> Vec<amx_tile::PixelVector> {
    tiles
        .iter()
        .flat_map(|t| (0..NV).map(move |v| (t.src[v], t.dst[v], t.mask[v])))
        .filter(|v| v.2 != 0)
        .collect()
}

/// `out_i = A · B(in_i)` for every image, a group of images (the plan's) per parallel task.
///
/// # Safety
/// As [`PackedW::times`].
unsafe fn per_image(plan: &Plan, a: &PackedW, input: &[f32], out: &mut [MaybeUninit<f32>]) {
    let g = &plan.g;
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.out_pixels());
    out.par_chunks_mut(plan.group * out_len)
        .zip(input.par_chunks(plan.group * in_len))
        .for_each(|(o, x)| with_scratch(plan, |s| a.times(plan, x, x.len() / in_len, s, o)));
}

/// # Safety
/// The instructions of `kern`.
pub(super) unsafe fn forward(
    kern: ConvKernels,
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    precision: Precision,
) -> Tensor {
    let g = ConvShape::new(x.shape(), weight.shape(), stride);
    let kk = g.col_rows();
    let w = weight.data();
    let plan = plan_for(kern, g);
    let a = PackedW::new(kern, precision, &plan, g.c_out, |m, k| w[m * kk + k]);
    // SAFETY: `per_image` writes every element.
    Tensor::host_filled(&[g.n, g.c_out, g.oh, g.ow], |y| {
        per_image(&plan, &a, x.data(), y)
    })
}

/// # Safety
/// The instructions of `kern`.
pub(super) unsafe fn backward_data(
    kern: ConvKernels,
    dy: &Tensor,
    weight: &Tensor,
    x_shape: &[usize],
    stride: usize,
    precision: Precision,
) -> Tensor {
    let g = ConvShape::new(x_shape, weight.shape(), stride);
    assert_eq!(dy.shape(), [g.n, g.c_out, g.oh, g.ow], "conv dy shape");
    let (k, kk, p) = (g.k, g.col_rows(), g.out_pixels());
    let w = weight.data();
    if stride == 1 {
        // dx = conv(dy, W') with W'[ci][co][ky][kx] = W[co][ci][k-1-ky][k-1-kx].
        let turned = ConvShape::new(dy.shape(), &[g.c_in, g.c_out, k, k], 1);
        assert_eq!((turned.oh, turned.ow), (g.h, g.w));
        let plan = plan_for(kern, turned);
        let a = PackedW::new(kern, precision, &plan, g.c_in, |ci, col| {
            let (co, tap) = (col / (k * k), col % (k * k));
            w[(co * g.c_in + ci) * k * k + (k * k - 1 - tap)]
        });
        // SAFETY: `per_image` writes every element.
        return Tensor::host_filled(x_shape, |dx| per_image(&plan, &a, dy.data(), dx));
    }
    // dcol_i = Wᵀ · dy_i (a 1x1 "convolution" of dy into cin·k·k channels), then col2im.
    let pointwise = ConvShape::new(dy.shape(), &[kk, g.c_out, 1, 1], 1);
    let plan = plan_for(kern, pointwise);
    let a = PackedW::new(kern, precision, &plan, kk, |r, co| w[co * kk + r]);
    // The AVX-512 col2im where the family has AVX-512 (all but AVX2 and the model), else AVX2's.
    let avx512 = !matches!(kern, ConvKernels::Avx2 | ConvKernels::AmxModel);
    let col2im_fast = |dcol: &[f32], dxi: &mut [f32]| match avx512 {
        true => pack::col2im_stride2(&g, dcol, dxi),
        false => avx2_pack::col2im_stride2(&g, dcol, dxi),
    };
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(g.c_in * g.h * g.w)
            .zip(dy.data().par_chunks(g.c_out * p))
            .for_each(|(dxi, dyi)| {
                // col2im accumulates into zeros.
                let dxi = init_zero(dxi);
                with_scratch(&plan, |s| {
                    let mut buf = std::mem::take(&mut s.rows);
                    let dcol = sized(&mut buf, kk * p);
                    a.times(&plan, dyi, 1, s, as_uninit(dcol));
                    if !col2im_fast(dcol, dxi) {
                        col2im(&g, dcol, dxi);
                    }
                    s.rows = buf;
                })
            })
    };
    // SAFETY: every image's chunk is zeroed, then accumulated into.
    Tensor::host_filled(x_shape, fill)
}

/// An initialised slice seen as possibly-uninitialised (for the kernels' output parameter).
fn as_uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; a MaybeUninit view of initialised values is always valid, and the
    // kernels only write floats into it.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Zeroes an uninitialised slice and returns it initialised.
fn init_zero(v: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    v.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { &mut *(v as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Pixels summed per weight-gradient group (before the lane sums).
const GROUP_PIXELS: usize = 1024;

/// Fixed groups of images for the weight gradient: enough pixels per group for the kernels'
/// per-tile costs (an even count for bf16, which pairs images); the groups' sums are added in
/// order.
fn image_groups(n: usize, p: usize, even: bool) -> Vec<std::ops::Range<usize>> {
    let mut per_group = GROUP_PIXELS.div_ceil(p).clamp(1, 16);
    if even {
        per_group = per_group.next_multiple_of(2);
    }
    (0..n)
        .step_by(per_group)
        .map(|i| i..(i + per_group).min(n))
        .collect()
}

/// The weight gradient for `cin` a multiple of 16, from channels-last copies of the input
/// ([`wgrad`]; bf16 on `vdpbf16ps` or AMX: pairs of images in each 32-bit lane): partial sums
/// per group in (co, tap, ci) order, added in group order, then into `dweight`'s
/// (co, ci, ky, kx) order.
///
/// # Safety
/// The instructions of `kern`.
unsafe fn backward_weight_channels_last(
    kern: ConvKernels,
    g: &ConvShape,
    x: &Tensor,
    dy: &Tensor,
    dweight: &mut Tensor,
    precision: Precision,
) {
    let (k, p, m, cin) = (g.k, g.out_pixels(), g.c_out, g.c_in);
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let slot = (hp * wp * cin).next_multiple_of(16);
    let koffs: Vec<usize> = (0..k * k)
        .flat_map(|tap| {
            (0..cin)
                .step_by(16)
                .map(move |c0| ((tap / k) * wp + tap % k) * cin + c0)
        })
        .collect();
    let grid = PixelGrid {
        ho: g.oh,
        wo: g.ow,
        col_step: g.stride * cin,
        row_step: g.stride * wp * cin,
    };
    let (img_len, out_len, kk) = (cin * g.h * g.w, m * p, k * k * cin);
    let (xd, dyd) = (x.data(), dy.data());
    let (xi, dyi) = (
        |i: usize| &xd[i * img_len..][..img_len],
        |i: usize| &dyd[i * out_len..][..out_len],
    );
    let plan = Plan::new(*g, true);
    let pairs_of_images = matches!(
        kern,
        ConvKernels::Avx512Bf16 | ConvKernels::Amx | ConvKernels::AmxModel
    );
    let partials: Vec<Vec<f32>> = image_groups(g.n, p, pairs_of_images)
        .into_par_iter()
        .map(|images| {
            with_scratch(&plan, |s| {
                let mut part = vec![0.0f32; m * kk];
                if !pairs_of_images {
                    let path = F32Path::new(kern, precision);
                    let xs = sized(&mut s.channels_last, images.len() * slot);
                    for (j, i) in images.clone().enumerate() {
                        let out = &mut xs[j * slot..][..slot];
                        let (shape, pad) = ((cin, g.h, g.w), (g.pad, wp));
                        match path.packer {
                            Packer::Avx512 => pack::channels_last_padded(xi(i), shape, pad, out),
                            Packer::Avx2 { round: false } => {
                                avx2_pack::channels_last_padded::<false>(xi(i), shape, pad, out)
                            }
                            Packer::Avx2 { round: true } => {
                                avx2_pack::channels_last_padded::<true>(xi(i), shape, pad, out)
                            }
                        }
                    }
                    // dy as it is, or a rounded copy.
                    let dys = sized(&mut s.dy_rounded, images.len() * out_len);
                    let members: Vec<(*const f32, *const f32)> = images
                        .enumerate()
                        .map(|(j, i)| {
                            let d = if path.rounds() {
                                let d = &mut dys[j * out_len..][..out_len];
                                copy_rounded(true, dyi(i), d);
                                d.as_ptr()
                            } else {
                                dyi(i).as_ptr()
                            };
                            (d, xs.as_ptr().add(j * slot))
                        })
                        .collect();
                    if path.avx512 {
                        wgrad::wgrad(&members, grid, (m, p), &koffs, &mut part);
                    } else {
                        // The AVX2 kernel's vectors are 8 channels.
                        let koffs8: Vec<usize> = koffs.iter().flat_map(|&o| [o, o + 8]).collect();
                        avx2_f32::wgrad(&members, grid, (m, p), &koffs8, &mut part);
                    }
                    return part;
                }
                // Images (i, i + 1) share each lane; an odd last one pairs with zeros.
                let pairs: Vec<(usize, Option<usize>)> = images
                    .clone()
                    .step_by(2)
                    .map(|i| (i, (i + 1 < images.end).then_some(i + 1)))
                    .collect();
                let dy_slot = out_len.next_multiple_of(16);
                // AMX reads whole blocks of 16 rows of dy: slack past the last pair's rows.
                let slack = (m.next_multiple_of(16) - m) * p;
                let xs = sized(&mut s.channels_last_pairs, pairs.len() * slot);
                let ds = sized(&mut s.dy_pairs, pairs.len() * dy_slot + slack);
                let avx512 = kern == ConvKernels::Avx512Bf16;
                for (j, &(a, b)) in pairs.iter().enumerate() {
                    let out = &mut xs[j * slot..][..slot];
                    let (shape, pad) = ((cin, g.h, g.w), (g.pad, wp));
                    let dyo = &mut ds[j * dy_slot..][..out_len];
                    if avx512 {
                        pack::channels_last_image_pairs(xi(a), b.map(xi), shape, pad, out);
                        pack::image_pairs(dyi(a), b.map(dyi), dyo);
                    } else {
                        avx2_pack::channels_last_image_pairs(xi(a), b.map(xi), shape, pad, out);
                        avx2_pack::image_pairs(dyi(a), b.map(dyi), dyo);
                    }
                }
                let members: Vec<(*const u32, *const u32)> = (0..pairs.len())
                    .map(|j| (ds.as_ptr().add(j * dy_slot), xs.as_ptr().add(j * slot)))
                    .collect();
                match kern {
                    ConvKernels::Amx => {
                        amx_tile::wgrad(&mut Real, &members, grid, (m, p), &koffs, &mut part)
                    }
                    ConvKernels::AmxModel => amx_tile::wgrad(
                        &mut Model::default(),
                        &members,
                        grid,
                        (m, p),
                        &koffs,
                        &mut part,
                    ),
                    _ => wgrad::wgrad_bf16(&members, grid, (m, p), &koffs, &mut part),
                }
                part
            })
        })
        .collect();
    let mut total = vec![0.0f32; m * kk];
    for part in partials {
        for (t, v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    let dw = dweight.data_mut();
    for co in 0..m {
        for tap in 0..k * k {
            for ci in 0..cin {
                dw[(co * cin + ci) * k * k + tap] += total[(co * k * k + tap) * cin + ci];
            }
        }
    }
}

/// # Safety
/// The instructions of `kern` (and AVX-512BW for `vdpbf16ps`).
pub(super) unsafe fn backward_weight(
    kern: ConvKernels,
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) {
    let g = ConvShape::new(x.shape(), dweight.shape(), stride);
    assert_eq!(dy.shape(), [g.n, g.c_out, g.oh, g.ow], "conv dy shape");
    if g.c_in.is_multiple_of(16) {
        return backward_weight_channels_last(kern, &g, x, dy, dweight, precision);
    }
    assert!(
        !kern.is_amx(),
        "AMX takes weight gradients of 16·k input channels only"
    );
    let (kk, p, m) = (g.col_rows(), g.out_pixels(), g.c_out);
    let (img_len, out_len) = (g.c_in * g.h * g.w, m * p);
    let path = (kern != ConvKernels::Avx512Bf16).then(|| F32Path::new(kern, precision));
    // The NT walk reads the wide layout or im2col rows (never the narrow one).
    let plan = Plan::new(g, path.is_some() && g.ow >= 16);
    let groups = image_groups(g.n, p, false);
    let (xd, dyd) = (x.data(), dy.data());
    let src_len = plan.src_len();
    let packer = path.map_or(Packer::Avx512, |p| p.packer);
    let partials: Vec<Vec<f32>> = groups
        .into_par_iter()
        .map(|images| {
            with_scratch(&plan, |s| {
                let count = images.len();
                let mut buf = std::mem::take(&mut s.rows);
                let srcs = sized(&mut buf, count * src_len);
                for (slot, i) in images.clone().enumerate() {
                    let img = &xd[i * img_len..][..img_len];
                    let out = &mut srcs[slot * src_len..][..src_len];
                    source_into(packer, &plan, img, &mut s.xp, out);
                }
                let mut part = vec![0.0f32; m * kk];
                match path {
                    Some(path) => {
                        // dy as it is, or a rounded copy.
                        let dys = sized(&mut s.dy_rounded, count * out_len);
                        let members: Vec<(*const f32, *const f32)> = images
                            .clone()
                            .enumerate()
                            .map(|(slot, i)| {
                                let d = &dyd[i * out_len..][..out_len];
                                let d = if path.rounds() {
                                    let r = &mut dys[slot * out_len..][..out_len];
                                    copy_rounded(true, d, r);
                                    r.as_ptr()
                                } else {
                                    d.as_ptr()
                                };
                                (d, srcs.as_ptr().add(slot * src_len))
                            })
                            .collect();
                        let (offs, walk) = (&plan.offs, &plan.walk);
                        if path.avx512 {
                            gemm_f32::nt(&members, (m, p), offs, walk, &mut part);
                        } else {
                            avx2_f32::nt(&members, (m, p), offs, walk, &mut part);
                        }
                    }
                    None => {
                        // Pairs along the pixels: rows of ld / 2 lanes (ld a multiple of 32).
                        let ld = plan.ld;
                        let half = ld / 2;
                        let mut rows = vec![0.0f32; count * m * ld];
                        for (slot, i) in images.enumerate() {
                            pack::pad_rows(
                                &dyd[i * out_len..][..out_len],
                                m,
                                p,
                                &mut rows[slot * m * ld..],
                                ld,
                            );
                        }
                        let pairs = sized(&mut s.pairs, count * (kk + m) * half);
                        let (cols, dys) = pairs.split_at_mut(count * kk * half);
                        pack::bf16_along_rows(srcs, count * kk, ld, cols);
                        pack::bf16_along_rows(&rows, count * m, ld, dys);
                        let members: Vec<(*const u32, *const u32)> = (0..count)
                            .map(|slot| {
                                (
                                    dys.as_ptr().add(slot * m * half),
                                    cols.as_ptr().add(slot * kk * half),
                                )
                            })
                            .collect();
                        gemm_bf16::nt(&members, (m, half), (kk, half), half / 16, &mut part);
                    }
                }
                s.rows = buf;
                part
            })
        })
        .collect();
    let dw = dweight.data_mut();
    for part in partials {
        for (d, v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
}
