//! `--precision bf16` on the CPU engine (the twin of the tensor-core kernels): every
//! convolution switches, the step approximates the fp32 step, and a bf16 model still learns.

use model::step::train_step;
use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::{Precision, Tensor};

fn batch(r: &mut ChaCha8Rng, n: usize) -> (Tensor, Vec<usize>) {
    let x = Tensor::from_vec(
        &[n, 3, 32, 32],
        (0..n * 3072).map(|_| r.gen_range(-2.0f32..2.0)).collect(),
    );
    (x, (0..n).map(|_| r.gen_range(0..10)).collect())
}

const SGD: Sgd = Sgd {
    momentum: 0.9,
    weight_decay: 1e-4,
    nesterov: false,
    decay_weights_only: false,
};

#[test]
fn set_precision_reaches_every_convolution() {
    // Option-B shortcuts: the 1x1 projection convs must switch too.
    let config =
        ResNetConfig::from_depth(20, Some(4), Some(model::ShortcutKind::Conv), 10).unwrap();
    let mut m = ResNet::new(&config, 1);
    assert_eq!(m.precision(), Precision::Fp32);
    m.set_precision(Precision::Bf16);
    assert_eq!(m.precision(), Precision::Bf16);
    let convs: Vec<Precision> = m
        .blocks
        .iter_mut()
        .flat_map(|b| b.convs_mut().into_iter().map(|c| c.precision))
        .collect();
    assert_eq!(convs.len(), 9 * 2 + 2, "18 block convs and 2 projections");
    assert!(convs.iter().all(|&p| p == Precision::Bf16));
}

/// One step from the same weights: the bf16 loss is the fp32 loss to within bf16's rounding
/// (operands ≤ 2^-8 relative, errors of random sign through 19 convolutions: well under 1e-2),
/// but not bit-equal (it does round).
#[test]
fn a_bf16_step_approximates_the_fp32_step() {
    let config = ResNetConfig::from_depth(20, Some(8), None, 10).unwrap();
    let mut fp32 = ResNet::new(&config, 2);
    let mut bf16 = fp32.clone();
    bf16.set_precision(Precision::Bf16);
    let (x, labels) = batch(&mut ChaCha8Rng::seed_from_u64(3), 8);
    let a = train_step(&mut fp32, &SGD, &x, &labels, 0.1);
    let b = train_step(&mut bf16, &SGD, &x, &labels, 0.1);
    let e = ((b.loss - a.loss) / a.loss).abs();
    assert!(
        e < 1e-2,
        "bf16 loss {} vs fp32 {} (rel {e:.2e})",
        b.loss,
        a.loss
    );
    assert_ne!(
        a.loss.to_bits(),
        b.loss.to_bits(),
        "bf16 gave exactly the fp32 loss"
    );
}

/// A bf16 model memorises a small batch as the fp32 one does (learning.rs): the rounding does
/// not stop SGD.
#[test]
fn a_bf16_model_still_learns() {
    let config = ResNetConfig::from_depth(20, Some(8), None, 10).unwrap();
    let mut m = ResNet::new(&config, 4);
    m.set_precision(Precision::Bf16);
    let (x, labels) = batch(&mut ChaCha8Rng::seed_from_u64(5), 16);
    let first = train_step(&mut m, &SGD, &x, &labels, 0.05);
    let mut last = first;
    for _ in 0..40 {
        last = train_step(&mut m, &SGD, &x, &labels, 0.05);
    }
    assert!(
        last.loss < 0.25 * first.loss,
        "loss {} -> {} after 40 bf16 steps",
        first.loss,
        last.loss
    );
}
