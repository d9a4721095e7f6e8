//! Test-set evaluation with the running BN statistics: loss, accuracy, per-class accuracy.
//!
//! The loss and accuracy accumulate in a [`LossMeter`] on the model's device; the per-class
//! counts need each batch's logits on the host, so evaluation on a GPU still copies the
//! logits back batch by batch (10 or 100 floats per image: small next to the forward pass).

use anyhow::Context;
use data::{Loader, Normalization, Split};
use indicatif::{ProgressBar, ProgressStyle};
use model::{Mode, ResNet};
use tensor::loss::softmax_cross_entropy_loss_into;
use tensor::{Labels, LossMeter, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub per_class_correct: Vec<usize>,
    pub per_class_total: Vec<usize>,
}

/// Evaluate `model` on every image of `split`, in order, without augmentation, on the
/// model's device.
pub fn evaluate(
    model: &mut ResNet,
    split: &Split,
    norm: Normalization,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<EvalResult> {
    let device = model.device();
    let classes = model.config.num_classes;
    let loader = Loader::new(split, batch_size, false, false, norm, 0);
    let bar = if progress {
        ProgressBar::new(loader.batches_per_epoch() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("  test  [{bar:30}] {pos}/{len} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut meter = LossMeter::new(&device).context("allocating the test loss meter")?;
    let (mut per_class_correct, mut per_class_total) = (vec![0; classes], vec![0; classes]);
    for batch in loader.epoch(0) {
        let n = batch.len();
        let x = Tensor::from_vec(&[n, 3, 32, 32], batch.images)
            .to_device(&device)
            .context("copying a test batch to the device")?;
        let labels = Labels::host(batch.labels);
        let on_device = labels
            .to_device(&device)
            .context("copying test labels to the device")?;
        let logits = model.forward(&x, Mode::Eval);
        softmax_cross_entropy_loss_into(&logits, &on_device, &mut meter);
        let host_labels = labels.host_data().expect("host labels");
        for (row, &label) in logits.to_vec()?.chunks(classes).zip(host_labels) {
            // The same argmax as the loss (lowest index on ties).
            let pred = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
            per_class_total[label] += 1;
            per_class_correct[label] += usize::from(pred == label);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let m = meter
        .read()
        .context("reading the test loss from the device")?;
    let n = m.count.max(1) as f64;
    Ok(EvalResult {
        loss: m.loss_sum / n,
        accuracy: m.correct as f64 / n,
        per_class_correct,
        per_class_total,
    })
}
