//! The x86-64 body of [`super`]: each pass as per-image kernel calls over a [`Plan`].

use super::pack;
use super::plan::{Layout, Plan, Tiles};
use super::wgrad;
use crate::conv::reference::col2im;
use crate::conv::ConvShape;
use crate::gemm::bf16::{self as gemm_bf16, PackedPairs};
use crate::gemm::fp32::{self as gemm_f32, PackedA};
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

/// Lays out image `img` as the plan's B source in `slot` (`plan.src_len()` floats, zeroed when
/// first used): the padded image when the plan reads in place, else its im2col matrix (built
/// through the padded image in `xp`). Not for narrow layouts (groups of images).
///
/// # Safety
/// AVX-512F.
unsafe fn source_into(plan: &Plan, img: &[f32], xp: &mut Vec<f32>, slot: &mut [f32]) {
    match plan.layout {
        Layout::Wide => pack::pad_image(plan, img, slot),
        Layout::Im2col => {
            let xp = sized(xp, plan.padded_len());
            pack::pad_image(plan, img, xp);
            pack::im2col(plan, xp, slot);
        }
        Layout::Narrow => unreachable!("narrow layouts take groups of images"),
    }
}

/// The A operand of an NN product, packed for its precision.
enum PackedW {
    F32(PackedA),
    Bf16(PackedPairs),
}

impl PackedW {
    /// `a(row, k)` for `row < m`, k in the fp32 order (input channel, then tap); bf16 pairs it
    /// as the plan's B source does.
    fn new(precision: Precision, plan: &Plan, m: usize, a: impl Fn(usize, usize) -> f32) -> Self {
        match precision {
            Precision::Fp32 => PackedW::F32(PackedA::new(m, plan.g.col_rows(), a)),
            Precision::Bf16 => {
                PackedW::Bf16(PackedPairs::new(m, plan.pair_offs.len(), |row, j| {
                    let (lo, hi) = plan.pair_ks(j);
                    (a(row, lo), hi.map_or(0.0, |hi| a(row, hi)))
                }))
            }
        }
    }

    /// `C = A · B(imgs)` into `c` (rows `p` apart, images `m·p` apart) for `count` images
    /// (one, or up to a narrow plan's group).
    ///
    /// # Safety
    /// AVX-512F, and AVX512-BF16 for a bf16 A; `c` holds the images' `m` rows of pixels.
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
            PackedW::F32(a) => {
                assert!(c.len() >= count * a.m * p);
                let src = sized(&mut s.col, plan.src_len());
                if plan.layout == Layout::Narrow {
                    pack::pad_narrow(plan, imgs, count, src);
                } else {
                    source_into(plan, imgs, &mut s.xp, src);
                }
                let (src, taps) = (&*src, (&plan.offs[..], &plan.masks[..]));
                match tiles {
                    Tiles::V1(t) => gemm_f32::nn(a, taps, src, t, cp, p),
                    Tiles::V2(t) => gemm_f32::nn(a, taps, src, t, cp, p),
                    Tiles::V4(t) => gemm_f32::nn(a, taps, src, t, cp, p),
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
                        source_into(plan, imgs, &mut s.xp, col);
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
        }
    }
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
/// AVX-512F (+ AVX512-BF16 for bf16).
pub(super) unsafe fn forward(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    precision: Precision,
) -> Tensor {
    let g = ConvShape::new(x.shape(), weight.shape(), stride);
    let kk = g.col_rows();
    let w = weight.data();
    let plan = Plan::new(g, true);
    let a = PackedW::new(precision, &plan, g.c_out, |m, k| w[m * kk + k]);
    // SAFETY: `per_image` writes every element.
    Tensor::host_filled(&[g.n, g.c_out, g.oh, g.ow], |y| {
        per_image(&plan, &a, x.data(), y)
    })
}

/// # Safety
/// AVX-512F (+ AVX512-BF16 for bf16).
pub(super) unsafe fn backward_data(
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
        let plan = Plan::new(turned, true);
        let a = PackedW::new(precision, &plan, g.c_in, |ci, col| {
            let (co, tap) = (col / (k * k), col % (k * k));
            w[(co * g.c_in + ci) * k * k + (k * k - 1 - tap)]
        });
        // SAFETY: `per_image` writes every element.
        return Tensor::host_filled(x_shape, |dx| per_image(&plan, &a, dy.data(), dx));
    }
    // dcol_i = Wᵀ · dy_i (a 1x1 "convolution" of dy into cin·k·k channels), then col2im.
    let pointwise = ConvShape::new(dy.shape(), &[kk, g.c_out, 1, 1], 1);
    let plan = Plan::new(pointwise, true);
    let a = PackedW::new(precision, &plan, kk, |r, co| w[co * kk + r]);
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
                    if !pack::col2im_stride2(&g, dcol, dxi) {
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
/// ([`wgrad`]; bf16: pairs of images in each 32-bit lane): partial sums per group in
/// (co, tap, ci) order, added in group order, then into `dweight`'s (co, ci, ky, kx) order.
///
/// # Safety
/// AVX-512F (+ AVX512-BF16 for bf16).
unsafe fn backward_weight_channels_last(
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
    let grid = wgrad::PixelGrid {
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
    let bf16 = precision == Precision::Bf16;
    let partials: Vec<Vec<f32>> = image_groups(g.n, p, bf16)
        .into_par_iter()
        .map(|images| {
            with_scratch(&plan, |s| {
                let mut part = vec![0.0f32; m * kk];
                if !bf16 {
                    let xs = sized(&mut s.channels_last, images.len() * slot);
                    for (j, i) in images.clone().enumerate() {
                        let out = &mut xs[j * slot..][..slot];
                        pack::channels_last_padded(xi(i), (cin, g.h, g.w), (g.pad, wp), out);
                    }
                    let members: Vec<(*const f32, *const f32)> = images
                        .enumerate()
                        .map(|(j, i)| (dyi(i).as_ptr(), xs.as_ptr().add(j * slot)))
                        .collect();
                    wgrad::wgrad(&members, grid, (m, p), &koffs, &mut part);
                    return part;
                }
                // Images (i, i + 1) share each lane; an odd last one pairs with zeros.
                let pairs: Vec<(usize, Option<usize>)> = images
                    .clone()
                    .step_by(2)
                    .map(|i| (i, (i + 1 < images.end).then_some(i + 1)))
                    .collect();
                let dy_slot = out_len.next_multiple_of(16);
                let xs = sized(&mut s.channels_last_pairs, pairs.len() * slot);
                let ds = sized(&mut s.dy_pairs, pairs.len() * dy_slot);
                for (j, &(a, b)) in pairs.iter().enumerate() {
                    let out = &mut xs[j * slot..][..slot];
                    pack::channels_last_image_pairs(
                        xi(a),
                        b.map(xi),
                        (cin, g.h, g.w),
                        (g.pad, wp),
                        out,
                    );
                    pack::image_pairs(dyi(a), b.map(dyi), &mut ds[j * dy_slot..][..out_len]);
                }
                let members: Vec<(*const u32, *const u32)> = (0..pairs.len())
                    .map(|j| (ds.as_ptr().add(j * dy_slot), xs.as_ptr().add(j * slot)))
                    .collect();
                wgrad::wgrad_bf16(&members, grid, (m, p), &koffs, &mut part);
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
/// AVX-512F (+ AVX-512BW and AVX512-BF16 for bf16).
pub(super) unsafe fn backward_weight(
    x: &Tensor,
    dy: &Tensor,
    stride: usize,
    dweight: &mut Tensor,
    precision: Precision,
) {
    let g = ConvShape::new(x.shape(), dweight.shape(), stride);
    assert_eq!(dy.shape(), [g.n, g.c_out, g.oh, g.ow], "conv dy shape");
    if g.c_in.is_multiple_of(16) {
        return backward_weight_channels_last(&g, x, dy, dweight, precision);
    }
    let (kk, p, m) = (g.col_rows(), g.out_pixels(), g.c_out);
    let (img_len, out_len) = (g.c_in * g.h * g.w, m * p);
    // The NT walk reads the wide layout or im2col rows (never the narrow one).
    let plan = Plan::new(g, precision == Precision::Fp32 && g.ow >= 16);
    let groups = image_groups(g.n, p, false);
    let (xd, dyd) = (x.data(), dy.data());
    let src_len = plan.src_len();
    let partials: Vec<Vec<f32>> = groups
        .into_par_iter()
        .map(|images| {
            with_scratch(&plan, |s| {
                let count = images.len();
                let mut buf = std::mem::take(&mut s.rows);
                let srcs = sized(&mut buf, count * src_len);
                for (slot, i) in images.clone().enumerate() {
                    let img = &xd[i * img_len..][..img_len];
                    source_into(
                        &plan,
                        img,
                        &mut s.xp,
                        &mut srcs[slot * src_len..][..src_len],
                    );
                }
                let mut part = vec![0.0f32; m * kk];
                match precision {
                    Precision::Fp32 => {
                        let members: Vec<(*const f32, *const f32)> = images
                            .clone()
                            .enumerate()
                            .map(|(slot, i)| {
                                (
                                    dyd.as_ptr().add(i * out_len),
                                    srcs.as_ptr().add(slot * src_len),
                                )
                            })
                            .collect();
                        gemm_f32::nt(&members, (m, p), &plan.offs, &plan.walk, &mut part);
                    }
                    Precision::Bf16 => {
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
