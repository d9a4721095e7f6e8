//! The convolution against its definition and finite differences (whichever CPU path the
//! dispatch picks), and the fast paths against the reference.

use super::*;
use crate::testutil::{assert_close, check_grad, rand_tensor, rng};

/// The definition, six loops deep: the reference the im2col path must equal.
fn conv_naive(x: &Tensor, w: &Tensor, stride: usize) -> Tensor {
    let g = ConvShape::new(x.shape(), w.shape(), stride);
    let mut y = Tensor::zeros(&[g.n, g.c_out, g.oh, g.ow]);
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = 0.0f64;
                    for ci in 0..g.c_in {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * stride + ky) as isize - g.pad as isize;
                                let ix = (ox * stride + kx) as isize - g.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w
                                {
                                    let xv = x.data()[((n * g.c_in + ci) * g.h + iy as usize)
                                        * g.w
                                        + ix as usize];
                                    let wv = w.data()[((co * g.c_in + ci) * g.k + ky) * g.k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                    }
                    y.data_mut()[((n * g.c_out + co) * g.oh + oy) * g.ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

// Awkward shapes: batch 1 and 3, odd sizes, both kernel sizes, both strides.
const CASES: [([usize; 4], [usize; 4], usize); 6] = [
    ([1, 3, 5, 7], [4, 3, 3, 3], 1),
    ([3, 2, 7, 5], [5, 2, 3, 3], 2),
    ([3, 5, 6, 6], [3, 5, 3, 3], 2),
    ([1, 4, 5, 5], [6, 4, 1, 1], 1),
    ([3, 3, 7, 6], [5, 3, 1, 1], 2),
    ([2, 16, 8, 8], [32, 16, 3, 3], 2),
];

#[test]
fn forward_matches_the_definition() {
    let mut r = rng(1);
    for (xs, ws, s) in CASES {
        let x = rand_tensor(&mut r, &xs);
        let w = rand_tensor(&mut r, &ws);
        // f32 sums of at most 144 products of O(1) values: 1e-5 relative is ample.
        assert_close(&conv2d_forward(&x, &w, s), &conv_naive(&x, &w, s), 1e-5);
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut r = rng(2);
    for (xs, ws, s) in CASES {
        let x = rand_tensor(&mut r, &xs);
        let w = rand_tensor(&mut r, &ws);
        let y_shape = conv2d_forward(&x, &w, s).shape().to_vec();
        let probe = rand_tensor(&mut r, &y_shape);
        let dx = conv2d_backward_data(&probe, &w, &xs, s);
        let mut dw = Tensor::zeros(&ws);
        conv2d_backward_weight(&x, &probe, s, &mut dw);
        let loss = |x: &Tensor, w: &Tensor| crate::testutil::dot(&conv2d_forward(x, w, s), &probe);
        check_grad("conv dx", &x, &dx, |x| loss(x, &w));
        check_grad("conv dw", &w, &dw, |w| loss(&x, w));
    }
}

#[test]
fn weight_gradient_accumulates() {
    let mut r = rng(3);
    let x = rand_tensor(&mut r, &[3, 2, 5, 5]);
    let dy = rand_tensor(&mut r, &[3, 4, 5, 5]);
    let mut once = Tensor::zeros(&[4, 2, 3, 3]);
    conv2d_backward_weight(&x, &dy, 1, &mut once);
    let mut twice = once.clone();
    conv2d_backward_weight(&x, &dy, 1, &mut twice);
    let doubled = Tensor::from_vec(once.shape(), once.data().iter().map(|v| 2.0 * v).collect());
    assert_close(&twice, &doubled, 1e-6);
}

/// The existing awkward cases, plus shapes that reach the fast kernels' tails: rows of C
/// beyond a whole tile (13, 7 channels), pixel counts off the vector multiple, odd k for the
/// bf16 pairs, more images than one weight-gradient group (17 of 8x8), and rows of 16 or more
/// pixels (read in place, a masked vector at each row's end for 19 and 17), input channels in
/// whole vectors (the channels-last weight gradient) with ragged rows and output channels, and
/// rows of 8 and 4 (the narrow layout: 4 images per tile, the last group short). For AMX:
/// 32 input channels at rows of 8 with 20 output channels (tiles of rows past 16, im2col in
/// place of the narrow layout, a weight gradient in runs of 8), a stride-2 weight gradient on
/// rows of 8, and 48 input channels read in place (24 pairs: no equal blocks, so im2col).
fn fast_cases() -> Vec<([usize; 4], [usize; 4], usize)> {
    let mut cases = CASES.to_vec();
    cases.extend([
        ([2, 8, 9, 11], [13, 8, 3, 3], 1),
        ([17, 4, 8, 8], [7, 4, 3, 3], 1),
        ([2, 6, 16, 16], [20, 6, 1, 1], 2),
        ([3, 16, 16, 16], [16, 16, 3, 3], 1),
        ([2, 3, 5, 19], [5, 3, 3, 3], 1),
        ([2, 5, 4, 17], [3, 5, 1, 1], 1),
        ([2, 32, 5, 7], [11, 32, 3, 3], 1),
        ([3, 16, 6, 9], [5, 16, 1, 1], 2),
        ([6, 16, 4, 4], [20, 16, 3, 3], 1),
        ([5, 8, 2, 8], [3, 8, 1, 1], 1),
        ([3, 32, 8, 8], [20, 32, 3, 3], 1),
        ([3, 16, 16, 16], [32, 16, 3, 3], 2),
        ([1, 48, 4, 17], [16, 48, 3, 3], 1),
    ]);
    cases
}

/// One way of choosing each pass's kernels: a name and, per pass and shape, the kernels (or
/// `None`: this family does not take that pass).
type Family = (
    &'static str,
    Box<dyn Fn(Pass, &ConvShape) -> Option<ConvKernels> + Sync>,
);

use super::fast::{self, ConvKernels, Pass};

/// Every kernel family this CPU runs for `precision`: each fp32 family alone; for bf16 also
/// `vdpbf16ps`, and AMX (real where the CPU has it, and the model everywhere) on the passes
/// AMX takes.
fn families(precision: Precision) -> Vec<Family> {
    let mut all: Vec<Family> = vec![];
    for (name, k) in [("avx2", ConvKernels::Avx2), ("avx512", ConvKernels::Avx512)] {
        if fast::runs(k, precision) {
            all.push((name, Box::new(move |_, _| Some(k))));
        } else {
            eprintln!(
                "{precision}: skipped {name}: this CPU cannot run it (a CPU-capability skip)"
            );
        }
    }
    if precision == Precision::Bf16 {
        for (name, k) in [
            ("vdpbf16ps", ConvKernels::Avx512Bf16),
            ("amx", ConvKernels::Amx),
            ("amx model", ConvKernels::AmxModel),
        ] {
            if !fast::runs(k, precision) {
                eprintln!("bf16: skipped {name}: this CPU cannot run it (a CPU-capability skip)");
                continue;
            }
            if k.is_amx() {
                all.push((
                    name,
                    Box::new(move |p, g| fast::amx_fits(p, g).then_some(k)),
                ));
            } else {
                all.push((name, Box::new(move |_, _| Some(k))));
            }
        }
    }
    all
}

/// Every case through every family and the reference (on bf16-rounded operands for bf16: the
/// twin), compared at `tol`. Each family must have run every pass at least once.
fn fast_vs_reference(precision: Precision, tol: f64) {
    let twin = |t: &Tensor| match precision {
        Precision::Fp32 => t.clone(),
        Precision::Bf16 => round_tensor(t),
    };
    for (name, choose) in families(precision) {
        let mut r = rng(11);
        let mut ran = [0usize; 3];
        for (xs, ws, s) in fast_cases() {
            let g = ConvShape::new(&xs, &ws, s);
            let x = rand_tensor(&mut r, &xs);
            let w = rand_tensor(&mut r, &ws);
            let dy = rand_tensor(&mut r, &[g.n, g.c_out, g.oh, g.ow]);
            let start = rand_tensor(&mut r, &ws);
            let case = format!("{precision} {name} {xs:?} {ws:?} /{s}");
            if let Some(k) = choose(Pass::Forward, &g) {
                let want = reference::forward(&twin(&x), &twin(&w), s);
                let got = fast::forward_on(k, &x, &w, s, precision);
                assert_close_named(&case, &got, &want, tol);
                ran[0] += 1;
            }
            if let Some(k) = choose(Pass::BackwardData, &g) {
                let want = reference::backward_data(&twin(&dy), &twin(&w), &xs, s);
                let got = fast::backward_data_on(k, &dy, &w, &xs, s, precision);
                assert_close_named(&case, &got, &want, tol);
                ran[1] += 1;
            }
            if let Some(k) = choose(Pass::BackwardWeight, &g) {
                // Accumulates onto what is there.
                let (mut got, mut want) = (start.clone(), start);
                reference::backward_weight(&twin(&x), &twin(&dy), s, &mut want);
                fast::backward_weight_on(k, &x, &dy, s, &mut got, precision);
                assert_close_named(&case, &got, &want, tol);
                ran[2] += 1;
            }
        }
        assert!(
            ran.iter().all(|&n| n > 0),
            "{precision} {name}: passes run {ran:?}"
        );
    }
}

#[track_caller]
fn assert_close_named(case: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let r = std::panic::catch_unwind(|| assert_close(got, want, tol));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "?".into());
        panic!("{case}: {msg}");
    }
}

// The fast path sums the same products in another order: f32 sums of at most a few thousand
// products of O(1) values differ by well under 1e-5 relative.
#[test]
fn fast_fp32_paths_match_the_reference() {
    fast_vs_reference(Precision::Fp32, 1e-5);
}

// Same operands (rounded to bf16 identically), exact products, f32 sums in another order (AMX:
// in the instruction's order, denormals flushed, which these values never reach): the twin's
// tolerance. The twin itself is ~1e-3 away from fp32, so a path that forgot to round (or
// rounded differently) fails here.
#[test]
fn fast_bf16_paths_match_the_twin() {
    fast_vs_reference(Precision::Bf16, 1e-5);
}

/// Every family gives the same bits on 1 and 3 threads (work is split by image and fixed image
/// groups, never by thread), on shapes that reach each layout and weight-gradient path.
#[test]
fn every_path_is_deterministic_across_thread_counts() {
    let on = |threads: usize, f: &(dyn Fn() -> Vec<Vec<f32>> + Sync)| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    };
    for precision in [Precision::Fp32, Precision::Bf16] {
        for (name, choose) in families(precision) {
            let run = || {
                let mut r = rng(12);
                let mut out = vec![];
                for (xs, ws, s) in [
                    ([17, 4, 8, 8], [7, 4, 3, 3], 1),
                    ([9, 16, 16, 16], [16, 16, 3, 3], 1),
                    ([7, 32, 8, 8], [20, 32, 3, 3], 1),
                    ([5, 16, 16, 16], [32, 16, 3, 3], 2),
                ] {
                    let g = ConvShape::new(&xs, &ws, s);
                    let x = rand_tensor(&mut r, &xs);
                    let w = rand_tensor(&mut r, &ws);
                    let dy = rand_tensor(&mut r, &[g.n, g.c_out, g.oh, g.ow]);
                    if let Some(k) = choose(Pass::Forward, &g) {
                        out.push(fast::forward_on(k, &x, &w, s, precision).into_vec());
                    }
                    if let Some(k) = choose(Pass::BackwardData, &g) {
                        out.push(fast::backward_data_on(k, &dy, &w, &xs, s, precision).into_vec());
                    }
                    if let Some(k) = choose(Pass::BackwardWeight, &g) {
                        let mut dw = Tensor::zeros(&ws);
                        fast::backward_weight_on(k, &x, &dy, s, &mut dw, precision);
                        out.push(dw.into_vec());
                    }
                }
                out
            };
            let one = on(1, &run);
            assert!(!one.is_empty());
            assert!(
                one == on(3, &run),
                "{precision} {name}: 1 and 3 threads differ"
            );
        }
    }
}

/// The choice per machine: bf16 never takes a slower family than fp32 on the same CPU, AMX
/// only where its tiles fill, `vdpbf16ps` only where preferred.
#[test]
fn kernels_are_chosen_per_machine_and_shape() {
    use crate::cpu::Kernels;
    let big = ConvShape::new(&[8, 32, 16, 16], &[32, 32, 3, 3], 1);
    let stem = ConvShape::new(&[8, 3, 32, 32], &[16, 3, 3, 3], 1);
    let tiny = ConvShape::new(&[8, 16, 4, 4], &[16, 16, 3, 3], 1);
    let choose = |level, dot, p, pass, g: &ConvShape| fast::choose(level, dot, p, pass, g);
    let (f, b) = (Precision::Fp32, Precision::Bf16);
    for pass in [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight] {
        assert_eq!(choose(Kernels::Reference, true, b, pass, &big), None);
        assert_eq!(
            choose(Kernels::Avx2, true, b, pass, &big),
            Some(ConvKernels::Avx2)
        );
        assert_eq!(
            choose(Kernels::Avx2, true, f, pass, &big),
            Some(ConvKernels::Avx2)
        );
        assert_eq!(
            choose(Kernels::Avx512, true, b, pass, &big),
            Some(ConvKernels::Avx512)
        );
        assert_eq!(
            choose(Kernels::Amx, true, f, pass, &big),
            Some(ConvKernels::Avx512)
        );
        assert_eq!(
            choose(Kernels::Amx, false, b, pass, &big),
            Some(ConvKernels::Amx)
        );
        assert_eq!(
            choose(Kernels::Amx, false, b, pass, &stem).filter(|_| pass == Pass::Forward),
            (pass == Pass::Forward).then_some(ConvKernels::Avx512)
        );
        let want = if pass == Pass::BackwardWeight {
            ConvKernels::Avx512Bf16
        } else {
            ConvKernels::Amx
        };
        assert_eq!(
            choose(Kernels::Amx, true, b, pass, &tiny),
            Some(want),
            "{pass:?}"
        );
        let dot = choose(Kernels::Avx512Bf16, true, b, pass, &big);
        assert_eq!(dot, Some(ConvKernels::Avx512Bf16));
        let no_dot = choose(Kernels::Avx512Bf16, false, b, pass, &big);
        assert_eq!(no_dot, Some(ConvKernels::Avx512));
    }
    // Stride 3 is not a ResNet convolution: the reference.
    let odd = ConvShape::new(&[1, 16, 9, 9], &[16, 16, 3, 3], 3);
    assert_eq!(choose(Kernels::Amx, true, b, Pass::Forward, &odd), None);
}

/// The shape: sizes, validation, the kernels' index range.
mod shape {
    use super::super::ConvShape;

    fn conv(n: usize, c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize) -> ConvShape {
        ConvShape::new(&[n, c_in, hw, hw], &[c_out, c_in, k, k], stride)
    }

    #[test]
    fn conv_output_sizes_match_pytorch() {
        assert_eq!(
            (conv(2, 3, 32, 16, 3, 1).oh, conv(2, 3, 32, 16, 3, 1).ow),
            (32, 32)
        );
        assert_eq!(conv(2, 16, 32, 32, 3, 2).oh, 16);
        assert_eq!(conv(2, 16, 7, 32, 3, 2).oh, 4); // (7 + 2 - 3)/2 + 1
        assert_eq!(conv(2, 16, 32, 32, 1, 2).oh, 16); // (32 - 1)/2 + 1
        assert_eq!(conv(2, 16, 7, 32, 1, 2).oh, 4);
        let s = conv(4, 16, 8, 32, 3, 2);
        assert_eq!(s.x_len(), 4 * 16 * 8 * 8);
        assert_eq!(s.w_len(), 32 * 16 * 9);
        assert_eq!(s.y_len(), 4 * 32 * 4 * 4);
        assert_eq!(
            s.kernel_ints("t").unwrap(),
            [4, 16, 8, 8, 32, 4, 4, 3, 2, 1]
        );
    }

    #[test]
    fn conv_shape_validation() {
        assert!(conv(1, 1, 4, 1, 5, 1).validate("t").is_err());
        assert!(conv(1, 1, 4, 1, 3, 3).validate("t").is_err());
        assert!(conv(0, 1, 4, 1, 3, 1).validate("t").is_err());
        assert!(conv(1 << 16, 64, 64, 64, 3, 1).validate("t").is_err()); // > i32
        conv(128, 64, 8, 64, 3, 1).validate("t").unwrap();
    }

    #[test]
    fn conv_counts_are_refused_past_the_kernels_index_range() {
        use kernels::launch::MAX_LEN;
        // w = [1, C, 3, 3]: K = C*9 is the GEMM's reduction, which the tile steps 16 past.
        let c = MAX_LEN / 9;
        conv(1, c, 1, 1, 3, 1).validate("t").unwrap();
        let err = conv(1, c + 1, 1, 1, 3, 1).validate("t").unwrap_err();
        assert!(err.to_string().contains("w length"), "{err}");
        assert!(
            c * 9 + 9 < i32::MAX as usize,
            "refused although it fits i32: the margin"
        );
        // x and y = [N, 1, 8, 8].
        conv(MAX_LEN / 64, 1, 8, 1, 1, 1).validate("t").unwrap();
        let err = conv(MAX_LEN / 64 + 1, 1, 8, 1, 1, 1)
            .validate("t")
            .unwrap_err();
        assert!(err.to_string().contains("x length"), "{err}");
    }
}

/// The GPU launches' tiles, grids and split-K plans.
mod cuda_plan {
    use super::super::cuda::*;
    use super::super::{ConvShape, Precision};

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
