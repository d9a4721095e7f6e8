//! The epoch loop: steps with a progress bar, the warm-up, evaluation on the validation and
//! test images, metrics, plot and checkpoint after every epoch. One training step itself is
//! `model::step::train_step_into`.
//!
//! On a GPU the loop never waits for the device after a step: the loss and hits accumulate in
//! a [`LossMeter`] on the device, which is read (the one synchronisation) only when the
//! progress line is refreshed, about four times a second, at the warm-up's checks while it
//! lasts, and at the end of the epoch. The divergence check happens at each read, so it names
//! the steps between two reads; a non-finite validation or test loss stops the run too, before
//! the epoch is written anywhere, so the last checkpoint stays the last good one.
//!
//! After each step the loop checks whether a signal asked it to stop (`interrupt`): then it
//! saves the run within the epoch (`partial`) and ends with `interrupt::Stopped`; a run
//! resumed from such a checkpoint continues at the next step. The epoch's training loss and
//! hits are kept in a `Tally` beside the meter, folded in after every step on the CPU, so they
//! add up in the same order either way.

use crate::engine::batches::TrainBatches;
use crate::engine::evaluate::evaluate;
use crate::engine::interrupt::{self, Stopped};
use crate::engine::metrics::{self, EpochRecord, ValScore};
use crate::engine::partial::{PartialEpoch, Tally};
use crate::engine::plot;
use crate::engine::schedule::{show_lr, LrSchedule, Schedule, ScheduleKind};
use crate::engine::snapshot::{save, SaveInfo};
use crate::engine::spec::{RunSpec, Warmup};
use crate::engine::warmup::{WarmupState, CHECK_EVERY};
use anyhow::{bail, ensure, Context, Result};
use data::{Cifar, Loader, Normalization, Split};
use indicatif::{ProgressBar, ProgressStyle};
use model::step::{train_step_into, CapturedStep};
use model::{ResNet, Sgd};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tensor::{Device, LossMeter, MeterReading};

/// How often the GPU loop reads its loss meter (and so waits for the queued steps) to
/// refresh the progress line. On the CPU it reads after every step, which costs nothing.
const READ_EVERY: Duration = Duration::from_millis(250);

/// What a run writes after every epoch (each when given).
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// The checkpoint (`crate::engine::snapshot`), atomically.
    pub save: Option<PathBuf>,
    /// One CSV row per epoch.
    pub metrics: Option<PathBuf>,
    /// Accuracy and loss curves, as a PNG.
    pub plot: Option<PathBuf>,
}

/// Everything the loop needs.
pub struct Plan<'a> {
    pub spec: &'a RunSpec,
    pub outputs: &'a Outputs,
    /// Replay the step as a CUDA graph (GPU only).
    pub cuda_graph: bool,
    /// How the run was asked for, recorded in its checkpoint.
    pub invocation: &'a str,
    pub model: ResNet,
    pub device: &'a Device,
    pub cifar: &'a Cifar,
    /// Held-out validation images (empty without `--val-split`).
    pub val: &'a Split,
    pub norm: Normalization,
    /// Epochs done so far (a resumed run's history).
    pub records: Vec<EpochRecord>,
    pub warmup_done_at: Option<usize>,
    pub devices: &'a [String],
    /// Where in the next epoch a resumed run had stopped, if within one.
    pub partial: Option<PartialEpoch>,
}

/// An epoch's evaluation losses are finite, or the run stops here, before anything of the
/// epoch is written (`kept` says so of the checkpoint): a NaN or infinity in the weights or
/// the BN statistics shows in the validation or test loss even where the training loss did
/// not catch it.
fn ensure_finite_losses(
    epoch: usize,
    val: Option<ValScore>,
    test_loss: f64,
    kept: &str,
) -> Result<()> {
    let bad = val
        .filter(|v| !v.loss.is_finite())
        .map(|v| ("validation", v.loss))
        .or((!test_loss.is_finite()).then_some(("test", test_loss)));
    if let Some((which, loss)) = bad {
        bail!("the {which} loss became {loss} after epoch {epoch}: training diverged; try a lower --lr or --warmup-iters{kept}");
    }
    Ok(())
}

/// Trains from the end of `plan.records` to `spec.epochs`; returns the full history.
pub fn run(plan: Plan) -> Result<Vec<EpochRecord>> {
    let Plan {
        spec,
        outputs,
        cuda_graph,
        invocation,
        mut model,
        device,
        cifar,
        val,
        norm,
        mut records,
        warmup_done_at,
        devices,
        mut partial,
    } = plan;
    let dataset = spec.dataset;
    let loader = Loader::new(
        &cifar.train,
        spec.batch_size,
        true,
        spec.augment,
        norm,
        spec.seed,
    );
    let batches = TrainBatches::new(loader, &cifar.train, device)?;
    let steps_per_epoch = batches.batches_per_epoch();
    let schedule = LrSchedule {
        base_lr: spec.lr,
        schedule: match spec.schedule {
            ScheduleKind::Step => Schedule::Step {
                milestones: LrSchedule::milestones(
                    spec.milestones.as_deref(),
                    spec.schedule_epochs,
                    steps_per_epoch,
                ),
            },
            ScheduleKind::Cosine => Schedule::Cosine,
        },
        epochs: spec.schedule_epochs,
        steps_per_epoch,
        warmup_iters: match spec.warmup {
            Warmup::Iters(n) => n,
            _ => 0,
        },
    };
    let sgd = Sgd {
        momentum: spec.momentum,
        weight_decay: spec.weight_decay,
        nesterov: spec.nesterov,
        decay_weights_only: spec.no_decay_bn_bias,
    };
    let mut warm = WarmupState::new(spec.warmup, warmup_done_at);
    model
        .to_device(device)
        .context("moving the model to the GPU")?;
    let start_epoch = records.len();
    if let Some(p) = &partial {
        p.ensure_continues(start_epoch, steps_per_epoch, spec.batch_size, || {
            batches.plan_fingerprint(start_epoch)
        })?;
    }
    if start_epoch >= spec.epochs {
        println!(
            "nothing to do: the checkpoint has all {start_epoch} epochs of its run (--extend \
             --epochs N trains it further)"
        );
        return Ok(records);
    }
    let name = model.config.name();
    let split = if val.is_empty() {
        String::new()
    } else {
        format!(" / {} validation", val.len())
    };
    let from_step = partial.as_ref().map_or(String::new(), |p| {
        format!(" (epoch {} from step {})", p.epoch, p.steps_done + 1)
    });
    println!(
        "training {} ({} parameters) on {dataset}: {} train{split} / {} test images, {device}, epochs {}..{} of {steps_per_epoch} steps{from_step}, batch {}",
        name,
        model.num_params(),
        cifar.train.len(),
        cifar.test.len(),
        start_epoch + 1,
        spec.epochs,
        spec.batch_size
    );
    match spec.warmup {
        Warmup::UntilTrainErrorBelow80 if warm.watching() => println!(
            "warm-up: lr {} until the training error is below 80%, checked every {CHECK_EVERY} \
             iterations (the paper's rule at depth 110 and 1202; --warmup-iters N overrides it, 0 turns it off)",
            show_lr(spec.lr * 0.1)
        ),
        Warmup::Iters(n) if start_epoch * steps_per_epoch < n => {
            println!("warm-up: lr {} for the first {n} iterations", show_lr(spec.lr * 0.1))
        }
        _ => {}
    }
    let interactive = std::io::stderr().is_terminal();
    let title = format!("{name} on {dataset}");
    let mut meter = LossMeter::new(device).context("allocating the loss meter")?;
    ensure!(
        !cuda_graph || device.is_cuda(),
        "--cuda-graph needs a GPU, but training runs on {device}"
    );
    // What a run stopped by a non-finite loss says of its checkpoint (it saves only after an
    // epoch whose losses were all finite).
    let kept = outputs.save.as_ref().map_or(String::new(), |p| {
        format!("; the last good checkpoint, {}, is unchanged", p.display())
    });
    // With --cuda-graph: captured after the run's first (eager) step, for full-size batches.
    let mut captured: Option<CapturedStep> = None;
    for epoch in start_epoch..spec.epochs {
        let started = Instant::now();
        // A run resumed within this epoch: its first steps, their loss and time are done.
        let resumed = partial.take();
        let first = resumed.as_ref().map_or(0, |p| p.steps_done);
        let mut tally = resumed.as_ref().map_or(Tally::default(), |p| p.tally);
        let earlier_secs = resumed.as_ref().map_or(0.0, |p| p.seconds);
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
        bar.set_prefix(format!("{}/{}", epoch + 1, spec.epochs));
        // One meter for the whole run, reset per epoch: a captured step writes into it.
        meter.reset().context("resetting the loss meter")?;
        warm.start_epoch();
        if let Some(p) = &resumed {
            warm.resume_window(p.warmup_window);
        }
        bar.set_position(first as u64);
        let mut lr = warm.lr(&schedule, epoch * steps_per_epoch + first);
        // Steps done, and steps and time at the last read of the meter.
        let (mut steps, mut read_steps, mut read_at) = (first, first, Instant::now());
        // Reads the meter (on a GPU: waits for the queued steps) into the epoch's totals
        // (on the CPU folding it into the tally), stops a diverged run, and refreshes the
        // progress line.
        let read = |meter: &mut LossMeter,
                    tally: &mut Tally,
                    steps: usize,
                    read_steps: usize,
                    lr: f32|
         -> Result<MeterReading> {
            let m = tally.plus(
                &meter
                    .read()
                    .context("reading the training loss from the device")?,
            );
            if device.is_cpu() {
                *tally = Tally::of(&m);
                meter.reset().context("resetting the loss meter")?;
            }
            if m.count > 0 && !m.loss.is_finite() {
                bar.abandon();
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
            let secs = (earlier_secs + started.elapsed().as_secs_f64()).max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:5.2}% {:.0} img/s",
                m.loss,
                100.0 * m.accuracy(),
                m.count as f64 / secs
            ));
            Ok(m)
        };
        for (i, batch) in (first..).zip(batches.epoch(epoch, first)) {
            let (x, labels) = batch.context("making a training batch on the device")?;
            let iteration = epoch * steps_per_epoch + i;
            lr = warm.lr(&schedule, iteration);
            match &mut captured {
                Some(step) if step.batch_size() == labels.len() => step
                    .run(&mut model, &x, &labels, lr, &mut meter)
                    .context("replaying the captured training step")?,
                _ => {
                    train_step_into(&mut model, &sgd, &x, &labels, lr, &mut meter);
                    if cuda_graph && captured.is_none() && labels.len() == spec.batch_size {
                        let step = CapturedStep::capture(&mut model, &sgd, &x, &labels, &mut meter)
                            .context("capturing the training step as a CUDA graph (run without --cuda-graph to train eagerly)")?;
                        captured = Some(step);
                    }
                }
            }
            steps = i + 1;
            let check = warm.check_due(steps, steps == steps_per_epoch);
            interrupt::after_step(iteration + 1);
            let stop = interrupt::requested().filter(|_| steps < steps_per_epoch);
            if device.is_cpu() || check || stop.is_some() || read_at.elapsed() >= READ_EVERY {
                let m = read(&mut meter, &mut tally, steps, read_steps, lr)?;
                (read_steps, read_at) = (steps, Instant::now());
                if check {
                    if let Some(sw) = warm.check(&m, iteration + 1) {
                        bar.suspend(|| {
                            println!(
                                "warm-up done after iteration {} (epoch {}): training error {:.1}% < 80% over the last {} iterations; lr {} from now on",
                                sw.iteration,
                                epoch + 1,
                                100.0 * sw.error,
                                (steps - 1) % CHECK_EVERY + 1,
                                show_lr(warm.lr(&schedule, sw.iteration))
                            )
                        });
                    }
                }
                if let Some(signal) = stop {
                    bar.abandon();
                    let here = PartialEpoch {
                        epoch: epoch + 1,
                        steps_done: steps,
                        steps_per_epoch,
                        batch_size: spec.batch_size,
                        plan_fingerprint: batches.plan_fingerprint(epoch),
                        tally: Tally::of(&m),
                        warmup_window: warm.window(),
                        seconds: earlier_secs + started.elapsed().as_secs_f64(),
                        stopped_by: signal.to_string(),
                    };
                    let info = SaveInfo {
                        spec,
                        class_names: &cifar.class_names,
                        norm,
                        records: &records,
                        warmup_done_at: warm.done_at,
                        devices,
                        invocation,
                        partial: Some(&here),
                    };
                    if let Some(path) = &outputs.save {
                        save(path, &mut model, &info)?;
                    }
                    let at = format!(
                        "after step {steps} of {steps_per_epoch} of epoch {}",
                        epoch + 1
                    );
                    return Err(Stopped::say(signal, &at, outputs.save.as_deref()).into());
                }
            }
            bar.inc(1);
        }
        // The epoch's totals (on a GPU: waits for its last steps).
        let train = read(&mut meter, &mut tally, steps, read_steps, lr)?;
        bar.finish_and_clear();
        let seen = train.count;
        let train_secs = earlier_secs + started.elapsed().as_secs_f64();
        let val_score = if val.is_empty() {
            None
        } else {
            let v = evaluate(&mut model, val, norm, spec.batch_size, interactive)?;
            Some(ValScore {
                loss: v.loss,
                acc: v.accuracy,
            })
        };
        let test = evaluate(&mut model, &cifar.test, norm, spec.batch_size, interactive)?;
        ensure_finite_losses(epoch + 1, val_score, test.loss, &kept)?;
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
            val: val_score,
            seconds: earlier_secs + started.elapsed().as_secs_f64(),
        };
        let val_text = record.val.map_or(String::new(), |v| {
            format!("  val loss {:.4} acc {:6.2}%", v.loss, 100.0 * v.acc)
        });
        println!(
            "epoch {:>3}/{}  lr {:.4}  train loss {:.4} acc {:6.2}%{val_text}  test loss {:.4} acc {:6.2}%  {:.1}s ({:.0} img/s training)",
            record.epoch,
            spec.epochs,
            record.lr,
            record.train_loss,
            100.0 * record.train_acc,
            record.test_loss,
            100.0 * record.test_acc,
            record.seconds,
            seen as f64 / train_secs.max(1e-9)
        );
        records.push(record);
        if let Some(path) = &outputs.metrics {
            metrics::write_csv(path, &records)?;
        }
        if let Some(path) = &outputs.plot {
            plot::write_plot(path, &records, &title)?;
        }
        let info = SaveInfo {
            spec,
            class_names: &cifar.class_names,
            norm,
            records: &records,
            warmup_done_at: warm.done_at,
            devices,
            invocation,
            partial: None,
        };
        if let Some(path) = &outputs.save {
            save(path, &mut model, &info)?;
        }
        if let Some(signal) = interrupt::requested().filter(|_| epoch + 1 < spec.epochs) {
            let at = format!("after epoch {} of {}", epoch + 1, spec.epochs);
            return Err(Stopped::say(signal, &at, outputs.save.as_deref()).into());
        }
    }
    if let Some(line) = crate::engine::report::result_line(&records) {
        println!("{line}");
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_evaluation_loss_stops_the_run_naming_it() {
        let kept = "; the last good checkpoint, c.st, is unchanged";
        ensure_finite_losses(3, None, 2.3, kept).unwrap();
        let val = |loss| Some(ValScore { loss, acc: 0.5 });
        ensure_finite_losses(3, val(1.0), 2.3, kept).unwrap();
        for (v, test, said) in [
            (None, f64::NAN, "the test loss became NaN after epoch 3"),
            (
                val(1.0),
                f64::INFINITY,
                "the test loss became inf after epoch 3",
            ),
            (
                val(f64::NAN),
                2.3,
                "the validation loss became NaN after epoch 3",
            ),
        ] {
            let e = ensure_finite_losses(3, v, test, kept)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(said) && e.contains("diverged") && e.ends_with(kept),
                "{e}"
            );
        }
    }
}
