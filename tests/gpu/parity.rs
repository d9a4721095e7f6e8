//! GPU vs CPU parity: every tensor op (forward and backward), the SGD update, the loss, the
//! augmentation kernel, and whole training steps, each run on the GPU and on the CPU engine
//! (the oracle) from the same random inputs.
//!
//! Every test is `#[ignore = "needs a CUDA GPU"]` and FAILS (never skips) without one:
//! `cargo test -p resnet-cifar --test gpu -- --include-ignored` on the GPU machine.
//!
//! Error measure: `‖gpu − cpu‖₂ / ‖cpu‖₂` over the whole tensor, in f64. The bound is stated at
//! each check. Default 1e-5 (fp32, different summation order / fma on the GPU); exact where
//! each output is one IEEE operation on the same inputs; looser only where a reduction's
//! result cancels (said why at the check).

use super::common::*;
use model::step::{eval_batch, eval_batch_into, train_step, train_step_into};
use model::{ResNet, ResNetConfig, Sgd};
use rand::Rng;
use tensor::batchnorm::{self, BN_EPS, BN_MOMENTUM};
use tensor::elementwise::{add, add_assign, relu_backward, relu_forward};
use tensor::linear::{linear_backward, linear_forward};
use tensor::loss::softmax_cross_entropy;
use tensor::pool::{global_avg_pool_backward, global_avg_pool_forward};
use tensor::sgd::{self, SgdConfig};
use tensor::shortcut::{pad_shortcut_backward, pad_shortcut_forward};
use tensor::{conv, Device, Labels, LossMeter, Tensor};

#[test]
#[ignore = "needs a CUDA GPU"]
fn conv_forward_backward_data_and_weight() {
    let dev = gpu();
    let mut r = rng(1);
    for (xs, ws, s) in CONV_CASES {
        let case = format!("x {xs:?} w {ws:?} stride {s}");
        let (x, w) = (rand_t(&mut r, &xs), rand_t(&mut r, &ws));
        let (gx, gw) = (up(&x, &dev), up(&w, &dev));
        // fp32 dot products of up to 576 terms, summed in another order (and with fma): 1e-5.
        let y = conv::conv2d_forward(&x, &w, s);
        assert_rel(
            &format!("conv y, {case}"),
            &conv::conv2d_forward(&gx, &gw, s),
            &y,
            1e-5,
        );
        let dy = rand_t(&mut r, y.shape());
        let gdy = up(&dy, &dev);
        let dx = conv::conv2d_backward_data(&dy, &w, &xs, s);
        let gdx = conv::conv2d_backward_data(&gdy, &gw, &xs, s);
        assert_rel(&format!("conv dx, {case}"), &gdx, &dx, 1e-5);
        // Accumulates into a non-zero gradient (beta = 1). Up to 8192-term sums of O(1)
        // products, both sides in fp32 with different orders: still ~1e-6, so 1e-5.
        let mut dw = rand_t(&mut r, &ws);
        let mut gdw = up(&dw, &dev);
        conv::conv2d_backward_weight(&x, &dy, s, &mut dw);
        conv::conv2d_backward_weight(&gx, &gdy, s, &mut gdw);
        assert_rel(&format!("conv dw, {case}"), &gdw, &dw, 1e-5);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn batchnorm_train_eval_backward_and_running_stats() {
    let dev = gpu();
    let mut r = rng(2);
    // 1x1 maps with N = 4, not 2: with two values per channel x̂ = ±√(var/(var+eps)) ≈ ±1,
    // so dx ∝ eps/(var+eps) (~1e-4 of dy) is a difference of O(1) terms, rounding noise on
    // both devices (an f32 emulation disagrees by up to 7e-3, failing 1e-4 for most seeds).
    for shape in [
        [1, 3, 3, 5],
        [3, 5, 4, 4],
        [4, 7, 1, 1],
        [1, 64, 4, 4],
        [8, 16, 32, 32],
    ] {
        let c = shape[1];
        let case = format!("{shape:?}");
        // An offset mean checks the two-pass variance.
        let x = Tensor::from_vec(
            &shape,
            rand_t(&mut r, &shape)
                .data()
                .iter()
                .map(|v| v + 2.5)
                .collect(),
        );
        let gamma = rand_t(&mut r, &[c]);
        let beta = rand_t(&mut r, &[c]);
        let mut rm = rand_t(&mut r, &[c]);
        let mut rv = Tensor::from_vec(
            &[c],
            rand_t(&mut r, &[c])
                .data()
                .iter()
                .map(|v| v.abs())
                .collect(),
        );
        let (gx, gg, gb) = (up(&x, &dev), up(&gamma, &dev), up(&beta, &dev));
        let (mut grm, mut grv) = (up(&rm, &dev), up(&rv, &dev));

        let (y, saved) =
            batchnorm::train_forward(&x, &gamma, &beta, &mut rm, &mut rv, BN_MOMENTUM, BN_EPS);
        let (gy, gsaved) =
            batchnorm::train_forward(&gx, &gg, &gb, &mut grm, &mut grv, BN_MOMENTUM, BN_EPS);
        // GPU: f32 block sums over N·H·W values; CPU: f64. The normalised output, the batch
        // statistics and the running statistics agree to fp32 rounding: 1e-5.
        assert_rel(&format!("bn y, {case}"), &gy, &y, 1e-5);
        assert_rel(
            &format!("bn saved mean, {case}"),
            &gsaved.mean,
            &saved.mean,
            1e-5,
        );
        assert_rel(
            &format!("bn saved invstd, {case}"),
            &gsaved.invstd,
            &saved.invstd,
            1e-5,
        );
        assert_rel(&format!("bn running_mean, {case}"), &grm, &rm, 1e-5);
        assert_rel(&format!("bn running_var, {case}"), &grv, &rv, 1e-5);

        let ye = batchnorm::eval_forward(&x, &gamma, &beta, &rm, &rv, BN_EPS);
        let gye = batchnorm::eval_forward(&gx, &gg, &gb, &grm, &grv, BN_EPS);
        assert_rel(&format!("bn eval y, {case}"), &gye, &ye, 1e-5);

        let dy = rand_t(&mut r, &shape);
        let gdy = up(&dy, &dev);
        let (mut dg, mut db) = (rand_t(&mut r, &[c]), rand_t(&mut r, &[c]));
        let (mut gdg, mut gdb) = (up(&dg, &dev), up(&db, &dev));
        let dx = batchnorm::backward(&x, &dy, &gamma, &saved, &mut dg, &mut db);
        let gdx = batchnorm::backward(&gx, &gdy, &gg, &gsaved, &mut gdg, &mut gdb);
        // dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)) is a difference of O(1) terms whose
        // result is smaller than its parts, and the GPU's two channel sums are f32 trees over
        // N·H·W values where the CPU's are f64: the cancellation amplifies the sums' rounding,
        // so 1e-4 for dx, dγ and dβ.
        assert_rel(&format!("bn dx, {case}"), &gdx, &dx, 1e-4);
        assert_rel(&format!("bn dgamma (accumulated), {case}"), &gdg, &dg, 1e-4);
        assert_rel(&format!("bn dbeta (accumulated), {case}"), &gdb, &db, 1e-4);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn relu_add_and_accumulate_are_exact() {
    let dev = gpu();
    let mut r = rng(3);
    for shape in [vec![1, 1, 1, 1], vec![3, 5, 7, 9], vec![8, 16, 32, 32]] {
        let case = format!("{shape:?}");
        let (a, b) = (rand_t(&mut r, &shape), rand_t(&mut r, &shape));
        let (ga, gb) = (up(&a, &dev), up(&b, &dev));
        // One IEEE operation (or a select) per element on the same inputs: bit-exact.
        let y = relu_forward(&a);
        let gy = relu_forward(&ga);
        assert_exact(&format!("relu y, {case}"), &gy, &y);
        assert_exact(
            &format!("relu dx, {case}"),
            &relu_backward(&gb, &gy),
            &relu_backward(&b, &y),
        );
        assert_exact(&format!("add, {case}"), &add(&ga, &gb), &add(&a, &b));
        let (mut acc, mut gacc) = (a.clone(), ga.clone());
        add_assign(&mut acc, &b);
        add_assign(&mut gacc, &gb);
        assert_exact(&format!("add_assign, {case}"), &gacc, &acc);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn pad_shortcut_is_exact() {
    let dev = gpu();
    let mut r = rng(4);
    for (shape, cout, s) in [
        ([3, 3, 5, 7], 6, 2),
        ([1, 4, 4, 4], 8, 2),
        ([3, 2, 3, 3], 2, 1),
        ([2, 16, 32, 32], 32, 2),
    ] {
        let case = format!("{shape:?} -> {cout}, stride {s}");
        let x = rand_t(&mut r, &shape);
        let y = pad_shortcut_forward(&x, cout, s);
        let gy = pad_shortcut_forward(&up(&x, &dev), cout, s);
        // Pure data movement: exact.
        assert_exact(&format!("shortcut y, {case}"), &gy, &y);
        let dy = rand_t(&mut r, y.shape());
        let dx = pad_shortcut_backward(&dy, &shape, s);
        let gdx = pad_shortcut_backward(&up(&dy, &dev), &shape, s);
        assert_exact(&format!("shortcut dx, {case}"), &gdx, &dx);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn global_average_pool() {
    let dev = gpu();
    let mut r = rng(5);
    for shape in [[1, 3, 1, 1], [3, 5, 4, 4], [8, 64, 8, 8], [2, 7, 5, 3]] {
        let case = format!("{shape:?}");
        let x = rand_t(&mut r, &shape);
        let y = global_avg_pool_forward(&x);
        // GPU sums ≤ 64 values in f32, CPU in f64: 1e-6.
        assert_rel(
            &format!("pool y, {case}"),
            &global_avg_pool_forward(&up(&x, &dev)),
            &y,
            1e-6,
        );
        let dy = rand_t(&mut r, y.shape());
        let dx = global_avg_pool_backward(&dy, &shape);
        // CPU multiplies by 1/(h·w), GPU divides by h·w: at most 1 ulp apart, 1e-6.
        let gdx = global_avg_pool_backward(&up(&dy, &dev), &shape);
        assert_rel(&format!("pool dx, {case}"), &gdx, &dx, 1e-6);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn linear_forward_and_backward() {
    let dev = gpu();
    let mut r = rng(6);
    for (n, fin, fout) in [(1, 5, 3), (3, 7, 10), (8, 64, 100), (128, 64, 10)] {
        let case = format!("n {n}, {fin} -> {fout}");
        let (x, w, b) = (
            rand_t(&mut r, &[n, fin]),
            rand_t(&mut r, &[fout, fin]),
            rand_t(&mut r, &[fout]),
        );
        let (gx, gw, gb) = (up(&x, &dev), up(&w, &dev), up(&b, &dev));
        // Dot products of ≤ 128 terms in another order: 1e-5.
        let y = linear_forward(&x, &w, &b);
        assert_rel(
            &format!("fc y, {case}"),
            &linear_forward(&gx, &gw, &gb),
            &y,
            1e-5,
        );
        let dy = rand_t(&mut r, &[n, fout]);
        let (mut dw, mut db) = (rand_t(&mut r, &[fout, fin]), rand_t(&mut r, &[fout]));
        let (mut gdw, mut gdb) = (up(&dw, &dev), up(&db, &dev));
        let dx = linear_backward(&dy, &x, &w, &mut dw, &mut db);
        let gdx = linear_backward(&up(&dy, &dev), &gx, &gw, &mut gdw, &mut gdb);
        assert_rel(&format!("fc dx, {case}"), &gdx, &dx, 1e-5);
        assert_rel(&format!("fc dw (accumulated), {case}"), &gdw, &dw, 1e-5);
        assert_rel(&format!("fc db (accumulated), {case}"), &gdb, &db, 1e-5);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn softmax_cross_entropy_loss_correct_and_gradient() {
    let dev = gpu();
    let mut r = rng(7);
    // 300 rows > the kernel's 256 threads (its row loop); 100 classes as CIFAR-100.
    for (n, k) in [(1, 10), (8, 10), (300, 100), (5, 3)] {
        let case = format!("{n}x{k}");
        let mut logits = Tensor::from_vec(
            &[n, k],
            rand_t(&mut r, &[n, k])
                .data()
                .iter()
                .map(|v| 4.0 * v)
                .collect(),
        );
        let labels: Vec<usize> = (0..n).map(|_| r.gen_range(0..k)).collect();
        // Ties: row 0's max is repeated at its label and at a lower index (argmax must be
        // the lowest index on both devices, so this row counts as wrong).
        if k >= 3 {
            let l = labels[0].max(1);
            let row = &mut logits.data_mut()[..k];
            row.iter_mut().for_each(|v| *v = -1.0);
            row[l] = 5.0;
            row[l - 1] = 5.0;
        }
        let labels = if k >= 3 {
            let mut l = labels;
            l[0] = l[0].max(1);
            l
        } else {
            labels
        };
        let cpu = softmax_cross_entropy(&logits, &labels);
        let gpu_out = softmax_cross_entropy(&up(&logits, &dev), &labels);
        // Loss: GPU sums exp in f32 over ≤ 100 classes and the batch in an f32 tree, CPU in
        // f64: 1e-5 relative.
        let e = ((gpu_out.loss - cpu.loss) / cpu.loss).abs();
        assert!(
            e <= 1e-5,
            "loss {case}: gpu {} cpu {}",
            gpu_out.loss,
            cpu.loss
        );
        assert_eq!(gpu_out.correct, cpu.correct, "correct count, {case}");
        assert_rel(
            &format!("dlogits, {case}"),
            &gpu_out.dlogits,
            &cpu.dlogits,
            1e-5,
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sgd_update_with_and_without_nesterov_and_decay() {
    let dev = gpu();
    let mut r = rng(8);
    for len in [1, 17, 4099] {
        for (nesterov, wd) in [(false, 0.0), (false, 5e-4), (true, 1e-4), (true, 0.0)] {
            let case = format!("len {len}, nesterov {nesterov}, wd {wd}");
            let cfg = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: wd,
                nesterov,
            };
            let (mut p, mut m) = (rand_t(&mut r, &[len]), rand_t(&mut r, &[len]));
            let (mut gp, mut gm) = (up(&p, &dev), up(&m, &dev));
            for _ in 0..3 {
                let g = rand_t(&mut r, &[len]);
                sgd::update(&mut p, &g, &mut m, cfg);
                sgd::update(&mut gp, &up(&g, &dev), &mut gm, cfg);
            }
            // Elementwise, but nvrtc may contract `g + wd·p` and `μ·buf + g` into fma where
            // the CPU rounds twice: a few ulp after three steps, so 1e-6.
            assert_rel(&format!("sgd param, {case}"), &gp, &p, 1e-6);
            assert_rel(&format!("sgd momentum, {case}"), &gm, &m, 1e-6);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn augment_kernel_matches_write_sample() {
    use tensor::augment::{augment_batch, Normalize};
    let dev = gpu();
    let g = dev.gpu().expect("a CUDA device");
    let mut r = rng(9);
    let (ndata, batch) = (5usize, 23usize);
    let img = data::IMAGE_BYTES;
    let images: Vec<u8> = (0..ndata * img).map(|_| r.gen()).collect();
    let labels: Vec<u8> = (0..ndata).map(|_| r.gen_range(0..100)).collect();
    let norm = data::Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    // Every offset in -4..=4 on both axes appears, with and without flips.
    let augs: Vec<(usize, data::SampleAug)> = (0..batch)
        .map(|b| {
            let aug = data::SampleAug {
                dx: (b as i32 % 9) - 4,
                dy: ((b as i32 * 4) % 9) - 4,
                flip: b % 2 == 1,
            };
            (r.gen_range(0..ndata), aug)
        })
        .collect();
    let mut want = vec![0.0f32; batch * img];
    for (b, &(idx, aug)) in augs.iter().enumerate() {
        data::write_sample(
            &images[idx * img..][..img],
            aug,
            &norm,
            &mut want[b * img..][..img],
        );
    }
    let params: Vec<i32> = augs
        .iter()
        .flat_map(|&(idx, a)| [idx as i32, a.dx, a.dy, i32::from(a.flip)])
        .collect();
    let d_images = g.upload(&images).unwrap();
    let d_labels = g.upload(&labels).unwrap();
    let d_params = g.upload(&params).unwrap();
    let mut out = g.zeros::<f32>(batch * img).unwrap();
    let mut out_labels = g.zeros::<i32>(batch).unwrap();
    let side = data::IMAGE_SIDE;
    augment_batch(
        g,
        &d_images.as_view(),
        &d_labels.as_view(),
        &d_params.as_view(),
        &mut out.as_view_mut(),
        &mut out_labels.as_view_mut(),
        (batch, side, side),
        &Normalize {
            mean: norm.mean,
            std: norm.std,
        },
    )
    .unwrap();
    let got = g.download(&out.as_view()).unwrap();
    let got_labels = g.download(&out_labels.as_view()).unwrap();
    // The kernel repeats write_sample's arithmetic (no fma): bit-exact expected; at most
    // 1 ulp tolerated.
    for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
        let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
        assert!(
            ulps <= 1,
            "augment element {i}: gpu {a} vs cpu {b} ({ulps} ulp)"
        );
    }
    let want_labels: Vec<i32> = augs.iter().map(|&(idx, _)| labels[idx] as i32).collect();
    assert_eq!(got_labels, want_labels);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tensors_on_the_gpu_behave() {
    let dev = gpu();
    assert_eq!(
        Device::cuda(0).unwrap(),
        *dev,
        "the device is opened once and shared"
    );
    assert!(dev.to_string().starts_with("cuda:"));
    let mut r = rng(10);
    let t = rand_t(&mut r, &[2, 3, 5]);
    let g = up(&t, &dev);
    assert_eq!(g.device(), *dev);
    assert_eq!(g.shape(), t.shape());
    assert_eq!(g.len(), t.len());
    assert_exact("round trip", &g, &t);
    assert_exact("clone", &g.clone(), &t);
    assert_exact("to_device, same GPU", &g.to_device(&dev).unwrap(), &t);
    assert_eq!(g, t, "PartialEq compares values across devices");
    assert_eq!(g.to_vec().unwrap(), t.data());
    assert!((g.sum_sq() - t.sum_sq()).abs() <= 1e-12 * t.sum_sq());
    assert_exact(
        "reshape",
        &g.clone().reshape(&[6, 5]),
        &t.clone().reshape(&[6, 5]),
    );
    let mut z = g.clone();
    z.fill(0.0);
    assert_eq!(z.to_vec().unwrap(), vec![0.0; 30]);
    z.fill(1.5);
    assert_eq!(z.to_vec().unwrap(), vec![1.5; 30]);
    let zo = Tensor::zeros_on(&[4], &dev).unwrap();
    assert!(zo.is_cuda() && zo.to_vec().unwrap() == vec![0.0; 4]);
    let mut back = g.clone();
    back.move_to(&Device::Cpu).unwrap();
    assert!(!back.is_cuda() && back == t);
    assert!(g.host_data().is_none());
    // Misuse is a clear panic, not garbage.
    let msg = |f: Box<dyn FnOnce() + std::panic::UnwindSafe>| {
        let e = std::panic::catch_unwind(f).expect_err("should panic");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let g2 = g.clone();
    let m = msg(Box::new(move || {
        let _ = g2.data();
    }));
    assert!(m.contains("GPU memory") && m.contains("to_host"), "{m}");
    let (g3, t3) = (g.clone(), t.clone());
    let m = msg(Box::new(move || {
        let _ = add(&g3, &t3);
    }));
    assert!(m.contains("different devices"), "{m}");
    // Out of memory is an Err from the fallible API.
    let huge = Tensor::zeros_on(&[1 << 20, 1 << 20], &dev);
    let e = huge.expect_err("4 TiB should not fit");
    assert!(e.to_string().contains("CUDA"), "{e}");
    dev.synchronize().unwrap();
}

/// One SGD step of a whole network on both devices from the same weights, with an evaluation
/// before and after it. `grad_tol` bounds the gradients, updates and momentum per tensor: what
/// two correct engines that add in different orders can differ by after the whole backward
/// pass, which depends on the network (see the callers). `eval_after_tol` bounds the evaluation
/// after the update, `None` where that is not a well-conditioned quantity.
fn whole_model_step(
    config: &ResNetConfig,
    batch: usize,
    loss_tol: f32,
    grad_tol: f64,
    eval_after_tol: Option<f32>,
) {
    let dev = gpu();
    let mut cpu = ResNet::new(config, 7);
    let mut gpu_model = cpu.clone();
    gpu_model.to_device(&dev).expect("model to GPU");
    assert_eq!(gpu_model.device(), *dev);
    let mut r = rng(11);
    let x = rand_t(&mut r, &[batch, 3, 32, 32]);
    let labels: Vec<usize> = (0..batch)
        .map(|_| r.gen_range(0..config.num_classes))
        .collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
        decay_weights_only: true,
    };
    // Evaluation from the same weights (running statistics, BN in eval mode): a forward pass,
    // well conditioned: the loss tolerance.
    let ea = eval_batch(&mut cpu, &x, &labels);
    let eb = eval_batch(&mut gpu_model, &up(&x, &dev), &labels);
    let e = ((eb.loss - ea.loss) / ea.loss).abs();
    assert!(
        e <= loss_tol,
        "eval loss before the step: gpu {} cpu {} (rel {e:.2e})",
        eb.loss,
        ea.loss
    );
    let a = train_step(&mut cpu, &sgd, &x, &labels, 0.1);
    let b = train_step(&mut gpu_model, &sgd, &up(&x, &dev), &labels, 0.1);
    let e = ((b.loss - a.loss) / a.loss).abs();
    assert!(
        e <= loss_tol,
        "loss: gpu {} cpu {} (rel {e:.2e})",
        b.loss,
        a.loss
    );
    assert_eq!((b.correct, b.count), (a.correct, a.count), "correct count");
    let mut before = ResNet::new(config, 7);
    let olds: Vec<Tensor> = before
        .params_mut()
        .into_iter()
        .map(|p| p.value.clone())
        .collect();
    for ((pc, pg), old) in cpu
        .params_mut()
        .into_iter()
        .zip(gpu_model.params_mut())
        .zip(olds)
    {
        let name = pc.name.clone();
        assert_rel(&format!("grad {name}"), &pg.grad, &pc.grad, grad_tol);
        // The update itself, w_new − w_old, carries the gradient's error.
        let upd = |t: &Tensor| {
            let h = t.to_host().unwrap();
            Tensor::from_vec(
                h.shape(),
                h.data()
                    .iter()
                    .zip(old.data())
                    .map(|(a, b)| a - b)
                    .collect(),
            )
        };
        let (uc, ug) = (upd(&pc.value), upd(&pg.value));
        let ug = ug.to_device(&dev).unwrap();
        assert_rel(&format!("update {name}"), &ug, &uc, grad_tol);
        // The new weights, w_old (the same bits on both) + update: their error is the
        // update's (≤ 1e-3·‖update‖, checked above) plus fp32 rounding. Relative to ‖w_new‖
        // that is small where w_old dominates, but not for BN's β, which starts at 0 (there
        // w_new = update): so the bound scales with ‖update‖ / ‖w_new‖.
        let tol = 1e-6 + grad_tol * (uc.sum_sq() / pc.value.sum_sq()).sqrt();
        assert_rel(&format!("weight {name}"), &pg.value, &pc.value, tol);
        assert_rel(
            &format!("momentum {name}"),
            &pg.momentum,
            &pc.momentum,
            grad_tol,
        );
    }
    for (bc, bg) in cpu.bns_mut().into_iter().zip(gpu_model.bns_mut()) {
        assert_eq!(bc.num_batches_tracked, bg.num_batches_tracked);
        // Batch statistics of activations that carry the forward error: 1e-4.
        assert_rel(
            &format!("{} running_mean", bc.name),
            &bg.running_mean,
            &bc.running_mean,
            1e-4,
        );
        assert_rel(
            &format!("{} running_var", bc.name),
            &bg.running_var,
            &bc.running_var,
            1e-4,
        );
    }
    // Evaluation with the updated weights and running statistics. The weights carry the
    // update's error (up to `grad_tol` of the update, checked above), and the evaluation loss
    // carries as much of the step's change of it.
    let ea = eval_batch(&mut cpu, &x, &labels);
    let eb = eval_batch(&mut gpu_model, &up(&x, &dev), &labels);
    if let Some(tol) = eval_after_tol {
        let e = ((eb.loss - ea.loss) / ea.loss).abs();
        assert!(
            e <= tol,
            "eval loss after the step: gpu {} cpu {} (rel {e:.2e})",
            eb.loss,
            ea.loss
        );
    }
    // Moving back gives host tensors the CPU engine accepts.
    gpu_model.to_device(&Device::Cpu).unwrap();
    let back = eval_batch(&mut gpu_model, &x, &labels);
    assert!(((back.loss - eb.loss) / eb.loss).abs() <= 1e-4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn resnet20_training_step_matches_the_cpu() {
    // The loss is a mean over the batch of logits that went through 20 layers: 1e-4. The
    // gradients: 1e-3 per tensor (the CPU engine's own gradients move by ~2e-6 when the input
    // is scaled by 1 + 1e-7: this network is well conditioned).
    let (width, batch) = model_size(8);
    let config = ResNetConfig::from_depth(20, width, None, 10).unwrap();
    whole_model_step(&config, batch, 1e-4, 1e-3, Some(1e-3));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn bottleneck_conv_shortcut_training_step_matches_the_cpu() {
    // Four stages (4x4 last stage), 1x1 convolutions, option-B shortcuts, 100 classes, batch 2.
    // This network is ill-conditioned at initialisation: the CPU engine's own gradients move by
    // up to 1.8e-2 per tensor when the input is scaled by 1 + 1e-7 (measured; and its AVX-512
    // and reference paths, each correct to 6e-7 per convolution, differ by as much), so two
    // engines that add in different orders cannot agree closer: 5e-2 per tensor. The loss and
    // the evaluation before the step are well conditioned: 1e-4. The evaluation after the step
    // is not (one update moves it from 27.7 to 3.0, and the two CPU paths end 3.01 and 3.44
    // apart): not compared.
    let config = ResNetConfig::from_depth(50, Some(8), None, 100).unwrap();
    whole_model_step(&config, 2, 1e-4, 5e-2, None);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_training_step_is_deterministic() {
    assert_two_runs_identical(tensor::Precision::Fp32, true, 12);
}

/// What `train` runs on a GPU: several steps queued with device labels, the loss and hits
/// accumulating in a device meter that is read once at the end. The reading equals the CPU
/// meter's over the same steps within the whole-step tolerance above (1e-4 relative on the
/// loss; the same hits), and logits, labels and meter on different devices are a panic.
#[test]
#[ignore = "needs a CUDA GPU"]
fn loss_meter_over_gpu_steps_with_device_labels_matches_the_cpu() {
    let dev = gpu();
    let (width, _) = model_size(8);
    let config = ResNetConfig::from_depth(20, width, None, 10).unwrap();
    let mut cpu = ResNet::new(&config, 7);
    let mut gpu_model = cpu.clone();
    gpu_model.to_device(&dev).expect("model to GPU");
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    let mut r = rng(13);
    let mut cpu_meter = LossMeter::new(&Device::Cpu).unwrap();
    let mut gpu_meter = LossMeter::new(&dev).unwrap();
    assert_eq!(gpu_meter.device(), *dev);
    let mut batches = Vec::new();
    for batch in [8, 5, 8] {
        let x = rand_t(&mut r, &[batch, 3, 32, 32]);
        let host = Labels::host((0..batch).map(|_| r.gen_range(0..10)).collect());
        let on_gpu = host.to_device(&dev).unwrap();
        assert!(on_gpu.is_cuda() && on_gpu.len() == batch);
        assert_eq!(on_gpu.to_vec().unwrap(), host.to_vec().unwrap());
        train_step_into(&mut cpu, &sgd, &x, &host, 0.1, &mut cpu_meter);
        train_step_into(
            &mut gpu_model,
            &sgd,
            &up(&x, &dev),
            &on_gpu,
            0.1,
            &mut gpu_meter,
        );
        batches.push((x, host, on_gpu));
    }
    let (a, b) = (cpu_meter.read().unwrap(), gpu_meter.read().unwrap());
    assert_eq!(b.count, 21);
    let e = ((b.loss - a.loss) / a.loss).abs();
    assert!(
        e <= 1e-4,
        "mean loss: gpu {} cpu {} (rel {e:.2e})",
        b.loss,
        a.loss
    );
    assert_eq!(b.correct, a.correct, "correct count");
    // Reset, then evaluation into the same meters.
    cpu_meter.reset().unwrap();
    gpu_meter.reset().unwrap();
    assert_eq!(gpu_meter.read().unwrap().count, 0);
    for (x, host, on_gpu) in &batches {
        eval_batch_into(&mut cpu, x, host, &mut cpu_meter);
        eval_batch_into(&mut gpu_model, &up(x, &dev), on_gpu, &mut gpu_meter);
    }
    let (a, b) = (cpu_meter.read().unwrap(), gpu_meter.read().unwrap());
    let e = ((b.loss - a.loss) / a.loss).abs();
    assert!(
        e <= 1e-4,
        "eval loss: gpu {} cpu {} (rel {e:.2e})",
        b.loss,
        a.loss
    );
    assert_eq!((b.correct, b.count), (a.correct, a.count));
    // Mixed devices: a clear panic, like any op's.
    let logits = up(&rand_t(&mut r, &[2, 10]), &dev);
    let host = Labels::host(vec![1, 2]);
    let m = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tensor::loss::softmax_cross_entropy_into(&logits, &host, &mut gpu_meter);
    }))
    .expect_err("host labels with GPU logits must panic");
    let m = m.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(m.contains("different devices"), "{m}");
    dev.synchronize().unwrap();
}
