//! Every CUDA kernel, executed on the CPU by the emulator (`cuda_emu.h`) with the grid/block the
//! real launcher in `kernels/src/launch` computes, against its Rust CPU twin.
//!
//! Shapes are small and awkward on purpose (batch 1 and 3, odd channel counts, stride 2, 1x1 and
//! 4x4 maps, more than one 64-wide conv tile, more rows than threads): the emulator runs one OS
//! thread per CUDA thread, so big shapes would only cost time without covering more index paths.
//!
//! Error measure: `‖emu − cpu‖₂ / ‖cpu‖₂` over the whole output. Where the kernel and the twin
//! do the same f32 operations in the same order it must be exactly 0 (bitwise-equal outputs);
//! where they sum in a different order or precision (GEMM tiling, f64 statistics on the CPU) the
//! bound is 1e-5: f32 rounding over the reduction lengths used here (≤ 603 terms) gives ~1e-7 ..
//! 1e-6, so 1e-5 leaves margin while an index bug (a wrong, missing or doubled term) gives
//! errors of order 1e-2 .. 1.
//!
//! `beta = 0` outputs are pre-filled with NaN: a kernel that reads them leaks NaN into the result
//! and fails. `beta = 1` outputs start from random values and must equal `old + twin`.

use kernels::launch as kl;
use kernels::Precision;
use kernels_emu::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::Tensor;

/// The bound for outputs summed in a different order/precision than the twin (see the header).
const TOL: f64 = 1e-5;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in ±[0.1, 1): random sign, never zero.
fn rand_vec(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = r.gen_range(0.1..1.0);
            if r.gen::<bool>() {
                v
            } else {
                -v
            }
        })
        .collect()
}

fn nan_vec(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// Launch configuration of a 1-D grid-stride kernel, from the real launcher's `grid_1d`.
fn cfg_1d(n: usize) -> (Dim3, Dim3) {
    let c = kl::grid_1d(n);
    (c.grid_dim.into(), c.block_dim.into())
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let (mut d, mut w) = (0.0f64, 0.0f64);
    for (&g, &r) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        d += (g as f64 - r as f64).powi(2);
        w += (r as f64).powi(2);
    }
    if w == 0.0 {
        d.sqrt()
    } else {
        (d / w).sqrt()
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: emulated {g} != cpu {w}"
        );
    }
}

fn add_vec(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

// ---- elementwise.cu ------------------------------------------------------------------------------

/// Exact: one f32 compare or add per element on both sides.
#[test]
fn elementwise_kernels_match_cpu_exactly() {
    let mut r = rng(1);
    // 1 element, < 1 block, several blocks with a ragged last one.
    for shape in [[1usize, 1, 1, 1], [1, 3, 5, 7], [3, 7, 4, 4], [3, 5, 9, 9]] {
        let n: usize = shape.iter().product();
        let (g, b) = cfg_1d(n);
        let ni = n as i32;
        let (x, x2, dy) = (
            rand_vec(&mut r, n),
            rand_vec(&mut r, n),
            rand_vec(&mut r, n),
        );
        let (tx, tx2, tdy) = (
            Tensor::from_vec(&shape, x.clone()),
            Tensor::from_vec(&shape, x2.clone()),
            Tensor::from_vec(&shape, dy.clone()),
        );

        let mut y = nan_vec(n);
        unsafe { emu_relu_forward(g, b, x.as_ptr(), y.as_mut_ptr(), ni) };
        let ty = tensor::elementwise::relu_forward(&tx);
        assert_bitwise("relu_forward", &y, ty.data());

        // In place (y aliases x), which elementwise.cu documents as allowed.
        let mut inplace = x.clone();
        let p = inplace.as_mut_ptr();
        unsafe { emu_relu_forward(g, b, p, p, ni) };
        assert_bitwise("relu_forward in place", &inplace, ty.data());

        let mut dx = nan_vec(n);
        unsafe { emu_relu_backward(g, b, dy.as_ptr(), y.as_ptr(), dx.as_mut_ptr(), ni) };
        let tdx = tensor::elementwise::relu_backward(&tdy, &ty);
        assert_bitwise("relu_backward", &dx, tdx.data());

        let mut s = nan_vec(n);
        unsafe { emu_add_forward(g, b, x.as_ptr(), x2.as_ptr(), s.as_mut_ptr(), ni) };
        let ts = tensor::elementwise::add(&tx, &tx2);
        assert_bitwise("add_forward", &s, ts.data());

        let mut sr = nan_vec(n);
        unsafe { emu_add_relu_forward(g, b, x.as_ptr(), x2.as_ptr(), sr.as_mut_ptr(), ni) };
        let tsr = tensor::elementwise::relu_forward(&ts);
        assert_bitwise("add_relu_forward", &sr, tsr.data());

        let mut acc = x.clone();
        unsafe { emu_accumulate(g, b, acc.as_mut_ptr(), x2.as_ptr(), ni) };
        let mut tacc = tx.clone();
        tensor::elementwise::add_assign(&mut tacc, &tx2);
        assert_bitwise("accumulate", &acc, tacc.data());
    }
}

// ---- shortcut.cu ---------------------------------------------------------------------------------

/// Exact: pure gathers; beta = 1 is fmaf(1, old, v) = old + v rounded once, as the CPU add.
#[test]
fn shortcut_kernels_match_cpu_exactly() {
    let mut r = rng(2);
    // (n, cin, h, w, cout, stride): odd sizes with stride 2, equal channels, 1x1 map.
    for (n, cin, h, w, cout, s) in [
        (1, 3, 4, 4, 5, 2),
        (3, 5, 7, 7, 7, 2),
        (3, 3, 5, 3, 3, 1),
        (1, 7, 1, 1, 9, 2),
    ] {
        let shape = kl::ShortcutShape {
            n,
            c_in: cin,
            h,
            w,
            c_out: cout,
            stride: s,
        };
        let (oh, ow) = (shape.oh(), shape.ow());
        let x = rand_vec(&mut r, shape.x_len());
        let tx = Tensor::from_vec(&[n, cin, h, w], x.clone());
        let ints = [n, cin, h, w, cout, oh, ow, s].map(|v| v as i32);

        let (g, b) = cfg_1d(shape.y_len());
        let mut y = nan_vec(shape.y_len());
        unsafe {
            emu_shortcut_forward(
                g,
                b,
                x.as_ptr(),
                y.as_mut_ptr(),
                ints[0],
                ints[1],
                ints[2],
                ints[3],
                ints[4],
                ints[5],
                ints[6],
                ints[7],
            )
        };
        let ty = tensor::shortcut::pad_shortcut_forward(&tx, cout, s);
        assert_eq!(ty.shape(), [n, cout, oh, ow]);
        assert_bitwise("shortcut_forward", &y, ty.data());

        let dy = rand_vec(&mut r, shape.y_len());
        let tdy = Tensor::from_vec(&[n, cout, oh, ow], dy.clone());
        let tdx = tensor::shortcut::pad_shortcut_backward(&tdy, &[n, cin, h, w], s);
        let (g, b) = cfg_1d(shape.x_len());
        for beta in [0.0f32, 1.0] {
            let old = if beta == 0.0 {
                nan_vec(shape.x_len())
            } else {
                rand_vec(&mut r, shape.x_len())
            };
            let mut dx = old.clone();
            unsafe {
                emu_shortcut_backward(
                    g,
                    b,
                    dy.as_ptr(),
                    dx.as_mut_ptr(),
                    ints[0],
                    ints[1],
                    ints[2],
                    ints[3],
                    ints[4],
                    ints[5],
                    ints[6],
                    ints[7],
                    beta,
                )
            };
            let want = if beta == 0.0 {
                tdx.data().to_vec()
            } else {
                add_vec(&old, tdx.data())
            };
            assert_bitwise(&format!("shortcut_backward beta={beta}"), &dx, &want);
        }
    }
}

// ---- pool_fc.cu ----------------------------------------------------------------------------------

/// avgpool: the kernel sums in f32, the twin in f64 (≤ HW·ε ≈ 3e-6 here); backward divides by
/// HW where the twin multiplies by 1/HW (≤ 1 ulp). Linear: serial fmaf chains vs the twin's
/// blocked GEMM (different order).
#[test]
fn pool_and_linear_kernels_match_cpu() {
    let mut r = rng(3);
    for (n, c, h, w) in [(1, 3, 4, 4), (3, 5, 7, 7), (3, 7, 1, 1), (3, 64, 8, 8)] {
        let (nc, hw) = (n * c, h * w);
        let x = rand_vec(&mut r, nc * hw);
        let tx = Tensor::from_vec(&[n, c, h, w], x.clone());
        let (g, b) = cfg_1d(nc);
        let mut y = nan_vec(nc);
        unsafe { emu_avgpool_forward(g, b, x.as_ptr(), y.as_mut_ptr(), nc as i32, hw as i32) };
        let ty = tensor::pool::global_avg_pool_forward(&tx);
        assert_close("avgpool_forward", &y, ty.data(), TOL);

        let dy = rand_vec(&mut r, nc);
        let tdx = tensor::pool::global_avg_pool_backward(
            &Tensor::from_vec(&[n, c], dy.clone()),
            &[n, c, h, w],
        );
        let (g, b) = cfg_1d(nc * hw);
        let mut dx = nan_vec(nc * hw);
        unsafe { emu_avgpool_backward(g, b, dy.as_ptr(), dx.as_mut_ptr(), nc as i32, hw as i32) };
        assert_close("avgpool_backward", &dx, tdx.data(), TOL);
    }

    // (n, in, out): 1 row, odd sizes, the real head (64 -> 10 / 100) at batch 3.
    for (n, fin, fout) in [(1, 3, 5), (3, 7, 10), (3, 64, 10), (1, 64, 100)] {
        let shape = kl::LinearShape {
            n,
            in_features: fin,
            out_features: fout,
        };
        let [ni, fi, fo] = [n, fin, fout].map(|v| v as i32);
        let x = rand_vec(&mut r, n * fin);
        let w = rand_vec(&mut r, fout * fin);
        let bias = rand_vec(&mut r, fout);
        let dy = rand_vec(&mut r, n * fout);
        let (tx, tw, tb, tdy) = (
            Tensor::from_vec(&[n, fin], x.clone()),
            Tensor::from_vec(&[fout, fin], w.clone()),
            Tensor::from_vec(&[fout], bias.clone()),
            Tensor::from_vec(&[n, fout], dy.clone()),
        );

        let (g, b) = cfg_1d(shape.n * shape.out_features);
        let mut y = nan_vec(n * fout);
        unsafe {
            emu_linear_forward(
                g,
                b,
                x.as_ptr(),
                w.as_ptr(),
                bias.as_ptr(),
                y.as_mut_ptr(),
                ni,
                fi,
                fo,
            )
        };
        let ty = tensor::linear::linear_forward(&tx, &tw, &tb);
        assert_close("linear_forward", &y, ty.data(), TOL);

        for beta in [0.0f32, 1.0] {
            let (dw0, db0) = if beta == 0.0 {
                (vec![0.0; fout * fin], vec![0.0; fout])
            } else {
                (rand_vec(&mut r, fout * fin), rand_vec(&mut r, fout))
            };
            // The twin accumulates (dW += ...): start it from dw0 (0 stands for "overwrite").
            let mut tdw = Tensor::from_vec(&[fout, fin], dw0.clone());
            let mut tdb = Tensor::from_vec(&[fout], db0.clone());
            let tdx = tensor::linear::linear_backward(&tdy, &tx, &tw, &mut tdw, &mut tdb);

            let (g, b) = cfg_1d(shape.n * shape.in_features);
            let mut dx = nan_vec(n * fin);
            unsafe {
                emu_linear_backward_data(g, b, dy.as_ptr(), w.as_ptr(), dx.as_mut_ptr(), ni, fi, fo)
            };
            assert_close("linear_backward_data", &dx, tdx.data(), TOL);

            let (mut dw, mut db) = if beta == 0.0 {
                (nan_vec(fout * fin), nan_vec(fout))
            } else {
                (dw0.clone(), db0.clone())
            };
            let (g, b) = cfg_1d(shape.out_features * (shape.in_features + 1));
            unsafe {
                emu_linear_backward_weight(
                    g,
                    b,
                    dy.as_ptr(),
                    x.as_ptr(),
                    dw.as_mut_ptr(),
                    db.as_mut_ptr(),
                    ni,
                    fi,
                    fo,
                    beta,
                )
            };
            assert_close(&format!("linear dW beta={beta}"), &dw, tdw.data(), TOL);
            assert_close(&format!("linear db beta={beta}"), &db, tdb.data(), TOL);
        }
    }
}

// ---- conv.cu and conv_bf16.cu ------------------------------------------------------------------

/// The emulated entry points of one precision's conv kernels (same C signatures).
type ConvFn = unsafe extern "C" fn(
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
type PartialFn = unsafe extern "C" fn(
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
    s: kl::ConvShape,
}

impl ConvCase {
    fn ints(&self) -> [i32; 10] {
        let s = &self.s;
        [
            s.n,
            s.c_in,
            s.h,
            s.w,
            s.c_out,
            s.oh(),
            s.ow(),
            s.k,
            s.stride,
            s.pad(),
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

    /// Backward weight as `kl::conv2d_backward_weight` issues it: the partial launch with grid
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
            s: kl::ConvShape {
                n,
                c_in,
                h: hw,
                w: hw,
                c_out,
                k: ks,
                stride,
            },
        };
        let s = case.s;
        let p = precision;
        let tag = format!("{p} {s:?}");
        // The GEMM rows: output channels forward / weight gradient, input channels backward.
        let (k_out, k_in) = (conv_kernels(p, c_out), conv_kernels(p, c_in));
        let x = rand_vec(&mut r, s.x_len());
        let wt = rand_vec(&mut r, s.w_len());
        let dy = rand_vec(&mut r, s.y_len());
        let tx = Tensor::from_vec(&[n, c_in, hw, hw], x.clone());
        let tw = Tensor::from_vec(&[c_out, c_in, ks, ks], wt.clone());
        let tdy = Tensor::from_vec(&[n, c_out, s.oh(), s.ow()], dy.clone());

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
            for plan in [s.weight_grad_plan(), forced(s.n * s.oh() * s.ow())] {
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
            assert_eq!(unsafe { emu_fast_div(n, d) }, n / d, "{n} / {d}");
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
    let s = kl::ConvShape {
        n: 2,
        c_in: 19,
        h: 6,
        w: 6,
        c_out: 21,
        k: 3,
        stride: 1,
    };
    let case = ConvCase { s };
    let x = rand_vec(&mut r, s.x_len());
    let wt = rand_vec(&mut r, s.w_len());
    let exact = tensor::conv::conv2d_forward(
        &Tensor::from_vec(&[2, 19, 6, 6], x.clone()),
        &Tensor::from_vec(&[21, 19, 3, 3], wt.clone()),
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

// ---- batchnorm.cu --------------------------------------------------------------------------------

/// One BatchNorm case through the emulator against the twin: training forward (both launches),
/// eval forward (when `eval`), backward (both launches). `grid` / `block` are the chunked kernels' launch
/// configuration and `workspace` its length; every output and the workspace start as NaN
/// (a value that is read before it is written, or a chunk that is never written, shows up).
/// dgamma / dbeta accumulate onto random old values.
fn bn_case(
    r: &mut ChaCha8Rng,
    (n, c, h, w): (usize, usize, usize, usize),
    relu: bool,
    (grid, block): (Dim3, Dim3),
    workspace: usize,
    eval: bool,
) {
    let (momentum, eps) = (tensor::batchnorm::BN_MOMENTUM, 1e-5f32);
    let shape = kl::BnShape { n, c, hw: h * w };
    let tag = format!("{shape:?} relu={relu} grid={grid:?} block={}", block.x);
    let len = shape.len();
    let [ni, ci, hwi, ri] = [n, c, h * w, usize::from(relu)].map(|v| v as i32);
    let relu_t = |t: Tensor| {
        if relu {
            tensor::elementwise::relu_forward(&t)
        } else {
            t
        }
    };
    let x: Vec<f32> = rand_vec(r, len).iter().map(|v| 2.0 * v + 1.5).collect();
    let gamma = rand_vec(r, c);
    let beta = rand_vec(r, c);
    let rm0 = rand_vec(r, c);
    let rv0: Vec<f32> = rand_vec(r, c).iter().map(|v| v.abs()).collect();
    let dy = rand_vec(r, len);
    let tx = Tensor::from_vec(&[n, c, h, w], x.clone());

    let (mut trm, mut trv) = (rm0.clone(), rv0.clone());
    let (ty, saved) = tensor::batchnorm::batchnorm_train_forward(
        &tx, &gamma, &beta, &mut trm, &mut trv, momentum, eps,
    );
    let ty = relu_t(ty);
    let (mut y, mut rm, mut rv, mut sm, mut si) = (
        nan_vec(len),
        rm0.clone(),
        rv0.clone(),
        nan_vec(c),
        nan_vec(c),
    );
    let mut part = nan_vec(workspace);
    unsafe {
        emu_batchnorm_forward_train_partial(
            grid,
            block,
            x.as_ptr(),
            part.as_mut_ptr(),
            ni,
            ci,
            hwi,
        );
        emu_batchnorm_forward_train_apply(
            grid,
            block,
            x.as_ptr(),
            part.as_ptr(),
            y.as_mut_ptr(),
            gamma.as_ptr(),
            beta.as_ptr(),
            rm.as_mut_ptr(),
            rv.as_mut_ptr(),
            sm.as_mut_ptr(),
            si.as_mut_ptr(),
            ni,
            ci,
            hwi,
            momentum,
            eps,
            ri,
        )
    };
    assert_close(&format!("bn train y {tag}"), &y, ty.data(), TOL);
    assert_close(&format!("bn save_mean {tag}"), &sm, &saved.mean, TOL);
    assert_close(&format!("bn save_invstd {tag}"), &si, &saved.invstd, TOL);
    assert_close(&format!("bn running_mean {tag}"), &rm, &trm, TOL);
    assert_close(&format!("bn running_var {tag}"), &rv, &trv, TOL);
    if relu {
        assert!(
            y.iter().all(|&v| v >= 0.0),
            "bn+relu output has negatives {tag}"
        );
    }

    if eval {
        let tye = relu_t(tensor::batchnorm::batchnorm_eval_forward(
            &tx, &gamma, &beta, &rm0, &rv0, eps,
        ));
        let (g, b) = cfg_1d(len);
        let mut ye = nan_vec(len);
        unsafe {
            emu_batchnorm_forward_eval(
                g,
                b,
                x.as_ptr(),
                ye.as_mut_ptr(),
                gamma.as_ptr(),
                beta.as_ptr(),
                rm0.as_ptr(),
                rv0.as_ptr(),
                ni,
                ci,
                hwi,
                eps,
                ri,
            )
        };
        assert_close(&format!("bn eval y {tag}"), &ye, tye.data(), TOL);
    }

    // Backward from the twin's saved statistics and output, so both sides see identical
    // inputs.
    let dg0 = rand_vec(r, c);
    let db0 = rand_vec(r, c);
    let (mut tdg, mut tdb) = (dg0.clone(), db0.clone());
    let tdy = Tensor::from_vec(&[n, c, h, w], dy.clone());
    let tdy = if relu {
        tensor::elementwise::relu_backward(&tdy, &ty)
    } else {
        tdy
    };
    let tdx = tensor::batchnorm::batchnorm_backward(&tx, &tdy, &gamma, &saved, &mut tdg, &mut tdb);
    let (mut dx, mut dg, mut db) = (nan_vec(len), dg0.clone(), db0.clone());
    // Without ReLU the kernels must not read relu_out: hand them NaNs.
    let relu_out = if relu {
        ty.data().to_vec()
    } else {
        nan_vec(len)
    };
    let mut part = nan_vec(workspace);
    unsafe {
        emu_batchnorm_backward_partial(
            grid,
            block,
            dy.as_ptr(),
            x.as_ptr(),
            saved.mean.as_ptr(),
            saved.invstd.as_ptr(),
            relu_out.as_ptr(),
            part.as_mut_ptr(),
            ni,
            ci,
            hwi,
            ri,
        );
        emu_batchnorm_backward_apply(
            grid,
            block,
            dy.as_ptr(),
            x.as_ptr(),
            gamma.as_ptr(),
            saved.mean.as_ptr(),
            saved.invstd.as_ptr(),
            relu_out.as_ptr(),
            part.as_ptr(),
            dx.as_mut_ptr(),
            dg.as_mut_ptr(),
            db.as_mut_ptr(),
            ni,
            ci,
            hwi,
            ri,
        )
    };
    assert_close(&format!("bn dx {tag}"), &dx, tdx.data(), TOL);
    assert_close(&format!("bn dgamma {tag}"), &dg, &tdg, TOL);
    assert_close(&format!("bn dbeta {tag}"), &db, &tdb, TOL);
}

/// The kernels reduce in f32 (per-chunk two-pass from registers, fixed block trees, Chan's
/// combine across chunks), the twin in f64; outputs agree to ~1e-6. x has a non-zero mean (1.5)
/// so the mean/running-mean vectors are not cancellation noise. Launched exactly as
/// `BnShape::chunked_config` launches them, with `stats_workspace_len` floats of workspace.
#[test]
fn batchnorm_kernels_match_cpu() {
    let mut r = rng(5);
    // (n, c, h, w): batch 1 and 3, odd channels, 1x1 and 4x4 maps, a channel of 512 > 256
    // values: one chunk each. Then channels of several chunks (BN_CHUNK = 4096 values) with a
    // ragged last chunk and chunk boundaries inside an image: 130 x 8x8 = 8320 = 2 chunks + 128
    // (ResNet's last stage, 64 values an image), 5 x 43x43 = 9245 = 2 chunks + 1053.
    // Each without and with the fused ReLU (twin: BN, then relu / relu backward, then BN
    // backward). The eval kernel (elementwise, grid_1d) runs on the one-chunk shapes only: on
    // the big ones it would only add emulated blocks, no new index path.
    let mut multi = 0;
    for (dims, relu) in [
        (1, 3, 4, 4),
        (3, 5, 4, 4),
        (3, 7, 1, 1),
        (3, 7, 7, 7),
        (2, 3, 16, 16),
        (130, 2, 8, 8),
        (5, 2, 43, 43),
    ]
    .into_iter()
    .flat_map(|s| [(s, false), (s, true)])
    {
        let (n, c, h, w) = dims;
        let shape = kl::BnShape { n, c, hw: h * w };
        let cfg = shape.chunked_config();
        let one_chunk = shape.chunks() == 1;
        if !one_chunk {
            assert!(shape.chunks() > 2, "{shape:?}");
            assert_ne!(shape.per_channel() % kl::BN_CHUNK, 0, "ragged {shape:?}");
            multi += 1;
        }
        let cfg = (cfg.grid_dim.into(), cfg.block_dim.into());
        bn_case(
            &mut r,
            dims,
            relu,
            cfg,
            shape.stats_workspace_len(),
            one_chunk,
        );
    }
    assert_eq!(multi, 4, "multi-chunk cases");
}

/// The kernels take their chunk length from blockDim (BN_PER_THREAD values a thread) and work
/// for any blockDim that is a multiple of 32. With 32 threads (chunks of 512) a channel of
/// 2 x 97x97 = 18818 values has 37 chunks, more than the block has threads: this covers the
/// strided cross-chunk combine (a thread takes chunks t and t + 32) that the launcher's 256
/// threads only reach from about a million values per channel on. With ReLU only (the plain
/// path is the same code with the mask off, covered above).
#[test]
fn batchnorm_kernels_combine_more_chunks_than_threads() {
    let mut r = rng(15);
    let (n, c, h, w) = (2usize, 1usize, 97usize, 97usize);
    let threads = 32u32;
    let chunks = (n * h * w).div_ceil(kl::BN_PER_THREAD * threads as usize);
    assert_eq!(chunks, 37);
    let grid = Dim3 {
        x: chunks as u32,
        y: c as u32,
        z: 1,
    };
    let block = Dim3 {
        x: threads,
        y: 1,
        z: 1,
    };
    bn_case(
        &mut r,
        (n, c, h, w),
        true,
        (grid, block),
        2 * c * chunks,
        false,
    );
}

// ---- loss.cu -------------------------------------------------------------------------------------

/// The kernel sums exp in f32, the twin in f64: loss and dlogits within 1e-5 relative; the
/// correct count is exact (same strict-greater argmax, ties to the lowest index).
#[test]
fn softmax_xent_kernels_match_cpu() {
    let mut r = rng(6);
    let (grid, block) = (
        Dim3 { x: 1, y: 1, z: 1 }, // launch/loss.rs xent_config(): one block of XENT_THREADS
        Dim3 {
            x: kl::XENT_THREADS,
            y: 1,
            z: 1,
        },
    );
    // (n, classes, offset): 1 row, 3 classes, CIFAR-100 width, more rows (300) than threads,
    // and logits around 1000 (the max shift must keep it finite).
    for (n, k, offset) in [
        (1, 10, 0.0f32),
        (3, 3, 0.0),
        (5, 100, 0.0),
        (300, 10, 0.0),
        (7, 10, 1000.0),
    ] {
        let mut z: Vec<f32> = rand_vec(&mut r, n * k)
            .iter()
            .map(|v| 4.0 * v + offset)
            .collect();
        let labels: Vec<usize> = (0..n).map(|_| r.gen_range(0..k)).collect();
        // Row 0: an exact tie between the label and the class before it (argmax -> lower index).
        if labels[0] > 0 {
            z[labels[0]] = offset + 5.0;
            z[labels[0] - 1] = offset + 5.0;
        }
        let lab_i32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let twin =
            tensor::loss::softmax_cross_entropy(&Tensor::from_vec(&[n, k], z.clone()), &labels);
        let want_sum = twin.loss as f64 * n as f64;

        // Accumulators start non-zero: the kernel must add, not overwrite.
        let (mut loss_acc, mut correct_acc) = (0.25f64, 3i32);
        let mut dz = nan_vec(n * k);
        unsafe {
            emu_softmax_xent_forward_backward(
                grid,
                block,
                z.as_ptr(),
                lab_i32.as_ptr(),
                dz.as_mut_ptr(),
                &mut loss_acc,
                &mut correct_acc,
                n as i32,
                k as i32,
            )
        };
        let tag = format!("n={n} k={k} offset={offset}");
        let e = ((loss_acc - 0.25) - want_sum).abs() / want_sum.abs();
        assert!(
            e <= TOL,
            "xent loss {tag}: {} vs {want_sum}, rel {e:.3e}",
            loss_acc - 0.25
        );
        assert_eq!(correct_acc - 3, twin.correct as i32, "xent correct {tag}");
        assert_close(
            &format!("xent dlogits {tag}"),
            &dz,
            twin.dlogits.data(),
            TOL,
        );

        let (mut loss_acc, mut correct_acc) = (0.25f64, 3i32);
        unsafe {
            emu_softmax_xent_forward(
                grid,
                block,
                z.as_ptr(),
                lab_i32.as_ptr(),
                &mut loss_acc,
                &mut correct_acc,
                n as i32,
                k as i32,
            )
        };
        let e = ((loss_acc - 0.25) - want_sum).abs() / want_sum.abs();
        assert!(e <= TOL, "xent eval loss {tag}: rel {e:.3e}");
        assert_eq!(
            correct_acc - 3,
            twin.correct as i32,
            "xent eval correct {tag}"
        );
    }
}

// ---- sgd.cu --------------------------------------------------------------------------------------

/// Exact: the same f32 expression in the same order (no contraction under the emulator).
#[test]
fn sgd_step_matches_cpu_exactly() {
    let mut r = rng(7);
    // Uneven segments, including 1-element ones, across two blocks.
    let segs = [
        (7usize, 5e-4f32),
        (1, 0.0),
        (300, 1e-3),
        (3, 0.0),
        (1, 5e-4),
    ];
    let table = kl::SgdSegments::new(&segs).unwrap();
    let total = table.total();
    let (g, b) = cfg_1d(total);
    for nesterov in [false, true] {
        let mut p = rand_vec(&mut r, total);
        let mut buf = vec![0.0f32; total];
        let (mut tp, mut tbuf) = (p.clone(), buf.clone());
        for step in 0..3 {
            let grad = rand_vec(&mut r, total);
            let (lr, momentum) = (0.1f32, 0.9f32);
            unsafe {
                emu_sgd_step(
                    g,
                    b,
                    p.as_mut_ptr(),
                    grad.as_ptr(),
                    buf.as_mut_ptr(),
                    table.offsets.as_ptr(),
                    table.weight_decay.as_ptr(),
                    segs.len() as i32,
                    total as i32,
                    lr,
                    momentum,
                    i32::from(nesterov),
                )
            };
            let mut at = 0;
            for &(len, wd) in &segs {
                let cfg = tensor::sgd::SgdConfig {
                    lr,
                    momentum,
                    weight_decay: wd,
                    nesterov,
                };
                let sl = at..at + len;
                tensor::sgd::sgd_update(&mut tp[sl.clone()], &grad[sl.clone()], &mut tbuf[sl], cfg);
                at += len;
            }
            assert_bitwise(
                &format!("sgd params nesterov={nesterov} step {step}"),
                &p,
                &tp,
            );
            assert_bitwise(
                &format!("sgd bufs nesterov={nesterov} step {step}"),
                &buf,
                &tbuf,
            );
        }
    }
}

/// The multi-tensor step: separate parameter/gradient/momentum buffers per tensor, reached
/// through the address table, with lr read from memory. Same arithmetic as the CPU update per
/// tensor, so bit-exact; three steps so the momentum buffers carry over.
#[test]
fn sgd_step_tensors_matches_cpu_exactly() {
    let mut r = rng(8);
    let segs = [
        (7usize, 5e-4f32),
        (1, 0.0),
        (300, 1e-3),
        (3, 0.0),
        (1, 5e-4),
    ];
    let table = kl::SgdSegments::new(&segs).unwrap();
    let total = table.total();
    let (g, b) = cfg_1d(total);
    for nesterov in [false, true] {
        let mut params: Vec<Vec<f32>> = segs.iter().map(|&(n, _)| rand_vec(&mut r, n)).collect();
        let mut bufs: Vec<Vec<f32>> = segs.iter().map(|&(n, _)| vec![0.0; n]).collect();
        let (mut tp, mut tbuf) = (params.clone(), bufs.clone());
        for step in 0..3 {
            let grads: Vec<Vec<f32>> = segs.iter().map(|&(n, _)| rand_vec(&mut r, n)).collect();
            let ptrs: Vec<u64> = (0..segs.len())
                .flat_map(|s| {
                    [
                        params[s].as_mut_ptr() as u64,
                        grads[s].as_ptr() as u64,
                        bufs[s].as_mut_ptr() as u64,
                    ]
                })
                .collect();
            let (lr, momentum) = (0.1f32 / (step + 1) as f32, 0.9f32);
            unsafe {
                emu_sgd_step_tensors(
                    g,
                    b,
                    ptrs.as_ptr(),
                    table.offsets.as_ptr(),
                    table.weight_decay.as_ptr(),
                    segs.len() as i32,
                    total as i32,
                    &lr,
                    momentum,
                    i32::from(nesterov),
                )
            };
            for (s, &(_, wd)) in segs.iter().enumerate() {
                let cfg = tensor::sgd::SgdConfig {
                    lr,
                    momentum,
                    weight_decay: wd,
                    nesterov,
                };
                tensor::sgd::sgd_update(&mut tp[s], &grads[s], &mut tbuf[s], cfg);
                let what = format!("tensor {s} nesterov={nesterov} step {step}");
                assert_bitwise(&format!("sgd params, {what}"), &params[s], &tp[s]);
                assert_bitwise(&format!("sgd bufs, {what}"), &bufs[s], &tbuf[s]);
            }
        }
    }
}

/// One launch zeroes every listed tensor, all of each and nothing else (the guard values
/// around each buffer stay).
#[test]
fn zero_tensors_zeroes_exactly_the_listed_tensors() {
    let mut r = rng(9);
    let lens = [7usize, 1, 300, 3];
    // Each tensor sits inside a larger buffer with 2 guard values on both sides.
    let mut bufs: Vec<Vec<f32>> = lens.iter().map(|&n| rand_vec(&mut r, n + 4)).collect();
    let before = bufs.clone();
    let ptrs: Vec<u64> = bufs
        .iter_mut()
        .map(|b| b[2..].as_mut_ptr() as u64)
        .collect();
    let table = kl::SgdSegments::new(&lens.map(|n| (n, 0.0))).unwrap();
    let (g, b) = cfg_1d(table.total());
    unsafe {
        emu_zero_tensors(
            g,
            b,
            ptrs.as_ptr(),
            table.offsets.as_ptr(),
            lens.len() as i32,
            table.total() as i32,
        )
    };
    for (s, (buf, old)) in bufs.iter().zip(&before).enumerate() {
        let n = lens[s];
        assert!(
            buf[2..2 + n].iter().all(|&v| v == 0.0),
            "tensor {s} not zeroed"
        );
        assert_eq!(&buf[..2], &old[..2], "guard before tensor {s}");
        assert_eq!(&buf[2 + n..], &old[2 + n..], "guard after tensor {s}");
    }
}

// ---- peak.cu -------------------------------------------------------------------------------------

/// The ceiling probes compute what they claim (so the FLOP counts behind the roofline column
/// are real work): small-integer operands make every partial sum exact, so the twin below —
/// the matrices spelled out from the PTX fragment tables — predicts each output bit for bit.
#[test]
fn peak_probes_compute_what_they_count() {
    let threads = kl::PEAK_THREADS as usize;
    let (g, b) = (
        Dim3 { x: 1, y: 1, z: 1 },
        Dim3 {
            x: threads as u32,
            y: 1,
            z: 1,
        },
    );
    let iters = 3;

    // A[row][col] and B[k][n] of peak_mma_bf16, from its per-lane registers.
    let a = |row: usize, col: usize| {
        let (lane, reg) = ((row % 8) * 4 + (col % 8) / 2, (row / 8) + 2 * (col / 8));
        (if col % 2 == 1 {
            (lane + 2 * reg) % 2
        } else {
            (lane + reg) % 3
        }) as f32
    };
    let bm = |k: usize, n: usize| {
        let (lane, reg) = (n * 4 + (k % 8) / 2, k / 8);
        (if k % 2 == 1 {
            (lane * 3 + reg) % 3
        } else {
            (lane + reg) % 2
        }) as f32
    };
    let d = |row: usize, col: usize| {
        iters as f32 * (0..16).map(|k| a(row, k) * bm(k, col)).sum::<f32>()
    };
    let mut out = nan_vec(threads);
    unsafe { emu_peak_mma_bf16(g, b, out.as_mut_ptr(), iters, 1.0) };
    for (t, &got) in out.iter().enumerate() {
        let (gr, tg) = ((t % 32) / 4, t % 4);
        let mine: f32 = [
            (gr, 2 * tg),
            (gr, 2 * tg + 1),
            (gr + 8, 2 * tg),
            (gr + 8, 2 * tg + 1),
        ]
        .iter()
        .map(|&(r, c)| d(r, c))
        .sum();
        // Chain j starts at j in each of its 4 accumulators: 4 * (0 + 1 + ... + 7) on top.
        let seeds = 4.0 * (0..kl::PEAK_CHAINS).sum::<u64>() as f32;
        assert_eq!(
            got,
            kl::PEAK_CHAINS as f32 * mine + seeds,
            "peak_mma_bf16 thread {t}"
        );
    }

    let mut out = nan_vec(threads);
    unsafe { emu_peak_fma_f32(g, b, out.as_mut_ptr(), iters, 1.0) };
    for (t, &got) in out.iter().enumerate() {
        let want: f32 = (0..8)
            .map(|j| ((t + j) % 4) as f32 + iters as f32 * (j + 1) as f32)
            .sum();
        assert_eq!(got, want, "peak_fma_f32 thread {t}");
    }
}

// ---- augment.cu ----------------------------------------------------------------------------------

/// Exact: augment.cu documents bit-for-bit agreement with `data::write_sample` (same scale/pad
/// formula, __fmul_rn against contraction).
#[test]
fn augment_batch_matches_write_sample_exactly() {
    let mut r = rng(8);
    let (side, plane) = (data::IMAGE_SIDE, 3 * data::IMAGE_SIDE * data::IMAGE_SIDE);
    let ndata = 4;
    let images: Vec<u8> = (0..ndata * plane).map(|_| r.gen()).collect();
    let labels: Vec<u8> = (0..ndata).map(|_| r.gen_range(0..100)).collect();
    let norm = data::Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.247, 0.2435, 0.2616],
    };
    // (idx, ox, oy, flip): extreme shifts both ways with and without flip, identity, random.
    let mut params = vec![[1, 4, -4, 1], [3, -4, 4, 0], [0, 0, 0, 0]];
    params.push([
        r.gen_range(0..ndata as i32),
        r.gen_range(-4..=4),
        r.gen_range(-4..=4),
        r.gen_range(0..2),
    ]);
    let batch = params.len();
    let flat: Vec<i32> = params.iter().flatten().copied().collect();
    let mut out = nan_vec(batch * plane);
    let mut out_labels = vec![-1i32; batch];
    let (g, b) = cfg_1d(batch * plane);
    unsafe {
        emu_augment_batch(
            g,
            b,
            images.as_ptr(),
            labels.as_ptr(),
            flat.as_ptr(),
            out.as_mut_ptr(),
            out_labels.as_mut_ptr(),
            batch as i32,
            side as i32,
            side as i32,
            norm.mean[0],
            norm.mean[1],
            norm.mean[2],
            norm.std[0],
            norm.std[1],
            norm.std[2],
        )
    };
    for (s, &[idx, ox, oy, flip]) in params.iter().enumerate() {
        let mut want = vec![0.0f32; plane];
        let aug = data::SampleAug {
            dx: ox,
            dy: oy,
            flip: flip != 0,
        };
        let idx = idx as usize;
        data::write_sample(
            &images[idx * plane..(idx + 1) * plane],
            aug,
            &norm,
            &mut want,
        );
        assert_bitwise(
            &format!("augment sample {s} {aug:?}"),
            &out[s * plane..(s + 1) * plane],
            &want,
        );
        assert_eq!(out_labels[s], labels[idx] as i32, "augment label {s}");
    }
}
