//! Whole-network checks: the hand-written backward pass of a complete small ResNet against
//! finite differences, and SGD driving a fixed batch to zero loss.

use model::step::train_step;
use model::{BlockKind, Mode, ResNet, ResNetConfig, Sgd, ShortcutKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::loss::softmax_cross_entropy;
use tensor::Tensor;

fn small(block: BlockKind, shortcut: ShortcutKind) -> ResNetConfig {
    // Depth 8 for basic blocks (one block per stage); one bottleneck per stage otherwise.
    ResNetConfig {
        blocks: vec![1, 1, 1],
        widths: vec![4, 6, 8],
        block,
        shortcut,
        num_classes: 5,
        depth: 0,
    }
}

fn random_images(r: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_vec(
        shape,
        (0..shape.iter().product())
            .map(|_| r.gen_range(-1.0f32..1.0))
            .collect(),
    )
}

/// Every parameter tensor of a whole network, checked on a sample of its entries against
/// central differences of the training-mode loss (BN on batch statistics, as in training).
///
/// Steps h = 1e-3 and 3e-4 keep the f32 forward's rounding noise in the loss (~1e-7) below
/// ~3e-4 of the difference quotient. A step can still carry some ReLU unit across its kink
/// (a BN bias moves a whole channel), which bends that one quotient; a step that crosses a
/// kink rarely crosses the same with the other size, so each entry keeps the quotient closer
/// to the analytic value. A wrong gradient term is off at both sizes, by O(1).
/// One unit can also sit within ~1e-4 of its kink, where every central difference averages
/// the two one-sided slopes (seen: one BN bias entry off by 20% at all step sizes), so the
/// tolerance is per tensor, over up to 24 sampled entries: ‖fd − an‖ ≤ 5e-2·‖an‖ + 1e-4·√k.
fn check_model_gradient(config: &ResNetConfig) {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let mut model = ResNet::new(config, 1);
    // Batch 3 of odd-sized 9x9 images: stride-2 stages see 5x5 then 3x3 maps.
    let x = random_images(&mut r, &[3, 3, 9, 9]);
    let labels = [0, 3, 4];
    let loss_of =
        |m: &mut ResNet| softmax_cross_entropy(&m.forward(&x, Mode::Train), &labels).loss as f64;
    let out = softmax_cross_entropy(&model.forward(&x, Mode::Train), &labels);
    model.zero_grad();
    model.backward(&out.dlogits);
    let grads: Vec<(String, Tensor)> = model
        .params_mut()
        .iter()
        .map(|p| (p.name.clone(), p.grad.clone()))
        .collect();
    for (idx, (name, grad)) in grads.iter().enumerate() {
        let (mut err, mut norm, mut k) = (0.0f64, 0.0f64, 0usize);
        for i in (0..grad.len()).step_by((grad.len() / 24).max(1)) {
            let at = |m: &mut ResNet, v: f32| {
                m.params_mut()[idx].value.data_mut()[i] = v;
                loss_of(m)
            };
            let orig = model.params_mut()[idx].value.data()[i];
            let an = grad.data()[i] as f64;
            let fd = [1e-3f32, 3e-4]
                .map(|h| (at(&mut model, orig + h) - at(&mut model, orig - h)) / (2.0 * h as f64))
                .into_iter()
                .min_by(|a, b| (a - an).abs().total_cmp(&(b - an).abs()))
                .unwrap();
            at(&mut model, orig);
            err += (fd - an).powi(2);
            norm += an * an;
            k += 1;
        }
        let (err, norm) = (err.sqrt(), norm.sqrt());
        assert!(
            err <= 5e-2 * norm + 1e-4 * (k as f64).sqrt(),
            "{name}: ‖fd − an‖ = {err:.3e}, ‖an‖ = {norm:.3e}"
        );
    }
}

#[test]
fn whole_basic_resnet_gradient_matches_finite_differences() {
    check_model_gradient(&small(BlockKind::Basic, ShortcutKind::Pad));
    check_model_gradient(&small(BlockKind::Basic, ShortcutKind::Conv));
}

#[test]
fn whole_bottleneck_resnet_gradient_matches_finite_differences() {
    check_model_gradient(&small(BlockKind::Bottleneck, ShortcutKind::Conv));
}

#[test]
fn memorises_a_fixed_batch_of_random_labels() {
    let mut r = ChaCha8Rng::seed_from_u64(4);
    let config = ResNetConfig {
        blocks: vec![1, 1, 1],
        widths: vec![16, 32, 64],
        block: BlockKind::Basic,
        shortcut: ShortcutKind::Pad,
        num_classes: 10,
        depth: 8,
    };
    let mut model = ResNet::new(&config, 0);
    let x = random_images(&mut r, &[64, 3, 16, 16]);
    let labels: Vec<usize> = (0..64).map(|_| r.gen_range(0..10)).collect();
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        decay_weights_only: false,
    };
    let first = train_step(&mut model, &sgd, &x, &labels, 0.05);
    let mut last = first;
    for _ in 0..150 {
        last = train_step(&mut model, &sgd, &x, &labels, 0.05);
        if last.correct == 64 && last.loss < 0.05 {
            break;
        }
    }
    assert!(first.loss > 1.5, "starts near ln 10: {}", first.loss);
    assert_eq!(
        last.correct, 64,
        "training accuracy after the budget, loss {}",
        last.loss
    );
    assert!(last.loss < 0.05, "loss {}", last.loss);
    // The memorised batch also holds with the running statistics (eval mode).
    let eval = softmax_cross_entropy(&model.forward(&x, Mode::Eval), &labels);
    assert!(eval.correct >= 60, "eval-mode accuracy {}/64", eval.correct);
}
