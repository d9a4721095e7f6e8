//! The training run: data, model, the epoch loop with progress, evaluation, metrics, plot
//! and checkpoints. One training step itself is `model::step::train_step_into`.
//!
//! On a GPU the loop never waits for the device after a step: the loss and hits accumulate in
//! a [`LossMeter`] on the device, which is read (the one synchronisation) only when the
//! progress line is refreshed, about four times a second, and at the end of the epoch. The
//! divergence check happens at each read, so it names the steps between two reads. Running
//! out of GPU memory ends the run with an error naming the model and batch size
//! ([`crate::oom`]).
//!
//! Resuming is exact on the CPU: weights, BN buffers, momentum and the metrics history come
//! from the checkpoint, and every random choice of epoch `e` (order, crops, flips) is drawn
//! from streams seeded by `(seed, e)`, so there is no generator state to carry over.

use crate::batches::TrainBatches;
use crate::checkpoint::{self, NamedTensor};
use crate::cli::{ScheduleArg, ShortcutArg, TrainArgs};
use crate::device;
use crate::evaluate::evaluate;
use crate::metrics::{self, EpochRecord};
use crate::oom;
use crate::plot;
use crate::schedule::{LrSchedule, Schedule};
use crate::state;
use anyhow::{bail, ensure, Context, Result};
use data::{Loader, Normalization};
use indicatif::{ProgressBar, ProgressStyle};
use model::step::{train_step_into, CapturedStep};
use model::{ResNet, ResNetConfig, Sgd, ShortcutKind};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};
use tensor::{Device, LossMeter, MeterReading};

/// Checkpoint format tag (metadata `format`).
pub const FORMAT: &str = "resnet-cifar-checkpoint/1";

/// How often the GPU loop reads its loss meter (and so waits for the queued steps) to
/// refresh the progress line. On the CPU it reads after every step, which costs nothing.
const READ_EVERY: Duration = Duration::from_millis(250);

pub fn model_config(args: &TrainArgs) -> Result<ResNetConfig> {
    let dataset: data::Dataset = args.data.dataset.map_or(data::Dataset::Cifar10, Into::into);
    let shortcut = args.shortcut.map(|s| match s {
        ShortcutArg::Pad => ShortcutKind::Pad,
        ShortcutArg::Conv => ShortcutKind::Conv,
    });
    Ok(ResNetConfig::from_depth(
        args.depth,
        args.width,
        shortcut,
        dataset.num_classes(),
    )?)
}

fn check_args(args: &TrainArgs) -> Result<()> {
    ensure!(args.epochs > 0, "--epochs must be at least 1");
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr must be a positive number, got {}",
        args.lr
    );
    ensure!(
        args.momentum.is_finite() && (0.0..1.0).contains(&args.momentum),
        "--momentum must be in [0, 1), got {}",
        args.momentum
    );
    ensure!(
        args.weight_decay.is_finite() && args.weight_decay >= 0.0,
        "--weight-decay must be >= 0, got {}",
        args.weight_decay
    );
    ensure!(
        args.limit_train != Some(0),
        "--limit-train must be at least 1"
    );
    Ok(())
}

fn norm_to_string(n: &Normalization) -> String {
    // `{:?}` prints the shortest text that parses back to the same f32.
    format!(
        "{:?};{:?};{:?};{:?};{:?};{:?}",
        n.mean[0], n.mean[1], n.mean[2], n.std[0], n.std[1], n.std[2]
    )
}

pub fn norm_from_string(s: &str) -> Result<Normalization> {
    let v: Vec<f32> = s
        .split(';')
        .map(|x| x.parse::<f32>())
        .collect::<Result<_, _>>()
        .context("bad `normalization` in checkpoint metadata")?;
    ensure!(
        v.len() == 6,
        "bad `normalization` in checkpoint metadata: {s}"
    );
    Ok(Normalization {
        mean: [v[0], v[1], v[2]],
        std: [v[3], v[4], v[5]],
    })
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let config = model_config(args)?;
    let mut model = ResNet::new(&config, args.seed);
    model.set_precision(args.data.precision.into());
    if args.dry_run {
        print!("{}", model.summary_text());
        return Ok(());
    }
    check_args(args)?;
    let device = device::select(args.data.device)?;
    let job = oom::Job {
        what: "training",
        model: config.name(),
        params: model.num_params(),
        batch_size: args.batch_size,
    };
    oom::guard(&job, &device, || train_on(args, &config, model, &device))
}

/// The run after the flags are checked and the device chosen: everything that touches the GPU.
fn train_on(
    args: &TrainArgs,
    config: &ResNetConfig,
    mut model: ResNet,
    device: &Device,
) -> Result<()> {
    let device = device.clone();
    let dataset: data::Dataset = args.data.dataset.map_or(data::Dataset::Cifar10, Into::into);
    let mut cifar = data::load(&args.data.data_dir, dataset)?;
    if let Some(n) = args.limit_train {
        cifar.train.truncate(n);
    }
    if let Some(n) = args.data.limit_test {
        cifar.test.truncate(n);
    }
    let norm = Normalization::from_split(&cifar.train);
    let loader = Loader::new(
        &cifar.train,
        args.batch_size,
        true,
        !args.no_augment,
        norm,
        args.seed,
    );
    let batches = TrainBatches::new(loader, &cifar.train, &device)?;
    let steps_per_epoch = batches.batches_per_epoch();
    let schedule = LrSchedule {
        base_lr: args.lr,
        schedule: match args.schedule {
            ScheduleArg::Step => Schedule::Step {
                milestones: LrSchedule::milestones(
                    args.milestones.as_deref(),
                    args.epochs,
                    steps_per_epoch,
                ),
            },
            ScheduleArg::Cosine => Schedule::Cosine,
        },
        epochs: args.epochs,
        steps_per_epoch,
        warmup_iters: args.warmup_iters,
    };
    let sgd = Sgd {
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        nesterov: args.nesterov,
        decay_weights_only: args.no_decay_bn_bias,
    };

    let mut records: Vec<EpochRecord> = Vec::new();
    if let Some(path) = &args.resume {
        records = resume(path, &mut model, dataset)?;
        println!(
            "resumed from {} after epoch {}",
            path.display(),
            records.len()
        );
    }
    model
        .to_device(&device)
        .context("moving the model to the GPU")?;
    let start_epoch = records.len();
    if start_epoch >= args.epochs {
        println!(
            "nothing to do: the checkpoint has {start_epoch} epochs, --epochs is {}",
            args.epochs
        );
        return Ok(());
    }
    println!(
        "training {} ({} parameters) on {dataset}: {} train / {} test images, {device}, epochs {}..{} of {steps_per_epoch} steps, batch {}",
        config.name(),
        model.num_params(),
        cifar.train.len(),
        cifar.test.len(),
        start_epoch + 1,
        args.epochs,
        args.batch_size
    );
    let interactive = std::io::stderr().is_terminal();
    let title = format!("{} on {dataset}", config.name());
    let mut meter = LossMeter::new(&device).context("allocating the loss meter")?;
    ensure!(
        !args.cuda_graph || device.is_cuda(),
        "--cuda-graph needs a GPU, but training runs on {device}"
    );
    // With --cuda-graph: captured after the run's first (eager) step, for full-size batches.
    let mut captured: Option<CapturedStep> = None;
    for epoch in start_epoch..args.epochs {
        let started = Instant::now();
        let bar = if interactive {
            ProgressBar::new(steps_per_epoch as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, args.epochs));
        // One meter for the whole run, reset per epoch: a captured step writes into it.
        meter.reset().context("resetting the loss meter")?;
        let mut lr = schedule.lr(epoch * steps_per_epoch);
        // Steps done, and steps and time at the last read of the meter.
        let (mut steps, mut read_steps, mut read_at) = (0usize, 0usize, Instant::now());
        // Reads the meter (on a GPU: waits for the queued steps), stops a diverged run, and
        // refreshes the progress line.
        let read = |meter: &LossMeter,
                    steps: usize,
                    read_steps: usize,
                    lr: f32|
         -> Result<MeterReading> {
            let m = meter_of(meter)?;
            if m.count > 0 && !m.loss.is_finite() {
                bar.abandon();
                let kept = args.save.as_ref().map_or(String::new(), |p| {
                    format!("; the last good checkpoint, {}, is unchanged", p.display())
                });
                let when = if read_steps + 1 >= steps {
                    format!("at epoch {}, step {steps}", epoch + 1)
                } else {
                    format!(
                        "at epoch {}, between steps {} and {steps}",
                        epoch + 1,
                        read_steps + 1
                    )
                };
                bail!("the training loss became {} {when} (lr {lr}): training diverged; try a lower --lr or --warmup-iters{kept}", m.loss);
            }
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:5.2}% {:.0} img/s",
                m.loss,
                100.0 * m.accuracy(),
                m.count as f64 / secs
            ));
            Ok(m)
        };
        for (i, batch) in batches.epoch(epoch).enumerate() {
            let (x, labels) = batch.context("making a training batch on the device")?;
            lr = schedule.lr(epoch * steps_per_epoch + i);
            match &mut captured {
                Some(step) if step.batch_size() == labels.len() => step
                    .run(&mut model, &x, &labels, lr, &mut meter)
                    .context("replaying the captured training step")?,
                _ => {
                    train_step_into(&mut model, &sgd, &x, &labels, lr, &mut meter);
                    if args.cuda_graph && captured.is_none() && labels.len() == args.batch_size {
                        let step = CapturedStep::capture(&mut model, &sgd, &x, &labels, &mut meter)
                            .context("capturing the training step as a CUDA graph (run without --cuda-graph to train eagerly)")?;
                        captured = Some(step);
                    }
                }
            }
            steps = i + 1;
            if device.is_cpu() || read_at.elapsed() >= READ_EVERY {
                read(&meter, steps, read_steps, lr)?;
                (read_steps, read_at) = (steps, Instant::now());
            }
            bar.inc(1);
        }
        // The epoch's totals (on a GPU: waits for its last steps).
        let train = read(&meter, steps, read_steps, lr)?;
        bar.finish_and_clear();
        let seen = train.count;
        let train_secs = started.elapsed().as_secs_f64();
        let test = evaluate(&mut model, &cifar.test, norm, args.batch_size, interactive)?;
        if captured.is_some() {
            // The epoch's short last batch and the evaluation ran eagerly from the pool, which
            // keeps what it grew to: hand that back, so it is not resident beside the graph's
            // working set for the rest of the run.
            if let Some(gpu) = device.gpu() {
                gpu.synchronize().context("waiting for the evaluation")?;
                gpu.trim_pool().context("trimming the memory pool")?;
            }
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: lr as f64,
            train_loss: train.loss,
            train_acc: train.accuracy(),
            test_loss: test.loss,
            test_acc: test.accuracy,
            seconds: started.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {:>3}/{}  lr {:.4}  train loss {:.4} acc {:6.2}%  test loss {:.4} acc {:6.2}%  {:.1}s ({:.0} img/s training)",
            record.epoch,
            args.epochs,
            record.lr,
            record.train_loss,
            100.0 * record.train_acc,
            record.test_loss,
            100.0 * record.test_acc,
            record.seconds,
            seen as f64 / train_secs.max(1e-9)
        );
        records.push(record);
        if let Some(path) = &args.metrics {
            metrics::write_csv(path, &records)?;
        }
        if let Some(path) = &args.plot {
            plot::write_plot(path, &records, &title)?;
        }
        if let Some(path) = &args.save {
            save(path, &mut model, args, dataset, norm, &records)?;
        }
    }
    if let Some(best) = records
        .iter()
        .max_by(|a, b| a.test_acc.total_cmp(&b.test_acc))
    {
        let total: f64 = records.iter().map(|r| r.seconds).sum();
        println!(
            "done: {} epochs in {:.1}s; best test accuracy {:.2}% at epoch {}, last {:.2}%",
            records.len(),
            total,
            100.0 * best.test_acc,
            best.epoch,
            100.0 * records.last().map_or(0.0, |r| r.test_acc)
        );
    }
    Ok(())
}

/// Reads a training meter; the error says what was being read.
fn meter_of(meter: &LossMeter) -> Result<MeterReading> {
    meter
        .read()
        .context("reading the training loss from the device")
}

fn save(
    path: &Path,
    model: &mut ResNet,
    args: &TrainArgs,
    dataset: data::Dataset,
    norm: Normalization,
    records: &[EpochRecord],
) -> Result<()> {
    let mut meta: BTreeMap<String, String> = state::config_metadata(&model.config);
    meta.insert("format".into(), FORMAT.into());
    meta.insert("dataset".into(), dataset.to_string());
    meta.insert("epoch".into(), records.len().to_string());
    meta.insert("seed".into(), args.seed.to_string());
    meta.insert("normalization".into(), norm_to_string(&norm));
    meta.insert("metrics_csv".into(), metrics::to_csv_string(records));
    meta.insert("rng".into(), "none to save: epoch e draws order, crops and flips from ChaCha8 streams seeded by (seed, e)".into());
    meta.insert("args".into(), format!("{args:?}"));
    meta.insert("build".into(), resnet_cifar::BUILD_INFO.into());
    let tensors: Vec<NamedTensor> = state::model_tensors(model, true)?;
    checkpoint::save(path, &tensors, &meta)
}

/// Load a checkpoint into `model` (which was built from the requested flags) and return the
/// metrics history it carries.
fn resume(path: &Path, model: &mut ResNet, dataset: data::Dataset) -> Result<Vec<EpochRecord>> {
    let (tensors, meta) = checkpoint::load(path)?;
    let found = state::config_from_metadata(&meta)
        .with_context(|| format!("reading {}", path.display()))?;
    state::ensure_same_model(path, &found, &model.config)?;
    if let Some(d) = meta.get("dataset") {
        ensure!(
            *d == dataset.to_string(),
            "checkpoint {} was trained on {d}, but --dataset is {dataset}",
            path.display()
        );
    }
    state::load_model_tensors(model, &tensors, true)
        .with_context(|| format!("loading {}", path.display()))?;
    let records = metrics::parse_csv(meta.get("metrics_csv").map_or("", String::as_str))
        .with_context(|| format!("metrics history in {}", path.display()))?;
    let epoch: usize = meta
        .get("epoch")
        .context("checkpoint metadata lacks `epoch`")?
        .parse()
        .context("bad `epoch` in checkpoint metadata")?;
    ensure!(
        records.len() == epoch,
        "checkpoint {} says epoch {epoch} but holds {} metrics rows",
        path.display(),
        records.len()
    );
    Ok(records)
}
