//! BatchNorm's semantics by hand-computed values, its backward against finite differences,
//! and the CPU fast path against the reference.

use super::*;
use crate::testutil::{assert_close, check_grad, dot, rand_tensor, rng};

#[test]
fn training_forward_and_running_stats_match_hand_computed_values() {
    // One channel, values 1, 2, 3, 6 (batch 2 of 1x2 maps): mean 3, biased var 3.5,
    // unbiased var 14/3.
    let x = Tensor::from_vec(&[2, 1, 1, 2], vec![1.0, 2.0, 3.0, 6.0]);
    let (mut rm, mut rv) = (vec![0.0], vec![1.0]);
    let (y, saved) = batchnorm_train_forward(&x, &[2.0], &[0.5], &mut rm, &mut rv, 0.1, 1e-5);
    let invstd = 1.0 / (3.5f32 + 1e-5).sqrt();
    assert!((saved.mean[0] - 3.0).abs() < 1e-6 && (saved.invstd[0] - invstd).abs() < 1e-6);
    for (got, v) in y.data().iter().zip([1.0f32, 2.0, 3.0, 6.0]) {
        assert!((got - (2.0 * (v - 3.0) * invstd + 0.5)).abs() < 1e-5);
    }
    assert!((rm[0] - 0.3).abs() < 1e-6, "running mean {}", rm[0]);
    assert!(
        (rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6,
        "running var {}",
        rv[0]
    );
}

#[test]
fn eval_forward_uses_running_stats() {
    let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1.0, 3.0, -1.0, 5.0]);
    let y = batchnorm_eval_forward(&x, &[1.0, 2.0], &[0.0, 1.0], &[1.0, 2.0], &[4.0, 9.0], 0.0);
    assert_eq!(
        y.data(),
        &[0.0, 1.0, 2.0 * (-3.0 / 3.0) + 1.0, 2.0 * (3.0 / 3.0) + 1.0]
    );
}

#[test]
fn train_output_is_normalised() {
    let mut r = rng(5);
    let x = rand_tensor(&mut r, &[3, 4, 5, 3]);
    let (mut rm, mut rv) = (vec![0.0; 4], vec![1.0; 4]);
    let (y, _) = batchnorm_train_forward(&x, &[1.0; 4], &[0.0; 4], &mut rm, &mut rv, 0.1, 1e-5);
    for ch in 0..4 {
        let vals: Vec<f64> = (0..3)
            .flat_map(|n| {
                y.data()[(n * 4 + ch) * 15..][..15]
                    .iter()
                    .map(|&v| v as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mean = vals.iter().sum::<f64>() / 45.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 45.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-3,
            "channel {ch}: mean {mean}, var {var}"
        );
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut r = rng(6);
    for shape in [[1, 3, 3, 5], [3, 2, 5, 5], [3, 5, 1, 1]] {
        let c = shape[1];
        let x = rand_tensor(&mut r, &shape);
        let gamma = rand_tensor(&mut r, &[c]);
        let beta = rand_tensor(&mut r, &[c]);
        let probe = rand_tensor(&mut r, &shape);
        let fwd = |x: &Tensor, gamma: &Tensor, beta: &Tensor| {
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            batchnorm_train_forward(x, gamma.data(), beta.data(), &mut rm, &mut rv, 0.1, 1e-5)
        };
        let (_, saved) = fwd(&x, &gamma, &beta);
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        let dx = batchnorm_backward(&x, &probe, gamma.data(), &saved, &mut dg, &mut db);
        let (dg, db) = (Tensor::from_vec(&[c], dg), Tensor::from_vec(&[c], db));
        check_grad("bn dx", &x, &dx, |x| dot(&fwd(x, &gamma, &beta).0, &probe));
        check_grad("bn dgamma", &gamma, &dg, |g| {
            dot(&fwd(&x, g, &beta).0, &probe)
        });
        check_grad("bn dbeta", &beta, &db, |b| {
            dot(&fwd(&x, &gamma, b).0, &probe)
        });
    }
}

/// The fast path (one-pass statistics, ReLU fused, AVX-512 or AVX2) against the reference slice
/// functions, with and without ReLU, on the awkward shapes above plus planes off the vector
/// multiple and a mean far from zero (the shifted sums must not lose the variance).
#[test]
fn fast_path_matches_the_reference() {
    // Each body this CPU has (AVX-512, AVX2), in turn; none: a CPU-capability skip.
    for k in crate::cpu::simd_bodies() {
        crate::cpu::with_kernels(k, fast_path_matches_the_reference_on);
    }
}

fn fast_path_matches_the_reference_on() {
    let mut r = rng(12);
    for (shape, offset) in [
        ([1, 3, 3, 5], 0.0),
        ([3, 2, 5, 5], 0.0),
        ([3, 5, 1, 1], 0.0),
        ([4, 3, 7, 9], 0.0),
        ([2, 3, 6, 6], 300.0),
    ] {
        let c = shape[1];
        let mut x = rand_tensor(&mut r, &shape);
        x.data_mut().iter_mut().for_each(|v| *v += offset);
        let (gamma, beta) = (rand_tensor(&mut r, &[c]), rand_tensor(&mut r, &[c]));
        let dy = rand_tensor(&mut r, &shape);
        for relu in [false, true] {
            // The reference: BN, then ReLU; ReLU's mask, then BN's backward.
            let (mut rm, mut rv) = (vec![0.5; c], vec![2.0; c]);
            let (want, saved) =
                batchnorm_train_forward(&x, gamma.data(), beta.data(), &mut rm, &mut rv, 0.1, 1e-5);
            let want = if relu { relu_forward(&want) } else { want };
            let (mut frm, mut frv) = (vec![0.5; c], vec![2.0; c]);
            let (got, mean, invstd, (scale, shift)) = fast::train_forward(
                &x,
                gamma.data(),
                beta.data(),
                &mut frm,
                &mut frv,
                0.1,
                1e-5,
                relu,
                None,
            )
            .unwrap();
            // Same formulas; f64 sums in another order, f32 FMAs for the affine map: the
            // results differ by f32 roundings only, of terms as large as |x - mean| / std
            // times the output (~300 with the offset: 300 · 2^-24 ≈ 2e-5).
            let tol = if offset > 0.0 { 5e-5 } else { 1e-6 };
            assert_close(&got, &want, tol);
            for (a, b) in [
                (&mean, &saved.mean),
                (&invstd, &saved.invstd),
                (&frm, &rm),
                (&frv, &rv),
            ] {
                assert_close(
                    &Tensor::from_vec(&[c], a.clone()),
                    &Tensor::from_vec(&[c], b.clone()),
                    1e-6,
                );
            }
            let masked = if relu {
                relu_backward(&dy, &want)
            } else {
                dy.clone()
            };
            let (mut dg, mut db) = (vec![0.25; c], vec![-0.5; c]);
            let want_dx = batchnorm_backward(&x, &masked, gamma.data(), &saved, &mut dg, &mut db);
            // The ReLU mask read from the output, or recomputed from the affine map: the
            // same decisions, so the same bits.
            let masks = if relu {
                vec![
                    fast::ReluMask::Output(&got),
                    fast::ReluMask::Affine(&scale, &shift),
                ]
            } else {
                vec![fast::ReluMask::None]
            };
            let mut first: Option<Tensor> = None;
            for mask in masks {
                let (mut fdg, mut fdb) = (vec![0.25; c], vec![-0.5; c]);
                let got_dx = fast::backward(
                    &x,
                    &dy,
                    gamma.data(),
                    (&mean, &invstd),
                    mask,
                    &mut fdg,
                    &mut fdb,
                )
                .unwrap();
                assert_close(&got_dx, &want_dx, 10.0 * tol);
                assert_close(
                    &Tensor::from_vec(&[c], fdg),
                    &Tensor::from_vec(&[c], dg.clone()),
                    1e-5,
                );
                assert_close(
                    &Tensor::from_vec(&[c], fdb),
                    &Tensor::from_vec(&[c], db.clone()),
                    1e-5,
                );
                if let Some(f) = &first {
                    assert_eq!(&got_dx, f, "the two ReLU masks disagree");
                }
                first = Some(got_dx);
            }
            let want = batchnorm_eval_forward(&x, gamma.data(), beta.data(), &rm, &rv, 1e-5);
            let want = if relu { relu_forward(&want) } else { want };
            let (g, b) = (gamma.data(), beta.data());
            let got = fast::eval_forward(&x, g, b, &rm, &rv, 1e-5, relu, None).unwrap();
            assert_close(&got, &want, tol);
        }
        // relu(BN(x) + residual) in one pass equals BN, then add_relu, bit for bit (the
        // same FMA, then the same add).
        let residual = rand_tensor(&mut r, &shape);
        let (g, b) = (gamma.data(), beta.data());
        let (mut rm, mut rv) = (vec![0.5; c], vec![2.0; c]);
        let (bn, ..) =
            fast::train_forward(&x, g, b, &mut rm, &mut rv, 0.1, 1e-5, false, None).unwrap();
        let (mut rm2, mut rv2) = (vec![0.5; c], vec![2.0; c]);
        let r2 = Some(&residual);
        let (fused, ..) =
            fast::train_forward(&x, g, b, &mut rm2, &mut rv2, 0.1, 1e-5, true, r2).unwrap();
        assert_eq!(fused, crate::elementwise::add_relu(&bn, &residual));
        assert_eq!((&rm, &rv), (&rm2, &rv2));
        let bn = fast::eval_forward(&x, g, b, &rm, &rv, 1e-5, false, None).unwrap();
        let fused = fast::eval_forward(&x, g, b, &rm, &rv, 1e-5, true, r2).unwrap();
        assert_eq!(fused, crate::elementwise::add_relu(&bn, &residual));
    }
}

/// A NaN among one channel's inputs makes that channel's statistics, running statistics and
/// every output NaN, as in PyTorch, with and without the fused ReLU (which must not turn it
/// into 0), through the residual add, in evaluation from the NaN running statistics, and in
/// the backward pass; the other channels stay finite. Through the tensor functions (the fast
/// path where the CPU has AVX-512, the reference elsewhere) and the reference slice functions.
#[test]
fn a_nan_input_makes_its_channel_nan_everywhere() {
    let mut r = rng(21);
    let (n, c, h, w) = (3, 4, 5, 3);
    let bad = 2;
    let mut x = rand_tensor(&mut r, &[n, c, h, w]);
    x.data_mut()[(c + bad) * h * w + 7] = f32::NAN;
    let (gamma, beta) = (rand_tensor(&mut r, &[c]), rand_tensor(&mut r, &[c]));
    let (dy, residual) = (
        rand_tensor(&mut r, &[n, c, h, w]),
        rand_tensor(&mut r, &[n, c, h, w]),
    );
    let per_channel = |what: &str, t: &Tensor, stride: usize| {
        for (i, v) in t.data().iter().enumerate() {
            let nan_wanted = (i / stride) % c == bad;
            assert_eq!(v.is_nan(), nan_wanted, "{what}[{i}] = {v}");
            assert!(v.is_nan() || v.is_finite(), "{what}[{i}] = {v}");
        }
    };
    let vec_t = |v: &[f32]| Tensor::from_vec(&[c], v.to_vec());

    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let (y, saved) =
        batchnorm_train_forward(&x, gamma.data(), beta.data(), &mut rm, &mut rv, 0.1, 1e-5);
    per_channel("reference y", &y, h * w);
    per_channel("reference relu(y)", &relu_forward(&y), h * w);
    for (what, v) in [
        ("mean", &saved.mean),
        ("invstd", &saved.invstd),
        ("running mean", &rm),
        ("running var", &rv),
    ] {
        per_channel(what, &vec_t(v), 1);
    }

    for relu in [false, true] {
        let (mut trm, mut trv) = (vec_t(&[0.0; 4]), vec_t(&[1.0; 4]));
        let (y, stats) = train_forward_relu(&x, &gamma, &beta, &mut trm, &mut trv, 0.1, 1e-5, relu);
        per_channel(&format!("y relu={relu}"), &y, h * w);
        per_channel("running mean", &trm, 1);
        per_channel("running var", &trv, 1);
        per_channel("saved mean", &stats.mean, 1);
        let (mut dg, mut db) = (vec_t(&[0.0; 4]), vec_t(&[0.0; 4]));
        let relu_out = relu.then_some(&y);
        let dx = backward_relu(&x, &dy, &gamma, &stats, relu_out, &mut dg, &mut db);
        per_channel(&format!("dx relu={relu}"), &dx, h * w);
        per_channel("dgamma", &dg, 1);
        // dbeta = Σ dy does not see x: finite (a NaN output passes dy through the ReLU mask).
        assert!(
            db.data().iter().all(|v| v.is_finite()),
            "dbeta {:?}",
            db.data()
        );

        let ye = eval_forward_relu(&x, &gamma, &beta, &trm, &trv, 1e-5, relu);
        per_channel(&format!("eval y relu={relu}"), &ye, h * w);
    }
    let (mut trm, mut trv) = (vec_t(&[0.0; 4]), vec_t(&[1.0; 4]));
    let (y, _) =
        train_forward_add_relu(&x, &gamma, &beta, &mut trm, &mut trv, 0.1, 1e-5, &residual);
    per_channel("relu(bn(x) + residual)", &y, h * w);
    let ye = eval_forward_add_relu(&x, &gamma, &beta, &trm, &trv, 1e-5, &residual);
    per_channel("eval relu(bn(x) + residual)", &ye, h * w);
}

/// The fast path and the reference agree on NaN placement and on every finite bit pattern of a
/// ReLU's output: a NaN in one channel, `-0.0` kept by the fused ReLU (`maxps(0, v)`).
#[test]
fn fast_path_propagates_nan_like_the_reference() {
    // Each body this CPU has (AVX-512, AVX2), in turn; none: a CPU-capability skip.
    for k in crate::cpu::simd_bodies() {
        crate::cpu::with_kernels(k, fast_path_propagates_nan_like_the_reference_on);
    }
}

fn fast_path_propagates_nan_like_the_reference_on() {
    let mut r = rng(22);
    let (n, c, h, w) = (2, 3, 4, 5);
    let mut x = rand_tensor(&mut r, &[n, c, h, w]);
    x.data_mut()[(c + 1) * h * w + 3] = f32::NAN;
    let (gamma, beta) = (rand_tensor(&mut r, &[c]), rand_tensor(&mut r, &[c]));
    let dy = rand_tensor(&mut r, &[n, c, h, w]);
    let (mut rm, mut rv) = (vec![0.5; c], vec![2.0; c]);
    let (g, b) = (gamma.data(), beta.data());
    let (y, mean, invstd, (scale, shift)) =
        fast::train_forward(&x, g, b, &mut rm, &mut rv, 0.1, 1e-5, true, None).unwrap();
    let (mut wrm, mut wrv) = (vec![0.5; c], vec![2.0; c]);
    let (want, saved) = batchnorm_train_forward(&x, g, b, &mut wrm, &mut wrv, 0.1, 1e-5);
    let want = relu_forward(&want);
    for (i, (a, b)) in y.data().iter().zip(want.data()).enumerate() {
        assert_eq!(a.is_nan(), b.is_nan(), "y[{i}]: fast {a}, reference {b}");
    }
    for (a, b) in [
        (&mean, &saved.mean),
        (&invstd, &saved.invstd),
        (&rm, &wrm),
        (&rv, &wrv),
    ] {
        let nan = |v: &Vec<f32>| v.iter().map(|v| v.is_nan()).collect::<Vec<_>>();
        assert_eq!(nan(a), nan(b));
        assert_eq!(nan(a), [false, true, false]);
    }
    for mask in [
        fast::ReluMask::Output(&y),
        fast::ReluMask::Affine(&scale, &shift),
    ] {
        let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
        let dx = fast::backward(&x, &dy, g, (&mean, &invstd), mask, &mut dg, &mut db).unwrap();
        for (i, v) in dx.data().iter().enumerate() {
            assert_eq!(v.is_nan(), (i / (h * w)) % c == 1, "dx[{i}] = {v}");
        }
    }
    // -0.0 out of the affine map (gamma 0, beta -0.0) stays -0.0 through the fused ReLU, as
    // through the reference's relu_forward.
    let zero_x = rand_tensor(&mut r, &[n, c, h, w]);
    let (g0, b0) = (vec![0.0; c], vec![-0.0; c]);
    let (rm0, rv0) = (vec![0.0; c], vec![1.0; c]);
    let got = fast::eval_forward(&zero_x, &g0, &b0, &rm0, &rv0, 1e-5, true, None).unwrap();
    let want = relu_forward(&batchnorm_eval_forward(&zero_x, &g0, &b0, &rm0, &rv0, 1e-5));
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}
