//! The speed work's GPU paths against the CPU engine: the bf16 tensor-core convolutions
//! (`kernels/cuda/conv_bf16.cu`) against their CPU twin (operands rounded to bf16, then the f32
//! conv: `tensor::conv::*_with(.., Bf16)`), a whole bf16 training step, and the single-launch
//! SGD step over all parameters (`sgd_step_tensors`).
//!
//! Every test is `#[ignore = "needs a CUDA GPU"]` and FAILS (never skips) without one:
//! `cargo test -p resnet-cifar --test gpu -- --include-ignored` on the GPU machine
//! (sm_80+).
//!
//! Error measure: `‖gpu − cpu‖₂ / ‖cpu‖₂` in f64, bound stated at each check.

use super::common::*;
use model::step::train_step;
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::sgd::{self, SgdConfig, SgdParam};
use tensor::{conv, Precision, Tensor};

const BF16: Precision = Precision::Bf16;

/// The tensor cores against the twin. Both add the same exact bf16×bf16 products in f32; only
/// the order differs, and the hardware's internal accumulation is not specified to round each
/// addition to nearest. Worst case per sum ≈ terms · 2^-24 (≤ 8192 terms for dW here, ~5e-4
/// for a fully adversarial order; random signs give ~1e-6): bound 1e-4. An operand left
/// unrounded, a fragment in the wrong place or a missing tile is ≥ 1e-3.
#[test]
#[ignore = "needs a CUDA GPU"]
fn bf16_conv_matches_its_cpu_twin() {
    let dev = gpu();
    let mut r = ChaCha8Rng::seed_from_u64(21);
    for (xs, ws, s) in CONV_CASES {
        let case = format!("x {xs:?} w {ws:?} stride {s}");
        let (x, w) = (rand_t(&mut r, &xs), rand_t(&mut r, &ws));
        let (gx, gw) = (up(&x, &dev), up(&w, &dev));
        let y = conv::conv2d_forward_with(&x, &w, s, BF16);
        let gy = conv::conv2d_forward_with(&gx, &gw, s, BF16);
        assert_rel(&format!("bf16 conv y, {case}"), &gy, &y, 1e-4);
        // And it is bf16, not fp32: against the exact conv it is off by the operands' rounding.
        let exact = conv::conv2d_forward(&x, &w, s);
        let e = rel_err(&gy, &exact);
        assert!((1e-4..1e-2).contains(&e), "bf16 vs fp32 y, {case}: {e:.3e}");

        let dy = rand_t(&mut r, y.shape());
        let gdy = up(&dy, &dev);
        let dx = conv::conv2d_backward_data_with(&dy, &w, &xs, s, BF16);
        let gdx = conv::conv2d_backward_data_with(&gdy, &gw, &xs, s, BF16);
        assert_rel(&format!("bf16 conv dx, {case}"), &gdx, &dx, 1e-4);
        let mut dw = rand_t(&mut r, &ws);
        let mut gdw = up(&dw, &dev);
        conv::conv2d_backward_weight_with(&x, &dy, s, &mut dw, BF16);
        conv::conv2d_backward_weight_with(&gx, &gdy, s, &mut gdw, BF16);
        assert_rel(&format!("bf16 conv dw, {case}"), &gdw, &dw, 1e-4);
    }
}

/// One ResNet-20 step with bf16 convolutions, GPU vs the CPU engine in bf16 from the same
/// weights. The kernels themselves are checked against the twin at 1e-4 above (and at 1e-5 in
/// the emulator); this checks the wiring of a whole step: the loss within 1e-3 of the twin, and
/// within 1e-2 of the fp32 loss (bf16 approximates the same network, not another one).
///
/// The gradients cannot be held to much: rounding to bf16 is discontinuous (ties to even, and
/// sums of bf16 products often sit exactly on a tie), so a 1-ulp difference in summation order
/// flips roundings, and BN's backward amplifies the flips. Measured on the CPU twin itself:
/// nudging every value by at most 1 f32 ulp before each bf16 rounding changes the gradients by
/// 5e-3 (fc, last block) to 1.6e-1 (stem) per tensor; the emulated GPU step differs from the
/// twin by the same 5e-3 .. 1.6e-1, tensor for tensor. A wrong kernel or a pass left in fp32
/// differs by order 1 (bf16 vs fp32 here: 0.1 .. 0.38). Hence 0.35 per tensor, and 1e-2 for the
/// fc layer, which no bf16 rounding precedes in the backward pass.
#[test]
#[ignore = "needs a CUDA GPU"]
fn bf16_resnet20_step_matches_the_cpu_twin() {
    let dev = gpu();
    let config = ResNetConfig::from_depth(20, None, None, 10).unwrap();
    let mut cpu = ResNet::new(&config, 7);
    let mut fp32 = cpu.clone();
    cpu.set_precision(BF16);
    let mut g = cpu.clone();
    g.to_device(&dev).expect("model to GPU");
    assert_eq!(g.precision(), BF16);
    let mut r = ChaCha8Rng::seed_from_u64(22);
    let x = rand_t(&mut r, &[8, 3, 32, 32]);
    let labels: Vec<usize> = (0..8).map(|_| r.gen_range(0..10)).collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
        decay_weights_only: true,
    };
    let a = train_step(&mut cpu, &sgd, &x, &labels, 0.1);
    let b = train_step(&mut g, &sgd, &up(&x, &dev), &labels, 0.1);
    let f = train_step(&mut fp32, &sgd, &x, &labels, 0.1);
    let e = ((b.loss - a.loss) / a.loss).abs();
    assert!(
        e <= 1e-3,
        "loss: gpu {} cpu {} (rel {e:.2e})",
        b.loss,
        a.loss
    );
    let e = ((b.loss - f.loss) / f.loss).abs();
    assert!(
        e <= 1e-2,
        "bf16 loss {} vs fp32 loss {} (rel {e:.2e})",
        b.loss,
        f.loss
    );
    for (pc, pg) in cpu.params_mut().into_iter().zip(g.params_mut()) {
        let name = pc.name.clone();
        let tol = if name.starts_with("fc.") { 1e-2 } else { 0.35 };
        assert_rel(&format!("grad {name}"), &pg.grad, &pc.grad, tol);
        assert_rel(&format!("momentum {name}"), &pg.momentum, &pc.momentum, tol);
    }
}

/// bf16 steps are as deterministic as fp32 ones: two runs give bit-identical weights.
#[test]
#[ignore = "needs a CUDA GPU"]
fn bf16_training_step_is_deterministic() {
    assert_two_runs_identical(BF16, false, 23);
}

/// The one-launch SGD step over separate tensors (through the device address table, lr from
/// device memory) against the CPU's per-tensor update, over three steps with a changing lr,
/// then again after one tensor is replaced (the cached table must be rebuilt, not reused).
/// Per element the same four operations; the GPU may contract them into fma: 1e-6.
#[test]
#[ignore = "needs a CUDA GPU"]
fn one_launch_sgd_over_all_tensors_matches_the_cpu() {
    let dev = gpu();
    let mut r = ChaCha8Rng::seed_from_u64(24);
    let shapes: [&[usize]; 5] = [&[16, 3, 3, 3], &[16], &[1], &[64, 16, 3, 3], &[10, 64]];
    let decays = [5e-4f32, 0.0, 0.0, 1e-3, 5e-4];
    let mk = |r: &mut ChaCha8Rng| -> Vec<Tensor> { shapes.iter().map(|s| rand_t(r, s)).collect() };
    let (mut cp, cg, mut cm) = (mk(&mut r), mk(&mut r), mk(&mut r));
    let up_all = |v: &[Tensor]| -> Vec<Tensor> { v.iter().map(|t| up(t, &dev)).collect() };
    let (mut gp, mut gg, mut gm) = (up_all(&cp), up_all(&cg), up_all(&cm));
    for round in 0..2 {
        if round == 1 {
            // A new gradient buffer for tensor 3: the address table must follow it.
            gg[3] = up(&cg[3], &dev);
        }
        for step in 0..3 {
            let lr = 0.1 / (1 + step + 3 * round) as f32;
            let mut params: Vec<SgdParam<'_>> = gp
                .iter_mut()
                .zip(&gg)
                .zip(gm.iter_mut())
                .zip(decays)
                .map(|(((value, grad), momentum), weight_decay)| SgdParam {
                    value,
                    grad,
                    momentum,
                    weight_decay,
                })
                .collect();
            sgd::update_all(&mut params, lr, 0.9, round == 1);
            for i in 0..shapes.len() {
                let cfg = SgdConfig {
                    lr,
                    momentum: 0.9,
                    weight_decay: decays[i],
                    nesterov: round == 1,
                };
                sgd::update(&mut cp[i], &cg[i], &mut cm[i], cfg);
            }
            for i in 0..shapes.len() {
                let what = format!("tensor {i} round {round} step {step}");
                assert_rel(&format!("param, {what}"), &gp[i], &cp[i], 1e-6);
                assert_rel(&format!("momentum, {what}"), &gm[i], &cm[i], 1e-6);
            }
        }
    }
}

/// The fused BN+ReLU kernels (forward train/eval, backward with ReLU's backward) and the fused
/// add+ReLU: bit-identical to the unfused GPU ops they replace (same arithmetic, same order),
/// and within the BN tolerance (1e-5, see parity.rs) of the CPU engine.
#[test]
#[ignore = "needs a CUDA GPU"]
fn fused_bn_relu_and_add_relu_equal_the_unfused_ops() {
    use tensor::batchnorm::{self, BN_EPS, BN_MOMENTUM};
    use tensor::elementwise::{add, add_relu, relu_backward, relu_forward};
    let dev = gpu();
    let mut r = ChaCha8Rng::seed_from_u64(25);
    for shape in [[1usize, 3, 5, 7], [3, 16, 8, 8], [2, 7, 4, 4]] {
        let c = shape[1];
        let what = format!("{shape:?}");
        let x = rand_t(&mut r, &shape);
        let (gamma, beta) = (rand_t(&mut r, &[c]), rand_t(&mut r, &[c]));
        let (gx, gg, gb) = (up(&x, &dev), up(&gamma, &dev), up(&beta, &dev));
        let rm = rand_t(&mut r, &[c]);
        let rv = Tensor::from_vec(
            &[c],
            rand_t(&mut r, &[c])
                .data()
                .iter()
                .map(|v| v.abs())
                .collect(),
        );
        let (mut crm, mut crv) = (rm.clone(), rv.clone());
        let (mut f_rm, mut f_rv, mut u_rm, mut u_rv) =
            (up(&rm, &dev), up(&rv, &dev), up(&rm, &dev), up(&rv, &dev));
        let (fy, fs) = batchnorm::train_forward_relu(
            &gx,
            &gg,
            &gb,
            &mut f_rm,
            &mut f_rv,
            BN_MOMENTUM,
            BN_EPS,
            true,
        );
        let (uy, us) =
            batchnorm::train_forward(&gx, &gg, &gb, &mut u_rm, &mut u_rv, BN_MOMENTUM, BN_EPS);
        let uy = relu_forward(&uy);
        assert_same_bits(&format!("bn+relu y {what}"), &fy, &uy);
        assert_same_bits(&format!("bn+relu running_var {what}"), &f_rv, &u_rv);
        let (cy, cs) = batchnorm::train_forward_relu(
            &x,
            &gamma,
            &beta,
            &mut crm,
            &mut crv,
            BN_MOMENTUM,
            BN_EPS,
            true,
        );
        assert_rel(&format!("bn+relu y vs cpu {what}"), &fy, &cy, 1e-5);

        let dy = rand_t(&mut r, &shape);
        let gdy = up(&dy, &dev);
        let zeros = || {
            (
                up(&Tensor::zeros(&[c]), &dev),
                up(&Tensor::zeros(&[c]), &dev),
            )
        };
        let ((mut fdg, mut fdb), (mut udg, mut udb)) = (zeros(), zeros());
        let fdx = batchnorm::backward_relu(&gx, &gdy, &gg, &fs, Some(&fy), &mut fdg, &mut fdb);
        let masked = relu_backward(&gdy, &uy);
        let udx = batchnorm::backward(&gx, &masked, &gg, &us, &mut udg, &mut udb);
        assert_same_bits(&format!("bn+relu dx {what}"), &fdx, &udx);
        assert_same_bits(&format!("bn+relu dgamma {what}"), &fdg, &udg);
        let (mut cdg, mut cdb) = (Tensor::zeros(&[c]), Tensor::zeros(&[c]));
        let cdx = batchnorm::backward_relu(&x, &dy, &gamma, &cs, Some(&cy), &mut cdg, &mut cdb);
        assert_rel(&format!("bn+relu dx vs cpu {what}"), &fdx, &cdx, 1e-4);

        let e = batchnorm::eval_forward_relu(&gx, &gg, &gb, &f_rm, &f_rv, BN_EPS, true);
        let ue = relu_forward(&batchnorm::eval_forward(
            &gx, &gg, &gb, &f_rm, &f_rv, BN_EPS,
        ));
        assert_same_bits(&format!("bn+relu eval {what}"), &e, &ue);

        let b2 = up(&rand_t(&mut r, &shape), &dev);
        assert_same_bits(
            &format!("add_relu {what}"),
            &add_relu(&gx, &b2),
            &relu_forward(&add(&gx, &b2)),
        );
    }
}

/// GPU tensors share their buffer between clones (a saved activation costs no copy) and copy
/// it on the first write: every writer — an op's in-place output, `fill`, the one-launch SGD
/// step through its address table — leaves the other clone's values untouched.
#[test]
#[ignore = "needs a CUDA GPU"]
fn clones_share_until_written_and_never_see_each_others_writes() {
    use tensor::elementwise::add_assign;
    let dev = gpu();
    let mut r = ChaCha8Rng::seed_from_u64(26);
    let x = rand_t(&mut r, &[4, 5]);
    let one = up(&Tensor::full(&[4, 5], 1.0), &dev);

    let mut a = up(&x, &dev);
    let b = a.clone();
    add_assign(&mut a, &one);
    assert_rel(
        "the written clone",
        &a,
        &Tensor::from_vec(&[4, 5], x.data().iter().map(|v| v + 1.0).collect()),
        0.0,
    );
    assert_rel("the other clone", &b, &x, 0.0);

    let mut c = b.clone();
    c.fill(0.0);
    assert_rel("the source of a filled clone", &b, &x, 0.0);

    // SGD writes parameters and momentum through raw addresses: a kept clone of a parameter
    // must not change.
    let (mut p, g, mut m) = (
        up(&x, &dev),
        up(&x, &dev),
        up(&Tensor::zeros(&[4, 5]), &dev),
    );
    let kept = p.clone();
    let mut params = [SgdParam {
        value: &mut p,
        grad: &g,
        momentum: &mut m,
        weight_decay: 0.0,
    }];
    sgd::update_all(&mut params, 0.5, 0.0, false);
    assert_rel("a kept clone of an updated parameter", &kept, &x, 0.0);
    let stepped = Tensor::from_vec(&[4, 5], x.data().iter().map(|v| v - 0.5 * v).collect());
    assert_rel("the updated parameter", &p, &stepped, 1e-7);
}

/// A training step captured as a CUDA graph and replayed gives, bit for bit, what the same
/// steps give eagerly: weights, momentum, BN running statistics and counters, and the loss
/// meter — over several replays with changing batches and learning rates, after the eager
/// warm-up step the capture needs. The graph runs the same kernels in the same order, so
/// anything but identical bits means the replay read or wrote something it should not.
#[test]
#[ignore = "needs a CUDA GPU"]
fn a_captured_step_replays_exactly_like_eager_steps() {
    use model::step::{train_step_into, CapturedStep};
    use tensor::{Labels, LossMeter};
    let dev = gpu();
    let (width, batch) = model_size(16);
    let config = ResNetConfig::from_depth(20, width, None, 10).unwrap();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: true,
        decay_weights_only: true,
    };
    let mut r = ChaCha8Rng::seed_from_u64(27);
    let batches: Vec<(Tensor, Labels)> = (0..4)
        .map(|_| {
            let x = up(&rand_t(&mut r, &[batch, 3, 32, 32]), &dev);
            let y: Vec<usize> = (0..batch).map(|_| r.gen_range(0..10)).collect();
            (x, Labels::host(y).to_device(&dev).unwrap())
        })
        .collect();
    let lrs = [0.1f32, 0.1, 0.05, 0.01, 0.01];
    let make = || {
        let mut m = ResNet::new(&config, 9);
        m.to_device(&dev).unwrap();
        m
    };
    let (mut eager, mut graphed) = (make(), make());
    let mut me = LossMeter::new(&dev).unwrap();
    let mut mg = LossMeter::new(&dev).unwrap();
    // Step 0 eager on both (the capture needs the SGD table), then 4 more.
    train_step_into(
        &mut eager,
        &sgd,
        &batches[0].0,
        &batches[0].1,
        lrs[0],
        &mut me,
    );
    train_step_into(
        &mut graphed,
        &sgd,
        &batches[0].0,
        &batches[0].1,
        lrs[0],
        &mut mg,
    );
    let mut step = CapturedStep::capture(&mut graphed, &sgd, &batches[1].0, &batches[1].1, &mut mg)
        .expect("capture");
    assert_eq!(mg.count(), batch, "the capture ran nothing");
    for i in 1..5 {
        let (x, y) = &batches[i % 4];
        train_step_into(&mut eager, &sgd, x, y, lrs[i], &mut me);
        step.run(&mut graphed, x, y, lrs[i], &mut mg)
            .expect("replay");
    }
    // The step refuses a model or meter it was not captured with (it would write elsewhere).
    let (x, y) = &batches[0];
    assert!(
        step.run(&mut eager, x, y, 0.1, &mut mg).is_err(),
        "ran on another model"
    );
    assert!(
        step.run(&mut graphed, x, y, 0.1, &mut me).is_err(),
        "ran with another meter"
    );
    // ... and a model whose buffers a clone shares (the replay would write into the clone).
    let snapshot = graphed.clone();
    assert!(
        step.run(&mut graphed, x, y, 0.1, &mut mg).is_err(),
        "ran while a clone shares the model's buffers"
    );
    drop(snapshot);
    let (a, b) = (me.read().unwrap(), mg.read().unwrap());
    assert_eq!((a.count, a.correct), (b.count, b.correct));
    assert_eq!(
        a.loss.to_bits(),
        b.loss.to_bits(),
        "meter loss {} vs {}",
        a.loss,
        b.loss
    );
    for (pa, pb) in eager.params_mut().into_iter().zip(graphed.params_mut()) {
        assert_same_bits(&format!("{} value", pa.name), &pa.value, &pb.value);
        assert_same_bits(&format!("{} momentum", pa.name), &pa.momentum, &pb.momentum);
    }
    for (ba, bb) in eager.bns_mut().into_iter().zip(graphed.bns_mut()) {
        assert_eq!(
            ba.num_batches_tracked, bb.num_batches_tracked,
            "{}",
            ba.name
        );
        assert_same_bits(
            &format!("{} running_var", ba.name),
            &ba.running_var,
            &bb.running_var,
        );
    }
}

/// One launch zeroes every gradient of a model (through the cached address table), again
/// after the table is built, and never touches a clone taken before.
#[test]
#[ignore = "needs a CUDA GPU"]
fn one_launch_zeroes_every_gradient() {
    let dev = gpu();
    let config = ResNetConfig::from_depth(20, Some(8), None, 10).unwrap();
    let mut m = ResNet::new(&config, 4);
    m.to_device(&dev).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(28);
    for round in 0..2 {
        let mut kept = Vec::new();
        for p in m.params_mut() {
            let shape = p.grad.shape().to_vec();
            p.grad = up(&rand_t(&mut r, &shape), &dev);
            kept.push(p.grad.clone());
        }
        m.zero_grad();
        for (p, k) in m.params_mut().into_iter().zip(&kept) {
            let g = p.grad.to_vec().unwrap();
            assert!(
                g.iter().all(|&v| v == 0.0),
                "{} not zeroed (round {round})",
                p.name
            );
            assert!(
                k.to_vec().unwrap().iter().all(|&v| v != 0.0),
                "{}'s clone changed",
                p.name
            );
        }
    }
}
