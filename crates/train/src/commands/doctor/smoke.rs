//! The smoke test of `train doctor`: one training step on the GPU against the CPU engine.

use model::{ResNet, ResNetConfig, Sgd};
use rand::{Rng, SeedableRng};
use tensor::{Device, Precision, Tensor};

/// One training step of a small ResNet on `dev` and on the CPU from the same weights and
/// batch, in fp32 and in bf16: every kernel of a step (conv, BN, ReLU, add, shortcut, pool, fc,
/// loss, SGD) against the CPU engine. Bounds as `tests/gpu/parity.rs` and `fast_paths.rs`
/// justify them: the fp32 loss within 1e-4 and each gradient within 1e-3 (the engines add in
/// different orders), the bf16 loss within 1e-3 of the CPU's bf16 twin.
pub(super) fn smoke(dev: &Device) -> Result<String, String> {
    let config = ResNetConfig::from_depth(20, Some(4), None, 10).map_err(|e| e.to_string())?;
    let batch = 4;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let x: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let x = Tensor::from_vec(&[batch, 3, 32, 32], x);
    let labels: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..10)).collect();
    let gx = x.to_device(dev).map_err(|e| e.to_string())?;
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
        decay_weights_only: true,
    };
    let base = ResNet::new(&config, 7);
    let mut losses = Vec::new();
    let mut worst_grad = 0.0f64;
    for precision in [Precision::Fp32, Precision::Bf16] {
        let mut cpu = base.clone();
        cpu.set_precision(precision);
        let mut gpu = cpu.clone();
        gpu.to_device(dev).map_err(|e| e.to_string())?;
        let c = model::step::train_step(&mut cpu, &sgd, &x, &labels, 0.1);
        let g = model::step::train_step(&mut gpu, &sgd, &gx, &labels, 0.1);
        let rel = ((g.loss - c.loss) / c.loss).abs() as f64;
        let bound = if precision == Precision::Fp32 {
            1e-4
        } else {
            1e-3
        };
        if rel.is_nan() || rel > bound {
            return Err(format!(
                "{precision} step loss on GPU 0 {} vs the CPU's {} (relative {rel:.1e}, bound \
                 {bound:.0e}): the GPU computes something else. Run the GPU parity tests \
                 (tests/gpu) to find the kernel",
                g.loss, c.loss
            ));
        }
        losses.push((precision, c.loss, rel));
        if precision == Precision::Fp32 {
            for (pc, pg) in cpu.params_mut().into_iter().zip(gpu.params_mut()) {
                let (a, b) = (pc.grad.to_vec(), pg.grad.to_vec());
                let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
                let e = rel_l2(&b, &a);
                if e.is_nan() || e > 1e-3 {
                    return Err(format!(
                        "fp32 gradient of {} on GPU 0 differs from the CPU's by {e:.1e} \
                         (bound 1e-3). Run the GPU parity tests (tests/gpu) to find the kernel",
                        pc.name
                    ));
                }
                worst_grad = worst_grad.max(e);
            }
        }
    }
    let [(_, fp32_loss, fp32_rel), (_, _, bf16_rel)] = losses[..] else {
        return Err("the smoke test ran no step".into());
    };
    Ok(format!(
        "a ResNet-20 (width 4, batch {batch}) training step on GPU 0 matches the CPU engine: \
         fp32 loss {fp32_loss:.5} (relative difference {fp32_rel:.1e}), gradients within \
         {worst_grad:.1e}; bf16 loss within {bf16_rel:.1e} of the CPU's bf16 twin"
    ))
}

/// `‖a − b‖ / ‖b‖`, in f64 (0 when both are zero).
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
    }
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    if norm == 0.0 {
        return if diff == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (diff / norm).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_l2(&[3.0, 4.0], &[0.0, 5.0]) - (10.0f64).sqrt() / 5.0).abs() < 1e-12);
        assert_eq!(rel_l2(&[0.0], &[0.0]), 0.0);
        assert_eq!(rel_l2(&[1.0], &[0.0]), f64::INFINITY);
        assert_eq!(rel_l2(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert!(rel_l2(&[f32::NAN], &[1.0]).is_nan());
    }
}
