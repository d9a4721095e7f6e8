//! The whole CPU engine is deterministic given a seed: data order, augmentation, weights and
//! every floating-point sum. Two runs of a few steps through the real data pipeline and the
//! real model agree bit for bit; another seed gives another result; and the number of threads
//! changes nothing (every parallel sum is split by image or fixed image groups, never by
//! thread), in fp32 and bf16 alike, on every family of CPU kernels this machine has (each
//! `RESNET_CPU_KERNELS` value it supports, in a child process: the choice is made once per
//! process).

use resnet_cifar::data::{Loader, Normalization, Split};
use resnet_cifar::model::step::train_step;
use resnet_cifar::model::{ResNet, ResNetConfig, Sgd};
use resnet_cifar::tensor::{Precision, Tensor};

fn split(n: usize) -> Split {
    // Deterministic pseudo-random pixels and labels (no RNG crate needed).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let images = (0..n * 3072).map(|_| next() as u8).collect();
    let labels = (0..n).map(|_| (next() % 10) as u8).collect();
    Split {
        images,
        labels,
        coarse_labels: None,
    }
}

fn run(seed: u64, data: &Split) -> (Vec<f32>, Vec<Vec<f32>>) {
    run_in(seed, data, Precision::Fp32)
}

/// Width 8: stages of 8, 16 and 32 channels reach every kernel shape of the fast paths
/// (maps of 32 and 16 read in place, 8x8 through im2col, stride 2, and the channels-last weight
/// gradient for 16 and 32 input channels).
fn run_in(seed: u64, data: &Split, precision: Precision) -> (Vec<f32>, Vec<Vec<f32>>) {
    let config = ResNetConfig::from_depth(20, Some(8), None, 10).unwrap();
    let mut model = ResNet::new(&config, seed);
    model.set_precision(precision);
    let norm = Normalization::from_split(data);
    let loader = Loader::new(data, 16, true, true, norm, seed);
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    let mut losses = Vec::new();
    for epoch in 0..2 {
        for batch in loader.epoch(epoch) {
            let x = Tensor::from_vec(&[batch.len(), 3, 32, 32], batch.images);
            losses.push(train_step(&mut model, &sgd, &x, &batch.labels, 0.1).loss);
        }
    }
    let weights = model
        .params_mut()
        .iter()
        .map(|p| p.value.data().to_vec())
        .collect();
    (losses, weights)
}

#[test]
fn same_seed_same_bits_other_seed_other_result() {
    let data = split(40);
    let a = run(5, &data);
    let b = run(5, &data);
    assert_eq!(a.0.len(), 6, "two epochs of three batches (16, 16, 8)");
    assert!(a == b, "two runs with the same seed differ");
    let c = run(6, &data);
    assert_ne!(a.0, c.0, "another seed should change the losses");
}

#[test]
fn the_thread_count_changes_no_bit() {
    let data = split(40);
    for precision in [Precision::Fp32, Precision::Bf16] {
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_in(7, &data, precision))
        };
        let one = on(1);
        assert!(one == on(3), "{precision}: 1 and 3 threads differ");
        assert!(one == on(2), "{precision}: 1 and 2 threads differ");
    }
}

/// `the_thread_count_changes_no_bit` again under each kernel family this CPU runs below its
/// best (the best ran above), each in a child process of this test binary with
/// `RESNET_CPU_KERNELS` set.
#[test]
fn the_thread_count_changes_no_bit_on_every_kernel_family() {
    use resnet_cifar::tensor::cpu::{self, Kernels};
    if std::env::var_os("RESNET_CPU_KERNELS").is_some() {
        return; // a child: the test above is the one it runs
    }
    let families = [
        Kernels::Reference,
        Kernels::Avx2,
        Kernels::Avx512,
        Kernels::Avx512Bf16,
        Kernels::Amx,
    ];
    let exe = std::env::current_exe().unwrap();
    for k in families.into_iter().filter(|&k| k < cpu::supported()) {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "the_thread_count_changes_no_bit",
                "--test-threads=1",
            ])
            .env("RESNET_CPU_KERNELS", k.env_name())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "RESNET_CPU_KERNELS={}: {text}{}",
            k.env_name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
