//! Device plumbing that runs without a GPU: moving a model to the CPU changes nothing, and
//! asking for a GPU on a machine without one is a clean error.

use model::step::{eval_batch, eval_batch_into, train_step, train_step_into};
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::{Device, Labels, LossMeter, Tensor};

#[test]
fn moving_to_the_cpu_is_a_no_op_and_keeps_every_bit() {
    let config = ResNetConfig::from_depth(20, Some(4), None, 10).unwrap();
    let mut a = ResNet::new(&config, 5);
    let mut b = a.clone();
    b.to_device(&Device::Cpu).unwrap();
    assert_eq!(b.device(), Device::Cpu);
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let x = Tensor::from_vec(
        &[4, 3, 32, 32],
        (0..4 * 3072).map(|_| r.gen_range(-2.0f32..2.0)).collect(),
    );
    let labels = [1, 0, 9, 3];
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    for _ in 0..2 {
        let ra = train_step(&mut a, &sgd, &x, &labels, 0.1);
        let rb = train_step(&mut b, &sgd, &x, &labels, 0.1);
        assert_eq!(ra.loss.to_bits(), rb.loss.to_bits());
        // Moving between steps (saved activations are dropped) changes nothing either.
        b.to_device(&Device::Cpu).unwrap();
    }
    for (pa, pb) in a.params_mut().into_iter().zip(b.params_mut()) {
        assert_eq!(pa.value, pb.value, "{}", pa.name);
        assert_eq!(pa.momentum, pb.momentum, "{}", pa.name);
    }
}

#[test]
fn asking_for_a_missing_gpu_is_an_error_not_a_panic() {
    let config = ResNetConfig::from_depth(20, Some(4), None, 10).unwrap();
    let mut m = ResNet::new(&config, 5);
    // Ordinal 4096 exists nowhere: an Err here (no driver) and on a GPU machine alike.
    let r = std::panic::catch_unwind(|| Device::parse("cuda:4096"));
    let e = r.expect("no panic").expect_err("no such device");
    assert!(e.to_string().contains("CUDA"), "{e}");
    // Ordinal 0: opens on a GPU machine; on this project's CPU machines a readable Err.
    if let Err(e) = std::panic::catch_unwind(|| Device::cuda(0)).expect("no panic") {
        assert!(
            e.to_string().contains("CUDA") || e.to_string().contains("nvrtc"),
            "{e}"
        );
    }
    // The model is untouched and still on the CPU.
    assert_eq!(m.device(), Device::Cpu);
    assert!(m.num_params() > 0);
}

/// The meter form of the step (what `train` runs: no read per step) changes the model exactly
/// as the one-batch form does, and its meter holds the batches' results combined.
#[test]
fn train_step_into_matches_train_step_bit_for_bit() {
    let config = ResNetConfig::from_depth(20, Some(4), None, 10).unwrap();
    let mut a = ResNet::new(&config, 9);
    let mut b = a.clone();
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let batches: Vec<(Tensor, Vec<usize>)> = [4, 3, 4]
        .iter()
        .map(|&n| {
            let x = Tensor::from_vec(
                &[n, 3, 32, 32],
                (0..n * 3072).map(|_| r.gen_range(-2.0f32..2.0)).collect(),
            );
            (x, (0..n).map(|_| r.gen_range(0..10)).collect())
        })
        .collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: true,
        decay_weights_only: true,
    };
    let mut meter = LossMeter::new(&Device::Cpu).unwrap();
    let (mut loss_sum, mut correct, mut count) = (0.0f64, 0, 0);
    for (x, labels) in &batches {
        let ra = train_step(&mut a, &sgd, x, labels, 0.1);
        let before = meter.read().unwrap().loss_sum;
        train_step_into(
            &mut b,
            &sgd,
            x,
            &Labels::host(labels.clone()),
            0.1,
            &mut meter,
        );
        let batch_sum = meter.read().unwrap().loss_sum - before;
        assert!((batch_sum / labels.len() as f64 - ra.loss as f64).abs() < 1e-6);
        loss_sum += ra.loss as f64 * labels.len() as f64;
        correct += ra.correct;
        count += ra.count;
    }
    let m = meter.read().unwrap();
    assert_eq!((m.correct, m.count), (correct, count));
    assert!(
        (m.loss_sum - loss_sum).abs() <= 1e-6 * loss_sum,
        "{m:?} vs {loss_sum}"
    );
    for (pa, pb) in a.params_mut().into_iter().zip(b.params_mut()) {
        assert_eq!(pa.value, pb.value, "{}", pa.name);
        assert_eq!(pa.momentum, pb.momentum, "{}", pa.name);
    }
    for (ba, bb) in a.bns_mut().into_iter().zip(b.bns_mut()) {
        assert_eq!(ba.running_mean, bb.running_mean, "{}", ba.name);
        assert_eq!(ba.running_var, bb.running_var, "{}", ba.name);
    }
    let (x, labels) = &batches[0];
    let one = eval_batch(&mut a, x, labels);
    let mut em = LossMeter::new(&Device::Cpu).unwrap();
    eval_batch_into(&mut b, x, &Labels::host(labels.clone()), &mut em);
    let e = em.read().unwrap();
    assert_eq!((e.loss as f32).to_bits(), one.loss.to_bits());
    assert_eq!((e.correct, e.count), (one.correct, one.count));
}

/// CUDA graphs need a GPU: capturing on the CPU is a clean `Err`, and leaves the model usable.
#[test]
fn capturing_a_step_on_the_cpu_is_an_error() {
    let config = ResNetConfig::from_depth(20, Some(4), None, 10).unwrap();
    let mut m = ResNet::new(&config, 1);
    let x = Tensor::zeros(&[2, 3, 32, 32]);
    let labels = tensor::Labels::host(vec![1, 2]);
    let mut meter = tensor::LossMeter::new(&tensor::Device::Cpu).unwrap();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
        decay_weights_only: false,
    };
    let e = model::step::CapturedStep::capture(&mut m, &sgd, &x, &labels, &mut meter)
        .err()
        .expect("a capture on the CPU succeeded");
    assert!(e.to_string().contains("GPU"), "{e}");
    model::step::train_step_into(&mut m, &sgd, &x, &labels, 0.1, &mut meter);
    assert_eq!(meter.count(), 2);
}
