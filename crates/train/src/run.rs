//! A training run, from the command line to the epoch loop: what defines the run (the flags of
//! a fresh run, the checkpoint of a resumed one: `crate::spec`), the data (with the held-out
//! validation images of `--val-split`), whether it fits in memory (`crate::memory`, before
//! anything big is allocated), then the model and the loop (`crate::epochs`).
//!
//! Resuming is exact on the CPU: weights, BN buffers, momentum, the metrics history and the
//! warm-up's state come from the checkpoint, and every random choice of epoch `e` (order,
//! crops, flips) is drawn from streams seeded by `(seed, e)`, so there is no generator state to
//! carry over.

use crate::checkpoint::{self, NamedTensor};
use crate::cli::{ShortcutArg, TrainArgs};
use crate::device;
use crate::epochs::{self, Plan};
use crate::memory::{self, Work};
use crate::metrics::{self, EpochRecord};
use crate::oom;
use crate::spec::{self, RunSpec};
use crate::state;
use anyhow::{bail, ensure, Context, Result};
use data::{Cifar, Normalization};
use model::{Footprint, ResNet, ResNetConfig, ShortcutKind};
use std::collections::BTreeMap;
use std::path::Path;
use tensor::Device;

/// Checkpoint format tag (metadata `format`). Version 2 records the run's settings (`run`),
/// the warm-up's state and the dataset's class names.
pub const FORMAT: &str = "resnet-cifar-checkpoint/2";

/// The model the flags of a fresh run ask for.
pub fn model_config(args: &TrainArgs) -> Result<ResNetConfig> {
    let dataset: data::Dataset = args.data.dataset.map_or(data::Dataset::Cifar10, Into::into);
    let shortcut = args.shortcut.map(|s| match s {
        ShortcutArg::Pad => ShortcutKind::Pad,
        ShortcutArg::Conv => ShortcutKind::Conv,
    });
    Ok(ResNetConfig::from_depth(
        args.depth.unwrap_or(20),
        args.width,
        shortcut,
        dataset.num_classes(),
    )?)
}

fn check_spec(s: &RunSpec) -> Result<()> {
    ensure!(s.epochs > 0, "--epochs must be at least 1");
    ensure!(s.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        s.lr.is_finite() && s.lr > 0.0,
        "--lr must be a positive number, got {}",
        s.lr
    );
    ensure!(
        s.momentum.is_finite() && (0.0..1.0).contains(&s.momentum),
        "--momentum must be in [0, 1), got {}",
        s.momentum
    );
    ensure!(
        s.weight_decay.is_finite() && s.weight_decay >= 0.0,
        "--weight-decay must be >= 0, got {}",
        s.weight_decay
    );
    ensure!(s.limit_train != Some(0), "--limit-train must be at least 1");
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

/// The device for a table or a log: `cpu (Intel ..., 16 threads)`, `cuda:0 (139.8 GiB)`.
pub fn describe_device(device: &Device) -> String {
    match device.gpu() {
        Some(gpu) => match gpu.mem_info() {
            Ok((_, total)) => format!("{device} ({})", memory::human(total as f64)),
            Err(_) => device.to_string(),
        },
        None => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let model = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .map_or(String::new(), |m| format!("{m}, "));
            format!("cpu ({model}{threads} threads)")
        }
    }
}

/// A finished (or already complete) run, for `train reproduce`.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub config: ResNetConfig,
    pub params: usize,
    pub records: Vec<EpochRecord>,
    /// Every device the run trained on, in order (a resumed run may change device).
    pub devices: Vec<String>,
}

/// `train [OPTIONS]`.
pub fn train(args: &TrainArgs) -> Result<()> {
    train_run(args).map(|_| ())
}

/// A checkpoint being resumed: its tensors and metadata.
struct Resumed {
    tensors: Vec<NamedTensor>,
    meta: BTreeMap<String, String>,
}

/// Runs training as `args` say; `None` for `--dry-run`.
pub fn train_run(args: &TrainArgs) -> Result<Option<RunOutcome>> {
    let resumed = match &args.resume {
        Some(path) => {
            let (tensors, meta) = checkpoint::load(path)?;
            Some(Resumed { tensors, meta })
        }
        None => None,
    };
    let (config, spec) = match (&resumed, &args.resume) {
        (Some(r), Some(path)) => resolve_resumed(args, r, path)?,
        _ => {
            let config = model_config(args)?;
            let spec = RunSpec::from_args(args, config.depth);
            (config, spec)
        }
    };
    check_spec(&spec)?;
    // Every model is built on the host first: one that cannot be is refused here, before the
    // device is opened (and before its notice).
    let building = if args.dry_run {
        Work::Build
    } else {
        Work::BuildToTrain {
            batch: spec.batch_size,
        }
    };
    memory::ensure_fits(&config, building, &Device::Cpu, 0)?;
    if args.dry_run {
        let job = job(&config, spec.batch_size);
        println!("{}", memory::estimate_line(&config, spec.batch_size));
        return oom::guard(&job, &Device::Cpu, || {
            print!("{}", ResNet::new(&config, spec.seed).summary_text());
            Ok(None)
        });
    }
    let device = device::select(args.data.device)?;
    let mut cifar = data::load(&args.data.data_dir, spec.dataset)?;
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
    if let Some(n) = args.data.limit_test {
        cifar.test.truncate(n);
    }
    let norm = Normalization::from_split(&cifar.train);
    if let (Some(r), Some(path)) = (&resumed, &args.resume) {
        ensure_same_normalization(r, path, &norm)?;
    }
    let batch = spec.batch_size.min(cifar.train.len());
    let data_bytes = cifar.train.images.len() + val.images.len() + cifar.test.images.len();
    let fits = memory::ensure_fits(&config, Work::Train { batch }, &device, data_bytes);
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
    let job = job(&config, spec.batch_size);
    oom::guard(&job, &device, || {
        let mut model = ResNet::new(&config, spec.seed);
        model.set_precision(spec.precision.into());
        let mut records = Vec::new();
        let mut warmup_done_at = None;
        let mut devices = Vec::new();
        if let (Some(r), Some(path)) = (&resumed, &args.resume) {
            state::load_model_tensors(&mut model, &r.tensors, true)
                .with_context(|| format!("loading {}", path.display()))?;
            records = records_of(&r.meta, path)?;
            warmup_done_at = r
                .meta
                .get("warmup_done_at")
                .map(|s| s.parse::<usize>())
                .transpose()
                .context("bad `warmup_done_at` in checkpoint metadata")?;
            devices = r
                .meta
                .get("devices")
                .map(|d| d.split('|').map(str::to_string).collect())
                .unwrap_or_default();
            println!(
                "resumed from {} after epoch {} of {}",
                path.display(),
                records.len(),
                spec.epochs
            );
        }
        let here = describe_device(&device);
        if devices.last() != Some(&here) {
            devices.push(here);
        }
        let params = model.num_params();
        let records = epochs::run(Plan {
            args,
            spec: &spec,
            model,
            device: &device,
            cifar: &cifar,
            val: &val,
            norm,
            records,
            warmup_done_at,
            devices: &devices,
        })?;
        Ok(Some(RunOutcome {
            config: config.clone(),
            params,
            records,
            devices,
        }))
    })
}

fn job(config: &ResNetConfig, batch_size: usize) -> oom::Job {
    oom::Job {
        what: "training",
        model: config.name(),
        params: Footprint::of(config).params as usize,
        batch_size,
    }
}

/// The model and run of a checkpoint, with the flags checked against them.
fn resolve_resumed(args: &TrainArgs, r: &Resumed, path: &Path) -> Result<(ResNetConfig, RunSpec)> {
    let config = state::config_from_metadata(&r.meta)
        .with_context(|| format!("reading {}", path.display()))?;
    spec::ensure_model_flags_agree(args, &config, path)?;
    let Some(run) = r.meta.get("run") else {
        bail!(
            "checkpoint {} was written before runs recorded their settings (format {}): it \
             cannot be resumed without guessing them; `train eval` still reads it",
            path.display(),
            r.meta.get("format").map_or("unknown", String::as_str)
        );
    };
    let recorded =
        RunSpec::from_json(run).with_context(|| format!("reading {}", path.display()))?;
    let spec = recorded.resume_with(args, config.depth, path)?;
    Ok((config, spec))
}

fn ensure_same_normalization(r: &Resumed, path: &Path, now: &Normalization) -> Result<()> {
    let had = norm_from_string(
        r.meta
            .get("normalization")
            .context("checkpoint metadata lacks `normalization`")?,
    )?;
    ensure!(
        had == *now,
        "the training images are not the run's: their normalisation is mean {:?} std {:?}, \
         the checkpoint {} was trained with mean {:?} std {:?}; use the data (--data-dir) the \
         run was started on",
        now.mean,
        now.std,
        path.display(),
        had.mean,
        had.std
    );
    Ok(())
}

/// The metrics history of a checkpoint, checked against its epoch count.
fn records_of(meta: &BTreeMap<String, String>, path: &Path) -> Result<Vec<EpochRecord>> {
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

/// What a checkpoint says beside the tensors.
pub struct SaveInfo<'a> {
    pub args: &'a TrainArgs,
    pub spec: &'a RunSpec,
    pub cifar: &'a Cifar,
    pub norm: Normalization,
    pub records: &'a [EpochRecord],
    pub warmup_done_at: Option<usize>,
    pub devices: &'a [String],
}

/// Writes the checkpoint (atomically).
pub fn save(path: &Path, model: &mut ResNet, info: &SaveInfo) -> Result<()> {
    let mut meta: BTreeMap<String, String> = state::config_metadata(&model.config);
    meta.insert("format".into(), FORMAT.into());
    meta.insert("dataset".into(), info.spec.dataset.to_string());
    meta.insert(
        "class_names".into(),
        serde_json::to_string(&info.cifar.class_names).expect("strings serialise"),
    );
    meta.insert("epoch".into(), info.records.len().to_string());
    meta.insert("seed".into(), info.spec.seed.to_string());
    meta.insert("run".into(), info.spec.to_json());
    if let Some(at) = info.warmup_done_at {
        meta.insert("warmup_done_at".into(), at.to_string());
    }
    meta.insert("devices".into(), info.devices.join("|"));
    meta.insert("normalization".into(), norm_to_string(&info.norm));
    meta.insert("metrics_csv".into(), metrics::to_csv_string(info.records));
    meta.insert("rng".into(), "none to save: epoch e draws order, crops and flips from ChaCha8 streams seeded by (seed, e)".into());
    meta.insert("args".into(), format!("{:?}", info.args));
    meta.insert("build".into(), resnet_cifar::BUILD_INFO.into());
    let tensors: Vec<NamedTensor> = state::model_tensors(model, true)?;
    checkpoint::save(path, &tensors, &meta)
}
