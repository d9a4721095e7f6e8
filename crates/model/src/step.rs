//! One training step and one evaluation pass over a batch: the loop body of `train`.

use crate::{Mode, ResNet, Sgd};
use tensor::loss::softmax_cross_entropy;
use tensor::Tensor;

/// Loss and correct predictions of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchResult {
    pub loss: f32,
    pub correct: usize,
    pub count: usize,
}

/// Forward, loss, backward and SGD update on one batch.
pub fn train_step(
    model: &mut ResNet,
    sgd: &Sgd,
    images: &Tensor,
    labels: &[usize],
    lr: f32,
) -> BatchResult {
    let logits = model.forward(images, Mode::Train);
    let out = softmax_cross_entropy(&logits, labels);
    model.zero_grad();
    model.backward(&out.dlogits);
    sgd.step(model.params_mut(), lr);
    BatchResult {
        loss: out.loss,
        correct: out.correct,
        count: labels.len(),
    }
}

/// Loss and accuracy of one batch with the running BN statistics; nothing is updated.
pub fn eval_batch(model: &mut ResNet, images: &Tensor, labels: &[usize]) -> BatchResult {
    let logits = model.forward(images, Mode::Eval);
    let out = softmax_cross_entropy(&logits, labels);
    BatchResult {
        loss: out.loss,
        correct: out.correct,
        count: labels.len(),
    }
}
