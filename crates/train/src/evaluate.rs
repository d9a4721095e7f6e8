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

/// `train eval --checkpoint FILE`: test loss, accuracy and per-class accuracy.
pub fn run_eval(args: &crate::cli::EvalArgs) -> anyhow::Result<()> {
    use anyhow::{ensure, Context};
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let (tensors, meta) = crate::checkpoint::load(&args.checkpoint)?;
    let config = crate::state::config_from_metadata(&meta)
        .with_context(|| format!("reading {}", args.checkpoint.display()))?;
    let dataset: data::Dataset = match args.data.dataset {
        Some(d) => d.into(),
        None => meta
            .get("dataset")
            .map_or(Ok(data::Dataset::Cifar10), |d| d.parse())
            .context("bad `dataset` in checkpoint metadata")?,
    };
    ensure!(
        dataset.num_classes() == config.num_classes,
        "checkpoint {} has {} classes, {dataset} has {}",
        args.checkpoint.display(),
        config.num_classes,
        dataset.num_classes()
    );
    let norm = crate::run::norm_from_string(
        meta.get("normalization")
            .context("checkpoint metadata lacks `normalization`")?,
    )?;
    let device = crate::device::select(args.data.device)?;
    let mut cifar = data::load(&args.data.data_dir, dataset)?;
    if let Some(n) = args.data.limit_test {
        cifar.test.truncate(n);
    }
    // A batch never holds more than the test set.
    let batch = args.batch_size.min(cifar.test.len().max(1));
    let work = crate::memory::Work::Eval { batch };
    crate::memory::ensure_fits(&config, work, &device, cifar.test.images.len())?;
    let epoch = meta.get("epoch").map_or("?", String::as_str);
    println!(
        "{} after epoch {epoch}, on the {} {dataset} test images",
        config.name(),
        cifar.test.len()
    );
    let job = crate::oom::Job {
        what: "evaluating",
        model: config.name(),
        params: model::Footprint::of(&config).params as usize,
        batch_size: args.batch_size,
    };
    // The model is built inside, so that running out of memory drops it before the report.
    let r = crate::oom::guard(&job, &device, || {
        let mut model = ResNet::new(&config, 0);
        model.set_precision(
            args.data
                .precision
                .unwrap_or(crate::cli::PrecisionArg::Fp32)
                .into(),
        );
        crate::state::load_model_tensors(&mut model, &tensors, false)
            .with_context(|| format!("loading {}", args.checkpoint.display()))?;
        model
            .to_device(&device)
            .context("moving the model to the device")?;
        evaluate(
            &mut model,
            &cifar.test,
            norm,
            args.batch_size,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
    })?;
    println!(
        "test loss {:.4}  accuracy {:.2}%",
        r.loss,
        100.0 * r.accuracy
    );
    println!("per class:");
    for (i, name) in cifar.class_names.iter().enumerate() {
        let (c, t) = (r.per_class_correct[i], r.per_class_total[i]);
        let acc = if t == 0 {
            "    -".to_string()
        } else {
            format!("{:6.2}%", 100.0 * c as f64 / t as f64)
        };
        println!("  {name:<16} {acc}  ({c}/{t})");
    }
    Ok(())
}
