//! Softmax cross-entropy, mean over the batch, with its gradient and the number of
//! correct predictions. Stable: logits are shifted by their row maximum before `exp`.
//!
//! The loss and hit count go into a [`LossMeter`] on the logits' device, so that a training
//! loop on a GPU reads them back only when it wants to ([`softmax_cross_entropy_into`]);
//! [`softmax_cross_entropy`] is the one-batch form with host results.

pub mod cuda;
pub mod meter;

use crate::{check, cuda_of, expect_device, Tensor};
pub use meter::{Labels, LossMeter, MeterReading};

#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// dLoss/dlogits = (softmax − onehot) / n.
    pub dlogits: Tensor,
    /// Rows whose argmax (lowest index on ties) equals the label.
    pub correct: usize,
}

/// `logits` `[n, k]`, `labels` in `0..k` (host labels, on any device: they are copied to the
/// logits' device). `dlogits` is on the logits' device.
///
/// The one-batch form of [`softmax_cross_entropy_into`]: a fresh [`LossMeter`] takes the
/// batch and is read at once, so on a GPU this synchronises (one small copy). The training loop
/// uses the meter directly and reads it only now and then. The GPU sums `exp` in f32 where
/// the CPU uses f64.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[usize]) -> LossOutput {
    const OP: &str = "softmax_cross_entropy";
    let (n, k) = logits.dims2();
    assert_eq!(labels.len(), n, "one label per row");
    for &l in labels {
        assert!(l < k, "label {l} out of range for {k} classes");
    }
    let device = logits.device();
    let labels = expect_device(OP, Labels::host(labels.to_vec()).to_device(&device));
    let mut meter = expect_device(OP, LossMeter::new(&device));
    let dlogits = softmax_cross_entropy_into(logits, &labels, &mut meter);
    let m = expect_device(OP, meter.read());
    LossOutput {
        loss: m.loss as f32,
        dlogits,
        correct: m.correct,
    }
}

/// The logits' GPU, or `None` on the host; panics (naming `op`) when the logits, labels and
/// meter are not all on one device.
#[track_caller]
fn device_of(
    op: &str,
    logits: &Tensor,
    labels: &Labels,
    meter: &LossMeter,
) -> Option<std::sync::Arc<kernels::Gpu>> {
    let gpu = cuda_of(op, &[logits]);
    let device = logits.device();
    for (what, d) in [("labels", labels.device()), ("loss meter", meter.device())] {
        assert!(
            d == device,
            "{op}: inputs on different devices (logits on {device}, {what} on {d}); \
             move them with to_device first"
        );
    }
    gpu
}

/// Softmax cross-entropy of a batch: returns dlogits = (softmax − onehot) / n on the logits'
/// device, and adds the batch's loss sum, correct predictions and size to `meter`. Logits,
/// labels and meter must be on one device (a panic otherwise, like any op's inputs).
///
/// On a GPU nothing is read back: the kernel adds into the meter's device accumulators, so
/// a training step does not wait for the device. Host labels are range-checked here; device
/// labels are trusted (see [`Labels`]).
pub fn softmax_cross_entropy_into(
    logits: &Tensor,
    labels: &Labels,
    meter: &mut LossMeter,
) -> Tensor {
    let _span = crate::profile::span(|| "loss".into());
    const OP: &str = "softmax_cross_entropy";
    let (n, k) = logits.dims2();
    assert_eq!(labels.len(), n, "one label per row");
    if let Some(gpu) = device_of(OP, logits, labels, meter) {
        let mut dlogits = Tensor::cuda_output(OP, &gpu, &[n, k]);
        let (loss_acc, correct_acc) = meter.cuda_accumulators(n);
        let r = cuda::softmax_xent(
            &gpu,
            n,
            k,
            &logits.cu().as_view(),
            &labels.cu().as_view(),
            Some(&mut dlogits.cu_mut().as_view_mut()),
            &mut loss_acc.as_view_mut(),
            &mut correct_acc.as_view_mut(),
        );
        check(OP, r);
        return dlogits;
    }
    let mut dlogits = Tensor::zeros(&[n, k]);
    let labels = labels.host_data().expect("host labels");
    let (total, correct) = xent_cpu(logits.data(), labels, k, Some(dlogits.data_mut()));
    meter.add_host(total, correct, n);
    dlogits
}

/// Loss and correct predictions only (evaluation): adds the batch to `meter` like
/// [`softmax_cross_entropy_into`], without computing a gradient.
pub fn softmax_cross_entropy_loss_into(logits: &Tensor, labels: &Labels, meter: &mut LossMeter) {
    const OP: &str = "softmax_cross_entropy_loss";
    let (n, k) = logits.dims2();
    assert_eq!(labels.len(), n, "one label per row");
    if let Some(gpu) = device_of(OP, logits, labels, meter) {
        let (loss_acc, correct_acc) = meter.cuda_accumulators(n);
        let r = cuda::softmax_xent(
            &gpu,
            n,
            k,
            &logits.cu().as_view(),
            &labels.cu().as_view(),
            None,
            &mut loss_acc.as_view_mut(),
            &mut correct_acc.as_view_mut(),
        );
        check(OP, r);
        return;
    }
    let labels = labels.host_data().expect("host labels");
    let (total, correct) = xent_cpu(logits.data(), labels, k, None);
    meter.add_host(total, correct, n);
}

/// The CPU loss: the sum over rows of the per-row losses (f64), the number of rows whose
/// argmax is the label, and (when `dlogits` is given) the gradient of the mean loss.
fn xent_cpu(
    logits: &[f32],
    labels: &[usize],
    k: usize,
    mut dlogits: Option<&mut [f32]>,
) -> (f64, usize) {
    let n = labels.len();
    let (mut total, mut correct) = (0.0f64, 0);
    for (r, (row, &label)) in logits.chunks(k).zip(labels).enumerate() {
        assert!(label < k, "label {label} out of range for {k} classes");
        let (argmax, max) =
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                });
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        total += sum.ln() - (row[label] - max) as f64;
        correct += usize::from(argmax == label);
        if let Some(d) = dlogits.as_deref_mut() {
            let grad = &mut d[r * k..(r + 1) * k];
            for (g, &v) in grad.iter_mut().zip(row) {
                *g = (((v - max) as f64).exp() / sum / n as f64) as f32;
            }
            grad[label] -= 1.0 / n as f32;
        }
    }
    (total, correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_tensor, rng};
    use crate::Device;

    #[test]
    fn hand_computed_loss_and_accuracy() {
        // Row 0: uniform over 2 classes -> ln 2, argmax 0 (tie) = label 0: correct.
        // Row 1: logits (0, ln 3), label 0 -> -ln(1/4) = ln 4; argmax 1: wrong.
        let logits = Tensor::from_vec(&[2, 2], vec![0.0, 0.0, 0.0, 3f32.ln()]);
        let out = softmax_cross_entropy(&logits, &[0, 0]);
        assert!((out.loss - (2f32.ln() + 4f32.ln()) / 2.0).abs() < 1e-6);
        assert_eq!(out.correct, 1);
        assert_eq!(
            out.dlogits.data(),
            &[-0.25, 0.25, (0.25 - 1.0) / 2.0, 0.75 / 2.0]
        );
    }

    #[test]
    fn stable_for_huge_logits() {
        let logits = Tensor::from_vec(&[1, 3], vec![1000.0, -1000.0, 999.0]);
        let out = softmax_cross_entropy(&logits, &[2]);
        // -log softmax = log(1 + e^-2000 + e^-1) + 1
        assert!(
            out.loss.is_finite() && (out.loss - (1.0 + (1.0 + (-1f32).exp()).ln())).abs() < 1e-5
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut r = rng(11);
        let logits = rand_tensor(&mut r, &[3, 10]);
        let labels = [4, 0, 9];
        let out = softmax_cross_entropy(&logits, &labels);
        check_grad("ce dlogits", &logits, &out.dlogits, |l| {
            softmax_cross_entropy(l, &labels).loss as f64
        });
    }

    #[test]
    fn a_meter_over_batches_equals_the_batches_combined() {
        let mut r = rng(12);
        let mut batches = Vec::new();
        for (n, k) in [(3, 10), (5, 10), (1, 10), (6, 10)] {
            let mut logits = rand_tensor(&mut r, &[n, k]);
            let labels: Vec<usize> = (0..n).map(|i| (i * 7 + n) % k).collect();
            // Every other row predicts its label: the hit count is not trivially 0.
            for (i, &l) in labels.iter().enumerate().step_by(2) {
                logits.data_mut()[i * k + l] += 10.0;
            }
            batches.push((logits, labels));
        }
        let mut meter = LossMeter::new(&Device::Cpu).unwrap();
        let mut eval_meter = LossMeter::new(&Device::Cpu).unwrap();
        let (mut sum, mut correct, mut count) = (0.0f64, 0, 0);
        for (logits, labels) in &batches {
            let n = labels.len();
            let one = softmax_cross_entropy(logits, labels);
            let host = Labels::host(labels.clone());
            let dlogits = softmax_cross_entropy_into(logits, &host, &mut meter);
            assert_eq!(
                dlogits, one.dlogits,
                "the same gradient as the one-batch form"
            );
            softmax_cross_entropy_loss_into(logits, &host, &mut eval_meter);
            let mut single = LossMeter::new(&Device::Cpu).unwrap();
            softmax_cross_entropy_into(logits, &host, &mut single);
            let s = single.read().unwrap();
            assert_eq!((s.loss as f32).to_bits(), one.loss.to_bits());
            assert_eq!((s.correct, s.count), (one.correct, n));
            assert!((s.loss_sum - one.loss as f64 * n as f64).abs() <= 1e-6 * s.loss_sum);
            sum += s.loss_sum;
            correct += one.correct;
            count += n;
        }
        assert!(correct >= 8, "{correct}");
        let m = meter.read().unwrap();
        assert_eq!(
            m.loss_sum.to_bits(),
            sum.to_bits(),
            "sum of per-sample losses"
        );
        assert_eq!((m.correct, m.count, meter.count()), (correct, count, count));
        assert_eq!(m.loss, sum / count as f64);
        assert_eq!(m.accuracy(), correct as f64 / count as f64);
        assert_eq!(
            eval_meter.read().unwrap(),
            m,
            "the loss-only form adds the same"
        );
        meter.reset().unwrap();
        let z = meter.read().unwrap();
        assert_eq!((z.loss_sum, z.correct, z.count), (0.0, 0, 0));
        assert!(z.loss.is_nan(), "the mean of no samples");
    }

    #[test]
    fn host_labels_behave() {
        let l = Labels::host(vec![3, 0, 9]);
        assert_eq!((l.len(), l.is_empty(), l.is_cuda()), (3, false, false));
        assert_eq!(l.device(), Device::Cpu);
        assert_eq!(l.host_data(), Some(&[3, 0, 9][..]));
        assert_eq!(l.to_vec().unwrap(), vec![3, 0, 9]);
        assert_eq!(
            l.to_device(&Device::Cpu).unwrap().host_data(),
            l.host_data()
        );
        assert_eq!(format!("{l:?}"), "Labels([3, 0, 9])");
        assert!(Labels::from(Vec::new()).is_empty());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn host_labels_out_of_range_panic() {
        let logits = Tensor::zeros(&[1, 3]);
        let mut m = LossMeter::new(&Device::Cpu).unwrap();
        softmax_cross_entropy_into(&logits, &Labels::host(vec![3]), &mut m);
    }
}
