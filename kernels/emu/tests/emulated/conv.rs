//! conv.cu and conv_bf16.cu: every conv kernel of both precisions with the launcher's tile and
//! split-K plan, the bf16-vs-fp32 bound, and conv_ops.cuh's FastDiv.

use kernels_emu::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tensor::conv::cuda as kl;
use tensor::conv::ConvShape;
use tensor::Precision;
use tensor::Tensor;

use crate::common::*;

/// The emulated entry points of one precision's conv kernels (same C signatures).
type ConvFn = unsafe fn(
    Dim3,
    Dim3,
    *const f32,
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    i32,
);
type PartialFn = unsafe fn(
    Dim3,
    Dim3,
    *const f32,
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
);

struct ConvKernels {
    precision: Precision,
    forward: ConvFn,
    backward_data: ConvFn,
    weight_partial: PartialFn,
}

/// The kernels the launcher uses for `precision` and a GEMM of `m` rows (the tile shape
/// depends on it: `kl::ConvTile`).
fn conv_kernels(precision: Precision, m: usize) -> ConvKernels {
    let set = |forward, backward_data, weight_partial| ConvKernels {
        precision,
        forward,
        backward_data,
        weight_partial,
    };
    match (precision, kl::ConvTile::for_rows(m)) {
        (Precision::Fp32, kl::ConvTile::M64) => set(
            emu_conv2d_forward,
            emu_conv2d_backward_data,
            emu_conv2d_backward_weight_partial,
        ),
        (Precision::Fp32, kl::ConvTile::M32) => set(
            emu_conv2d_forward_m32,
            emu_conv2d_backward_data_m32,
            emu_conv2d_backward_weight_partial_m32,
        ),
        (Precision::Fp32, kl::ConvTile::M16) => set(
            emu_conv2d_forward_m16,
            emu_conv2d_backward_data_m16,
            emu_conv2d_backward_weight_partial_m16,
        ),
        (Precision::Bf16, kl::ConvTile::M64) => set(
            emu_conv2d_forward_bf16,
            emu_conv2d_backward_data_bf16,
            emu_conv2d_backward_weight_partial_bf16,
        ),
        (Precision::Bf16, kl::ConvTile::M32) => set(
            emu_conv2d_forward_bf16_m32,
            emu_conv2d_backward_data_bf16_m32,
            emu_conv2d_backward_weight_partial_bf16_m32,
        ),
        (Precision::Bf16, kl::ConvTile::M16) => set(
            emu_conv2d_forward_bf16_m16,
            emu_conv2d_backward_data_bf16_m16,
            emu_conv2d_backward_weight_partial_bf16_m16,
        ),
    }
}

/// (grid, block) of a launcher's `LaunchConfig`.
macro_rules! cfg_of {
    ($c:expr) => {{
        let c = $c;
        (Dim3::from(c.grid_dim), Dim3::from(c.block_dim))
    }};
}

struct ConvCase {
    s: ConvShape,
}

impl ConvCase {
    fn ints(&self) -> [i32; 10] {
        let s = &self.s;
        [
            s.n, s.c_in, s.h, s.w, s.c_out, s.oh, s.ow, s.k, s.stride, s.pad,
        ]
        .map(|v| v as i32)
    }

    /// Forward or backward-data as the launcher issues it with split-K plan `(splits, k_chunk)`:
    /// one split runs `kernel(a, b, out)` straight into `out` with beta; more run it into a
    /// fresh NaN workspace (every slab must be written) with beta 0, then the split reduction
    /// onto `out` with beta. `cfg` is the launcher's grid (its z is replaced by `splits`).
    // The kernel, its launch, its plan, two inputs, the output and beta.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        kernel: ConvFn,
        cfg: (Dim3, Dim3),
        plan: (usize, usize),
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
        beta: f32,
    ) {
        let [n, c, h, w, co, oh, ow, ks, s, p] = self.ints();
        let (splits, chunk) = plan;
        let grid = Dim3 {
            z: splits as u32,
            ..cfg.0
        };
        let mut ws = nan_vec(if splits > 1 { splits * out.len() } else { 0 });
        let (dst, b0) = if splits > 1 {
            (ws.as_mut_ptr(), 0.0)
        } else {
            (out.as_mut_ptr(), beta)
        };
        unsafe {
            kernel(
                grid,
                cfg.1,
                a.as_ptr(),
                b.as_ptr(),
                dst,
                n,
                c,
                h,
                w,
                co,
                oh,
                ow,
                ks,
                s,
                p,
                b0,
                chunk as i32,
            );
            if splits > 1 {
                let (g, bl) = cfg_1d(out.len());
                emu_conv2d_split_reduce(
                    g,
                    bl,
                    ws.as_ptr(),
                    out.as_mut_ptr(),
                    out.len() as i32,
                    splits as i32,
                    beta,
                );
            }
        }
    }

    /// Backward weight as the launcher (`kl::conv2d`) issues it: the partial launch with grid
    /// `conv2d_backward_weight_config` (z = splits), then the reduce with `grid_1d(w_len)`.
    /// `plan` = (splits, k_chunk); the launcher's own is `weight_grad_plan()`.
    fn backward_weight(
        &self,
        k: &ConvKernels,
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        plan: (usize, usize),
        beta: f32,
    ) {
        let (splits, chunk) = plan;
        let wlen = self.s.w_len();
        let cfg = kl::conv2d_backward_weight_config(&self.s, k.precision);
        let grid = Dim3 {
            x: cfg.grid_dim.0,
            y: cfg.grid_dim.1,
            z: splits as u32,
        };
        let mut part = nan_vec(splits * wlen); // fresh workspace: every slot must be written
        let [n, c, h, w, co, oh, ow, ks, s, p] = self.ints();
        unsafe {
            (k.weight_partial)(
                grid,
                cfg.block_dim.into(),
                dy.as_ptr(),
                x.as_ptr(),
                part.as_mut_ptr(),
                n,
                c,
                h,
                w,
                co,
                oh,
                ow,
                ks,
                s,
                p,
                chunk as i32,
            );
            let (g, b) = cfg_1d(wlen);
            emu_conv2d_split_reduce(
                g,
                b,
                part.as_ptr(),
                dw.as_mut_ptr(),
                wlen as i32,
                splits as i32,
                beta,
            );
        }
    }
}

/// Every conv kernel of one precision against the CPU engine's conv of that precision
/// (`tensor::conv::*_with`), on shapes that cover: 3x3 and 1x1, stride 1 and 2, odd maps,
/// batch 1 and 3, c_out > 64 (two M tiles forward / weight), c_in > 64 (two M tiles
/// backward-data, many K tiles), K not a multiple of the tile's 16 or 32.
fn check_conv_kernels(precision: Precision, seed: u64) {
    let mut r = rng(seed);
    for (n, c_in, hw, c_out, ks, stride) in [
        (1, 3, 4, 5, 3, 1),
        (3, 5, 4, 7, 3, 2),
        (3, 7, 5, 3, 1, 2),
        (1, 5, 7, 7, 1, 1),
        (3, 3, 4, 67, 3, 1),
        (1, 67, 4, 3, 3, 2),
        // bf16's narrow tiles: 17..32 rows forward and backward (32 x 128), and more than one
        // 128-wide column tile at 7 rows (16 x 128).
        (2, 20, 5, 24, 3, 1),
        (1, 33, 3, 17, 3, 2),
        (3, 5, 8, 7, 3, 1),
    ] {
        let case = ConvCase {
            s: ConvShape::new(&[n, c_in, hw, hw], &[c_out, c_in, ks, ks], stride),
        };
        let s = case.s;
        let p = precision;
        let tag = format!("{p} {s:?}");
        // The GEMM rows: output channels forward / weight gradient, input channels backward.
        let (k_out, k_in) = (conv_kernels(p, c_out), conv_kernels(p, c_in));
        let x = rand_vec(&mut r, s.x_len());
        let wt = rand_vec(&mut r, s.w_len());
        let dy = rand_vec(&mut r, s.y_len());
        let tx = Tensor::from_vec(&[n, c_in, hw, hw], x.to_vec());
        let tw = Tensor::from_vec(&[c_out, c_in, ks, ks], wt.to_vec());
        let tdy = Tensor::from_vec(&[n, c_out, s.oh, s.ow], dy.to_vec());

        let ty = tensor::conv::conv2d_forward_with(&tx, &tw, stride, p);
        let tdx = tensor::conv::conv2d_backward_data_with(&tdy, &tw, &[n, c_in, hw, hw], stride, p);
        let mut tdw = Tensor::zeros(&[c_out, c_in, ks, ks]);
        tensor::conv::conv2d_backward_weight_with(&tx, &tdy, stride, &mut tdw, p);

        for beta in [0.0f32, 1.0] {
            let fresh = |r: &mut ChaCha8Rng, len| {
                if beta == 0.0 {
                    nan_vec(len)
                } else {
                    rand_vec(r, len)
                }
            };
            let expect = |old: &[f32], twin: &[f32]| {
                if beta == 0.0 {
                    twin.to_vec()
                } else {
                    add_vec(old, twin)
                }
            };

            // The launcher's split-K plan (these small grids split wherever K allows), and a
            // forced 16-wide split so every shape runs the partial + reduce path (16 is half
            // the bf16 tile's K: a split then ends inside a tile).
            let forced = |k: usize| (k.div_ceil(16), 16);
            let cfg = cfg_of!(kl::conv2d_forward_config(&s, p));
            assert_eq!(cfg.0.z as usize, s.forward_plan(p).0);
            for plan in [s.forward_plan(p), forced(s.c_in * ks * ks)] {
                let old = fresh(&mut r, s.y_len());
                let mut y = old.clone();
                case.gemm(k_out.forward, cfg, plan, &x, &wt, &mut y, beta);
                assert_close(
                    &format!("conv fwd beta={beta} plan={plan:?} {tag}"),
                    &y,
                    &expect(&old, ty.data()),
                    TOL,
                );
            }

            let cfg = cfg_of!(kl::conv2d_backward_data_config(&s, p));
            assert_eq!(cfg.0.z as usize, s.backward_data_plan(p).0);
            for plan in [s.backward_data_plan(p), forced(c_out * ks * ks)] {
                let old = fresh(&mut r, s.x_len());
                let mut dx = old.clone();
                case.gemm(k_in.backward_data, cfg, plan, &dy, &wt, &mut dx, beta);
                assert_close(
                    &format!("conv bwd-data beta={beta} plan={plan:?} {tag}"),
                    &dx,
                    &expect(&old, tdx.data()),
                    TOL,
                );
            }

            // The weight gradient's plan (a single split at these sizes) and a forced one.
            for plan in [s.weight_grad_plan(), forced(s.n * s.oh * s.ow)] {
                let old = fresh(&mut r, s.w_len());
                let mut dw = old.clone();
                case.backward_weight(&k_out, &dy, &x, &mut dw, plan, beta);
                assert_close(
                    &format!("conv bwd-weight beta={beta} plan={plan:?} {tag}"),
                    &dw,
                    &expect(&old, tdw.data()),
                    TOL,
                );
            }
        }
    }
}

/// conv_ops.cuh's FastDiv (the backward-weight pixel decode's OH*OW and OW divisions) equals `/`
/// at the edges of every quotient for small divisors, and across the whole non-negative `int`
/// range for large and awkward ones.
#[test]
fn fast_div_divides_exactly() {
    let mut r = rng(11);
    let big = [
        1023,
        1024,
        1025,
        4095,
        65_535,
        65_536,
        65_537,
        1 << 20,
        (1 << 30) + 1,
        i32::MAX - 1,
        i32::MAX,
    ];
    for d in (1..=1100).chain(big) {
        let mut ns: Vec<i32> = vec![0, 1, d - 1, d, i32::MAX, i32::MAX - 1, i32::MAX - d + 1];
        for k in [1i64, 2, 3, 7, 1000, (i32::MAX as i64) / d as i64] {
            for e in [-1i64, 0, 1] {
                let n = k * d as i64 + e;
                if (0..=i32::MAX as i64).contains(&n) {
                    ns.push(n as i32);
                }
            }
        }
        ns.extend((0..20).map(|_| r.gen_range(0..=i32::MAX)));
        for n in ns.into_iter().filter(|&n| n >= 0) {
            assert_eq!(fast_div(n, d), n / d, "{n} / {d}");
        }
    }
}

/// Implicit-GEMM tiles (fmaf chains in tile order) vs the twin's im2col + blocked GEMM: same
/// terms, different order; reduction lengths ≤ 603.
#[test]
fn conv_kernels_match_cpu() {
    check_conv_kernels(Precision::Fp32, 4);
}

/// The tensor-core tiles (bf16 operands, emulated `mma.sync` fragments) vs the CPU engine's
/// bf16 twin (operands rounded to bf16, then the f32 conv): the same exact products, summed in a
/// different order, so the f32 bound holds. A fragment-layout or packing mistake, or operands
/// left unrounded (up to 2^-8 ≈ 4e-3 off per operand), fails it.
#[test]
fn conv_bf16_kernels_match_cpu_twin() {
    check_conv_kernels(Precision::Bf16, 5);
}

/// bf16 against the exact f32 conv: off by the rounding of the operands, ≤ 2^-8 per operand
/// relative, so between 1e-4 and 1e-2 over a whole output — neither exact (it must round) nor
/// wrong.
#[test]
fn conv_bf16_is_a_bf16_approximation_of_fp32() {
    let mut r = rng(6);
    let s = ConvShape::new(&[2, 19, 6, 6], &[21, 19, 3, 3], 1);
    let case = ConvCase { s };
    let x = rand_vec(&mut r, s.x_len());
    let wt = rand_vec(&mut r, s.w_len());
    let exact = tensor::conv::conv2d_forward(
        &Tensor::from_vec(&[2, 19, 6, 6], x.to_vec()),
        &Tensor::from_vec(&[21, 19, 3, 3], wt.to_vec()),
        1,
    );
    let mut y = nan_vec(s.y_len());
    let cfg = cfg_of!(kl::conv2d_forward_config(&s, Precision::Bf16));
    case.gemm(
        conv_kernels(Precision::Bf16, s.c_out).forward,
        cfg,
        s.forward_plan(Precision::Bf16),
        &x,
        &wt,
        &mut y,
        0.0,
    );
    let e = rel_err(&y, exact.data());
    assert!(
        (1e-4..1e-2).contains(&e),
        "bf16 vs fp32 relative error {e:.3e}"
    );
}
