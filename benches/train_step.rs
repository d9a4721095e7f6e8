//! One full CPU training step (forward, backward, SGD) of ResNet-20 at batch 128: the figure
//! the README reports for the CPU engine. `cargo bench -p resnet-cifar --bench train_step`.

use criterion::{criterion_group, criterion_main, Criterion};
use model::step::train_step;
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use tensor::Tensor;

fn bench_train_step(c: &mut Criterion) {
    let batch = 128;
    let config = ResNetConfig::from_depth(20, None, None, 10).expect("depth 20 is valid");
    let mut model = ResNet::new(&config, 0);
    let mut r = ChaCha8Rng::seed_from_u64(0);
    let x = Tensor::from_vec(
        &[batch, 3, 32, 32],
        (0..batch * 3072)
            .map(|_| r.gen_range(-2.0f32..2.0))
            .collect(),
    );
    let labels: Vec<usize> = (0..batch).map(|_| r.gen_range(0..10)).collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    let mut group = c.benchmark_group("cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("resnet20_train_step_batch128", |b| {
        b.iter(|| train_step(&mut model, &sgd, &x, &labels, 0.1))
    });
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
