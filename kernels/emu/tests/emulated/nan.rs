//! NaN through the kernels as through PyTorch and the CPU twin: ReLU (`elementwise.cu`, and
//! the ReLU fused into `batchnorm.cu`) passes NaN and `-0.0` on instead of turning them into
//! 0, and a NaN input makes its channel's BatchNorm statistics and outputs NaN, so that a
//! training loop's guard sees it in the loss. Self-contained (its own small helpers), so it
//! does not lean on the other modules' layout.

use crate::common::dev;
use kernels::launch as kl;
use kernels_emu::*;
use tensor::batchnorm::BnShape;
use tensor::Tensor;

/// Every value ReLU treats specially, then ordinary ones, over several blocks of the real
/// launcher's grid with a ragged end.
fn awkward(n: usize, seed: u32) -> Vec<f32> {
    let special = [
        f32::NAN,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.5,
        2.5,
        -f32::NAN,
    ];
    (0..n)
        .map(|i| match i % 11 {
            k if k < special.len() => special[(k + seed as usize) % special.len()],
            _ => {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            }
        })
        .collect()
}

fn cfg_1d(n: usize) -> (Dim3, Dim3) {
    let c = kl::grid_1d(n);
    (c.grid_dim.into(), c.block_dim.into())
}

fn bits(v: &[f32]) -> Vec<u32> {
    // Every NaN as one pattern: the sign and payload of a propagated NaN are not specified
    // (x86 and CUDA keep the input's; only "it is NaN" is the contract).
    v.iter()
        .map(|v| {
            if v.is_nan() {
                f32::NAN.to_bits()
            } else {
                v.to_bits()
            }
        })
        .collect()
}

/// relu_forward, add_relu_forward and relu_backward on NaN, ±0, ±inf: the CPU twin's bits
/// (`tensor::scalar::relu`, PyTorch's `torch.relu` / `threshold_backward`), NaN kept, -0.0 kept.
#[test]
fn relu_kernels_pass_nan_and_negative_zero_like_the_twin() {
    let n = 3 * kl::BLOCK_1D as usize + 17;
    let (g, b) = cfg_1d(n);
    let ni = n as i32;
    let (x, x2, dy) = (
        DevVec::from(awkward(n, 0)),
        DevVec::from(awkward(n, 3)),
        DevVec::from(awkward(n, 5)),
    );
    let shape = [n];

    let mut y = DevVec::filled(7.0f32, n);
    unsafe { emu_relu_forward(g, b, x.as_ptr(), y.as_mut_ptr(), ni) };
    let twin = tensor::elementwise::relu_forward(&Tensor::from_vec(&shape, x.to_vec()));
    assert_eq!(bits(&y), bits(twin.data()), "relu_forward");
    for (i, (&xi, &yi)) in x.iter().zip(y.iter()).enumerate() {
        if xi.is_nan() {
            assert!(yi.is_nan(), "relu({xi}) = {yi} at {i}");
        } else if xi == 0.0 {
            assert_eq!(
                yi.to_bits(),
                xi.to_bits(),
                "relu keeps the sign of zero at {i}"
            );
        }
    }
    assert!(x.iter().any(|v| v.is_nan()) && x.iter().any(|v| v.to_bits() == (-0.0f32).to_bits()));

    let mut s = DevVec::filled(7.0f32, n);
    unsafe { emu_add_relu_forward(g, b, x.as_ptr(), x2.as_ptr(), s.as_mut_ptr(), ni) };
    let twin = tensor::elementwise::add_relu(
        &Tensor::from_vec(&shape, x.to_vec()),
        &Tensor::from_vec(&shape, x2.to_vec()),
    );
    assert_eq!(bits(&s), bits(twin.data()), "add_relu_forward");
    let sum_nan = x
        .iter()
        .zip(x2.iter())
        .filter(|(a, b)| (**a + **b).is_nan())
        .count();
    assert_eq!(
        s.iter().filter(|v| v.is_nan()).count(),
        sum_nan,
        "add_relu NaN count"
    );

    // Backward from the forward's output: NaN outputs pass dy, as torch's threshold_backward.
    let mut dx = DevVec::filled(7.0f32, n);
    unsafe { emu_relu_backward(g, b, dy.as_ptr(), y.as_ptr(), dx.as_mut_ptr(), ni) };
    let twin = tensor::elementwise::relu_backward(
        &Tensor::from_vec(&shape, dy.to_vec()),
        &Tensor::from_vec(&shape, y.to_vec()),
    );
    assert_eq!(bits(&dx), bits(twin.data()), "relu_backward");
    for i in (0..n).filter(|&i| y[i].is_nan()) {
        assert_eq!(
            bits(&[dx[i]]),
            bits(&[dy[i]]),
            "relu_backward at NaN output {i}"
        );
    }
}

/// `got` and `want` have NaN at the same places, and agree elsewhere to `tol` (relative, over
/// the non-NaN entries).
fn same_nans_and_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut d, mut w) = (0.0f64, 0.0f64);
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.is_nan(), r.is_nan(), "{what}[{i}]: emulated {g}, cpu {r}");
        if !r.is_nan() {
            assert!(g.is_finite(), "{what}[{i}] = {g}");
            d += (g as f64 - r as f64).powi(2);
            w += (r as f64).powi(2);
        }
    }
    let e = (d / w.max(1e-30)).sqrt();
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

/// A NaN in one channel's input, in a later chunk of a multi-chunk channel (and a one-chunk
/// case): the fused BN+ReLU training forward gives that channel NaN statistics (saved and
/// running) and NaN outputs, the eval kernel (NaN running statistics) and the backward NaN
/// for that channel; the other channels match the CPU twin as in `batchnorm.rs` (f32 against
/// f64 sums: 1e-5).
#[test]
fn batchnorm_kernels_make_a_nan_channel_nan() {
    let (momentum, eps) = (tensor::batchnorm::BN_MOMENTUM, 1e-5f32);
    for ((n, c, h, w), bad_at) in [((3, 3, 5, 5), (1, 1, 12)), ((130, 2, 8, 8), (97, 1, 40))] {
        let shape = BnShape { n, c, hw: h * w };
        let len = shape.len();
        let cfg = shape.chunked_config();
        let (grid, block): (Dim3, Dim3) = (cfg.grid_dim.into(), cfg.block_dim.into());
        let [ni, ci, hwi] = [n, c, h * w].map(|v| v as i32);
        let (img, bad, pos) = bad_at;
        let mut x: DevVec<f32> = awkward(len, 1)
            .iter()
            .map(|v| if v.is_finite() { 2.0 * v + 1.5 } else { 0.25 })
            .collect();
        x[(img * c + bad) * h * w + pos] = f32::NAN;
        let gamma: DevVec<f32> = (0..c).map(|i| 0.5 + i as f32).collect();
        let beta: DevVec<f32> = (0..c).map(|i| 0.25 - i as f32).collect();
        let dy: DevVec<f32> = awkward(len, 2)
            .iter()
            .map(|v| if v.is_finite() { *v } else { -0.5 })
            .collect();
        let tag = format!("{shape:?}");

        // The twin: BN, then ReLU; ReLU's mask, then BN's backward.
        let tx = Tensor::from_vec(&[n, c, h, w], x.to_vec());
        let (mut trm, mut trv) = (DevVec::filled(0.0f32, c), DevVec::filled(1.0f32, c));
        let (ty, saved) = tensor::batchnorm::batchnorm_train_forward(
            &tx, &gamma, &beta, &mut trm, &mut trv, momentum, eps,
        );
        let ty = tensor::elementwise::relu_forward(&ty);

        let (mut y, mut rm, mut rv) = (
            DevVec::filled(0.0f32, len),
            DevVec::filled(0.0f32, c),
            DevVec::filled(1.0f32, c),
        );
        let (mut sm, mut si) = (DevVec::filled(0.0f32, c), DevVec::filled(0.0f32, c));
        let mut part = DevVec::filled(0.0f32, shape.stats_workspace_len());
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
                1,
            )
        };
        let tol = 1e-5;
        same_nans_and_close(&format!("bn+relu y {tag}"), &y, ty.data(), tol);
        for (what, got, want) in [
            ("save_mean", &sm[..], &saved.mean[..]),
            ("save_invstd", &si[..], &saved.invstd[..]),
            ("running_mean", &rm[..], &trm[..]),
            ("running_var", &rv[..], &trv[..]),
        ] {
            same_nans_and_close(&format!("{what} {tag}"), got, want, tol);
            let nan: Vec<bool> = got.iter().map(|v| v.is_nan()).collect();
            assert_eq!(
                nan,
                (0..c).map(|ch| ch == bad).collect::<Vec<_>>(),
                "{what} {tag}"
            );
        }
        let nan_count = y.iter().filter(|v| v.is_nan()).count();
        assert_eq!(nan_count, n * h * w, "the whole channel is NaN {tag}");

        // Eval from the NaN running statistics, ReLU fused.
        let tye = tensor::elementwise::relu_forward(&tensor::batchnorm::batchnorm_eval_forward(
            &tx, &gamma, &beta, &trm, &trv, eps,
        ));
        let (g1, b1) = {
            let c = kl::grid_1d(len);
            (c.grid_dim.into(), c.block_dim.into())
        };
        let mut ye = DevVec::filled(0.0f32, len);
        unsafe {
            emu_batchnorm_forward_eval(
                g1,
                b1,
                x.as_ptr(),
                ye.as_mut_ptr(),
                gamma.as_ptr(),
                beta.as_ptr(),
                rm.as_ptr(),
                rv.as_ptr(),
                ni,
                ci,
                hwi,
                eps,
                1,
            )
        };
        same_nans_and_close(&format!("bn+relu eval y {tag}"), &ye, tye.data(), tol);
        assert_eq!(ye.iter().filter(|v| v.is_nan()).count(), n * h * w, "{tag}");

        // Backward through the fused ReLU, from the twin's saved statistics and output.
        let tdy =
            tensor::elementwise::relu_backward(&Tensor::from_vec(&[n, c, h, w], dy.to_vec()), &ty);
        let (mut tdg, mut tdb) = (DevVec::filled(0.0f32, c), DevVec::filled(0.0f32, c));
        let tdx =
            tensor::batchnorm::batchnorm_backward(&tx, &tdy, &gamma, &saved, &mut tdg, &mut tdb);
        let (mut dx, mut dg, mut db) = (
            DevVec::filled(0.0f32, len),
            DevVec::filled(0.0f32, c),
            DevVec::filled(0.0f32, c),
        );
        let relu_out = DevVec::from(ty.data());
        let (saved_mean, saved_invstd) = (dev(&saved.mean), dev(&saved.invstd));
        unsafe {
            emu_batchnorm_backward_partial(
                grid,
                block,
                dy.as_ptr(),
                x.as_ptr(),
                saved_mean.as_ptr(),
                saved_invstd.as_ptr(),
                relu_out.as_ptr(),
                part.as_mut_ptr(),
                ni,
                ci,
                hwi,
                1,
            );
            emu_batchnorm_backward_apply(
                grid,
                block,
                dy.as_ptr(),
                x.as_ptr(),
                gamma.as_ptr(),
                saved_mean.as_ptr(),
                saved_invstd.as_ptr(),
                relu_out.as_ptr(),
                part.as_ptr(),
                dx.as_mut_ptr(),
                dg.as_mut_ptr(),
                db.as_mut_ptr(),
                ni,
                ci,
                hwi,
                1,
            )
        };
        same_nans_and_close(&format!("bn dx {tag}"), &dx, tdx.data(), tol);
        same_nans_and_close(&format!("bn dgamma {tag}"), &dg, &tdg, tol);
        // dbeta = Σ dy (masked by ReLU, which passes dy where the output is NaN): finite.
        same_nans_and_close(&format!("bn dbeta {tag}"), &db, &tdb, tol);
        assert!(db.iter().all(|v| v.is_finite()), "dbeta {db:?} {tag}");
        assert_eq!(dx.iter().filter(|v| v.is_nan()).count(), n * h * w, "{tag}");
    }
}
