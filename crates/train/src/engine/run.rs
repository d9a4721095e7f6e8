//! A training run, from its resolved settings to the epoch loop: the data (with the held-out
//! validation images of `val_split`), whether it fits in memory (`memory`, before anything big
//! is allocated), the model (fresh, or continuing a checkpoint: `snapshot`), then the loop
//! (`epochs`). A [`Run`] is plain data any command can build: `train` from its flags,
//! `reproduce` from the paper's recipe. A run that saves a checkpoint holds the lock beside it
//! (`lock`) while it trains, and stops cleanly on SIGTERM/SIGINT (`interrupt`).

use crate::engine::device::{self, DeviceChoice};
use crate::engine::epochs::{self, Outputs, Plan};
use crate::engine::interrupt;
use crate::engine::lock::{lock_path, Claim, RunLock};
use crate::engine::memory::{self, Work};
use crate::engine::metrics::EpochRecord;
use crate::engine::oom;
use crate::engine::snapshot::Resumed;
use crate::engine::spec::RunSpec;
use crate::engine::state;
use anyhow::{bail, ensure, Context, Result};
use data::Normalization;
use model::{Footprint, ResNet, ResNetConfig};
use std::path::PathBuf;
use tensor::Device;

/// Everything a run needs, resolved.
pub struct Run {
    pub config: ResNetConfig,
    pub spec: RunSpec,
    /// The checkpoint it continues, if any (its settings are already in `spec`).
    pub resumed: Option<Resumed>,
    /// Directory holding the dataset's files.
    pub data_dir: PathBuf,
    /// Evaluate on the first N test images only.
    pub limit_test: Option<usize>,
    pub device: DeviceChoice,
    pub outputs: Outputs,
    /// On a GPU, replay the training step as a CUDA graph.
    pub cuda_graph: bool,
    /// How the run was asked for (the command's arguments), recorded in its checkpoint.
    pub invocation: String,
    /// The lock of `outputs.save`, when the command took it already (`reproduce` takes it
    /// before reading the checkpoint, to skip a run another process trains); otherwise
    /// [`train`] takes it.
    pub lock: Option<RunLock>,
}

/// A finished (or already complete) run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub config: ResNetConfig,
    pub params: usize,
    pub records: Vec<EpochRecord>,
    /// Every device the run trained on, in order (a resumed run may change device).
    pub devices: Vec<String>,
}

fn job(config: &ResNetConfig, batch_size: usize) -> oom::Job {
    oom::Job {
        what: "training",
        model: config.name(),
        params: Footprint::of(config).params as usize,
        batch_size,
    }
}

/// `--dry-run`: the memory estimate and the model's summary, nothing trained.
pub fn dry_run(config: &ResNetConfig, spec: &RunSpec) -> Result<()> {
    spec.check()?;
    // Every model is built on the host first: one that cannot be is refused here.
    memory::ensure_fits(config, Work::Build, &Device::Cpu, 0)?;
    println!("{}", memory::estimate_line(config, spec.batch_size));
    oom::guard(&job(config, spec.batch_size), &Device::Cpu, || {
        print!("{}", ResNet::new(config, spec.seed).summary_text());
        Ok(())
    })
}

/// Trains `run` to its last epoch.
pub fn train(run: &Run) -> Result<RunOutcome> {
    let Run { config, spec, .. } = run;
    spec.check()?;
    interrupt::install()?;
    let _lock = match (&run.lock, &run.outputs.save) {
        (None, Some(path)) => match RunLock::try_claim(path)? {
            Claim::Held(lock) => Some(lock),
            Claim::Busy(who) => bail!(
                "{} is being trained by {who} (it holds {}): one process trains a run at a time",
                path.display(),
                lock_path(path).display()
            ),
        },
        _ => None,
    };
    // Every model is built on the host first: one that cannot be is refused here, before the
    // device is opened (and before its notice).
    let building = Work::BuildToTrain {
        batch: spec.batch_size,
    };
    memory::ensure_fits(config, building, &Device::Cpu, 0)?;
    let device = device::select(run.device)?;
    let mut cifar = data::load(&run.data_dir, spec.dataset)?;
    if let Some(n) = spec.limit_train {
        cifar.train.truncate(n);
    }
    ensure!(
        spec.val_split < cifar.train.len(),
        "--val-split {} leaves no training images: there are {} (after --limit-train)",
        spec.val_split,
        cifar.train.len()
    );
    let val = cifar.train.split_off(cifar.train.len() - spec.val_split);
    if let Some(n) = run.limit_test {
        cifar.test.truncate(n);
    }
    let norm = Normalization::from_split(&cifar.train);
    if let Some(r) = &run.resumed {
        r.ensure_same_normalization(&norm)?;
    }
    let batch = spec.batch_size.min(cifar.train.len());
    let data_bytes = cifar.train.images.len() + val.images.len() + cifar.test.images.len();
    let fits = memory::ensure_fits(config, Work::Train { batch }, &device, data_bytes);
    if batch < spec.batch_size {
        fits.with_context(|| {
            format!(
                "--batch-size {} is more than the {batch} training images, so a step takes them all",
                spec.batch_size
            )
        })?;
    } else {
        fits?;
    }
    oom::guard(&job(config, spec.batch_size), &device, || {
        let mut model = ResNet::new(config, spec.seed);
        model.set_precision(spec.precision);
        let mut records = Vec::new();
        let mut warmup_done_at = None;
        let mut devices = Vec::new();
        let mut partial = None;
        if let Some(r) = &run.resumed {
            state::load_model_tensors(&mut model, &r.tensors, true)
                .with_context(|| format!("loading {}", r.path.display()))?;
            records = r.records()?;
            warmup_done_at = r.warmup_done_at()?;
            devices = r.devices();
            partial = r.partial()?;
            match &partial {
                Some(p) => println!(
                    "resumed from {} within epoch {} of {}: at step {} of {} (stopped by {})",
                    r.path.display(),
                    p.epoch,
                    spec.epochs,
                    p.steps_done + 1,
                    p.steps_per_epoch,
                    p.stopped_by
                ),
                None => println!(
                    "resumed from {} after epoch {} of {}",
                    r.path.display(),
                    records.len(),
                    spec.epochs
                ),
            }
        }
        let here = device::describe(&device);
        if devices.last() != Some(&here) {
            devices.push(here);
        }
        let params = model.num_params();
        let records = epochs::run(Plan {
            spec,
            outputs: &run.outputs,
            cuda_graph: run.cuda_graph,
            invocation: &run.invocation,
            model,
            device: &device,
            cifar: &cifar,
            val: &val,
            norm,
            records,
            warmup_done_at,
            devices: &devices,
            partial,
        })?;
        Ok(RunOutcome {
            config: config.clone(),
            params,
            records,
            devices,
        })
    })
}
