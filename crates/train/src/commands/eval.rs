//! `train eval --checkpoint FILE`: a checkpoint's test loss, accuracy and per-class accuracy.

use crate::commands::args::{DataArgs, PrecisionArg};
use crate::engine::{checkpoint, device, evaluate, memory, oom, snapshot, state};
use anyhow::{ensure, Context, Result};
use clap::Args;
use model::ResNet;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A checkpoint written by `train --save`
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Mini-batch size for evaluation
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

/// `train eval --checkpoint FILE`: test loss, accuracy and per-class accuracy.
pub fn run(args: &EvalArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let (tensors, meta) = checkpoint::load(&args.checkpoint)?;
    let config = state::config_from_metadata(&meta)
        .with_context(|| format!("reading {}", args.checkpoint.display()))?;
    let dataset: data::Dataset = match args.data.dataset {
        Some(d) => d.into(),
        None => snapshot::dataset_of(&meta)?,
    };
    ensure!(
        dataset.num_classes() == config.num_classes,
        "checkpoint {} has {} classes, {dataset} has {}",
        args.checkpoint.display(),
        config.num_classes,
        dataset.num_classes()
    );
    let norm = snapshot::norm_from_string(
        meta.get("normalization")
            .context("checkpoint metadata lacks `normalization`")?,
    )?;
    let device = device::select(args.data.device.into())?;
    let mut cifar = data::load(&args.data.data_dir, dataset)?;
    if let Some(n) = args.data.limit_test {
        cifar.test.truncate(n);
    }
    // A batch never holds more than the test set.
    let batch = args.batch_size.min(cifar.test.len().max(1));
    let work = memory::Work::Eval { batch };
    memory::ensure_fits(&config, work, &device, cifar.test.images.len())?;
    let epoch = meta.get("epoch").map_or("?", String::as_str);
    println!(
        "{} after epoch {epoch}, on the {} {dataset} test images",
        config.name(),
        cifar.test.len()
    );
    let job = oom::Job {
        what: "evaluating",
        model: config.name(),
        params: model::Footprint::of(&config).params as usize,
        batch_size: args.batch_size,
    };
    // The model is built inside, so that running out of memory drops it before the report.
    let r = oom::guard(&job, &device, || {
        let mut model = ResNet::new(&config, 0);
        model.set_precision(args.data.precision.unwrap_or(PrecisionArg::Fp32).into());
        state::load_model_tensors(&mut model, &tensors, false)
            .with_context(|| format!("loading {}", args.checkpoint.display()))?;
        model
            .to_device(&device)
            .context("moving the model to the device")?;
        evaluate::evaluate(
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
