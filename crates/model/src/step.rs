//! One training step and one evaluation pass over a batch: the loop body of `train`.
//!
//! The `_into` forms add the batch's loss and hits to a [`LossMeter`] on the model's device
//! and never wait for the GPU: the training loop queues step after step and reads the meter
//! when it wants a number. [`train_step`] and [`eval_batch`] are the one-batch forms with a
//! host [`BatchResult`] (they read a fresh meter at once, so on a GPU each is one sync).

use crate::{Mode, ResNet, Sgd};
use tensor::loss::{softmax_cross_entropy_into, softmax_cross_entropy_loss_into};
use tensor::{expect_device, Labels, LossMeter, Tensor};

/// Loss and correct predictions of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchResult {
    pub loss: f32,
    pub correct: usize,
    pub count: usize,
}

/// Forward, loss, backward and SGD update on one batch; the loss and hits go into `meter`.
/// Images, labels, meter and model must share a device. No synchronisation on a GPU.
pub fn train_step_into(
    model: &mut ResNet,
    sgd: &Sgd,
    images: &Tensor,
    labels: &Labels,
    lr: f32,
    meter: &mut LossMeter,
) {
    let logits = model.forward(images, Mode::Train);
    let dlogits = softmax_cross_entropy_into(&logits, labels, meter);
    drop(logits);
    model.zero_grad();
    model.backward(&dlogits);
    sgd.step(model.params_mut(), lr);
}

/// Loss and hits of one batch with the running BN statistics, into `meter`; nothing is
/// updated and nothing is read back.
pub fn eval_batch_into(
    model: &mut ResNet,
    images: &Tensor,
    labels: &Labels,
    meter: &mut LossMeter,
) {
    let logits = model.forward(images, Mode::Eval);
    softmax_cross_entropy_loss_into(&logits, labels, meter);
}

/// Host labels on the images' device and an empty meter there, for the one-batch forms.
/// Labels are range-checked here, before they reach a GPU (the kernel trusts them).
fn batch_on_device(
    op: &str,
    model: &ResNet,
    images: &Tensor,
    labels: &[usize],
) -> (Labels, LossMeter) {
    let k = model.config.num_classes;
    for &l in labels {
        assert!(l < k, "label {l} out of range for {k} classes");
    }
    let device = images.device();
    let labels = expect_device(op, Labels::host(labels.to_vec()).to_device(&device));
    (labels, expect_device(op, LossMeter::new(&device)))
}

fn result_of(op: &str, meter: &LossMeter) -> BatchResult {
    let m = expect_device(op, meter.read());
    BatchResult {
        loss: m.loss as f32,
        correct: m.correct,
        count: m.count,
    }
}

/// Forward, loss, backward and SGD update on one batch ([`train_step_into`] with a fresh
/// meter, read at once).
pub fn train_step(
    model: &mut ResNet,
    sgd: &Sgd,
    images: &Tensor,
    labels: &[usize],
    lr: f32,
) -> BatchResult {
    let (labels, mut meter) = batch_on_device("train_step", model, images, labels);
    train_step_into(model, sgd, images, &labels, lr, &mut meter);
    result_of("train_step", &meter)
}

/// Loss and accuracy of one batch with the running BN statistics; nothing is updated.
pub fn eval_batch(model: &mut ResNet, images: &Tensor, labels: &[usize]) -> BatchResult {
    let (labels, mut meter) = batch_on_device("eval_batch", model, images, labels);
    eval_batch_into(model, images, &labels, &mut meter);
    result_of("eval_batch", &meter)
}
