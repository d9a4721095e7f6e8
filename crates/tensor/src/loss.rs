//! Softmax cross-entropy, mean over the batch, with its gradient and the number of
//! correct predictions. Stable: logits are shifted by their row maximum before `exp`.

use crate::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    /// dLoss/dlogits = (softmax − onehot) / n.
    pub dlogits: Tensor,
    /// Rows whose argmax (lowest index on ties) equals the label.
    pub correct: usize,
}

/// `logits` `[n, k]`, `labels` in `0..k`.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[usize]) -> LossOutput {
    let (n, k) = logits.dims2();
    assert_eq!(labels.len(), n, "one label per row");
    let mut dlogits = Tensor::zeros(&[n, k]);
    let (mut total, mut correct) = (0.0f64, 0);
    for ((row, grad), &label) in logits
        .data()
        .chunks(k)
        .zip(dlogits.data_mut().chunks_mut(k))
        .zip(labels)
    {
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
        for (g, &v) in grad.iter_mut().zip(row) {
            *g = (((v - max) as f64).exp() / sum / n as f64) as f32;
        }
        grad[label] -= 1.0 / n as f32;
    }
    LossOutput {
        loss: (total / n as f64) as f32,
        dlogits,
        correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_tensor, rng};

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
}
