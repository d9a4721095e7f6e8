//! A run's checkpoint: what [`save`] writes after every epoch, and within an epoch when the
//! run is stopped by a signal (the model's tensors and momentum, and beside them the run's
//! settings, metrics history, warm-up state, devices, normalisation, class names, and for a
//! stop within an epoch where it stopped: `crate::engine::partial`), and what a resumed run
//! reads back ([`Resumed`]).
//!
//! Resuming is exact on the CPU: weights, BN buffers, momentum, the metrics history and the
//! warm-up's state come from the checkpoint, and every random choice of epoch `e` (order,
//! crops, flips) is drawn from streams seeded by `(seed, e)`, so the generators' state is the
//! epoch and the position in it.

use crate::engine::checkpoint::{self, NamedTensor};
use crate::engine::metrics::{self, EpochRecord};
use crate::engine::partial::PartialEpoch;
use crate::engine::spec::RunSpec;
use crate::engine::state;
use anyhow::{bail, ensure, Context, Result};
use data::Normalization;
use model::{ResNet, ResNetConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Checkpoint format tag (metadata `format`). Version 2 records the run's settings (`run`),
/// the warm-up's state and the dataset's class names; version 3 adds `partial_epoch` to a
/// checkpoint written within an epoch (a run stopped by a signal). Every version loads:
/// without `partial_epoch` a checkpoint is at the end of its last epoch, as before.
pub const FORMAT: &str = "resnet-cifar-checkpoint/3";

fn norm_to_string(n: &Normalization) -> String {
    // `{:?}` prints the shortest text that parses back to the same f32.
    format!(
        "{:?};{:?};{:?};{:?};{:?};{:?}",
        n.mean[0], n.mean[1], n.mean[2], n.std[0], n.std[1], n.std[2]
    )
}

/// The normalisation as checkpoint metadata writes it (`normalization`).
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

/// The dataset named in checkpoint metadata (`cifar10` when absent, as old checkpoints were).
pub fn dataset_of(meta: &BTreeMap<String, String>) -> Result<data::Dataset> {
    meta.get("dataset")
        .map_or(Ok(data::Dataset::Cifar10), |d| d.parse())
        .context("bad `dataset` in checkpoint metadata")
}

/// What a checkpoint says beside the tensors.
pub struct SaveInfo<'a> {
    pub spec: &'a RunSpec,
    pub class_names: &'a [String],
    pub norm: Normalization,
    pub records: &'a [EpochRecord],
    pub warmup_done_at: Option<usize>,
    pub devices: &'a [String],
    /// How the run was asked for (the command's arguments), kept for the record.
    pub invocation: &'a str,
    /// Where in the epoch after `records` the run stopped, for a checkpoint within an epoch.
    pub partial: Option<&'a PartialEpoch>,
}

/// Writes the checkpoint (atomically).
pub fn save(path: &Path, model: &mut ResNet, info: &SaveInfo) -> Result<()> {
    let mut meta: BTreeMap<String, String> = state::config_metadata(&model.config);
    meta.insert("format".into(), FORMAT.into());
    meta.insert("dataset".into(), info.spec.dataset.to_string());
    meta.insert(
        "class_names".into(),
        serde_json::to_string(info.class_names).expect("strings serialise"),
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
    meta.insert("rng".into(), "epoch e draws order, crops and flips from ChaCha8 streams seeded by (seed, e) and the sample's position: the state is the epoch and the step".into());
    if let Some(p) = info.partial {
        meta.insert("partial_epoch".into(), p.to_json());
    }
    meta.insert("args".into(), info.invocation.into());
    meta.insert("build".into(), resnet_cifar::BUILD_INFO.into());
    let tensors: Vec<NamedTensor> = state::model_tensors(model, true)?;
    checkpoint::save(path, &tensors, &meta)
}

/// A checkpoint being continued: its tensors and metadata, read (and checked finite) once.
pub struct Resumed {
    pub path: PathBuf,
    pub tensors: Vec<NamedTensor>,
    pub meta: BTreeMap<String, String>,
}

impl Resumed {
    pub fn load(path: &Path) -> Result<Resumed> {
        let (tensors, meta) = checkpoint::load(path)?;
        Ok(Resumed {
            path: path.to_path_buf(),
            tensors,
            meta,
        })
    }

    /// The checkpoint's model.
    pub fn config(&self) -> Result<ResNetConfig> {
        state::config_from_metadata(&self.meta)
            .with_context(|| format!("reading {}", self.path.display()))
    }

    /// The settings the run was started with (and extended to).
    pub fn spec(&self) -> Result<RunSpec> {
        let Some(run) = self.meta.get("run") else {
            bail!(
                "checkpoint {} was written before runs recorded their settings (format {}): it \
                 cannot be resumed without guessing them; `train eval` still reads it",
                self.path.display(),
                self.meta.get("format").map_or("unknown", String::as_str)
            );
        };
        RunSpec::from_json(run).with_context(|| format!("reading {}", self.path.display()))
    }

    /// The metrics history, checked against the epoch count.
    pub fn records(&self) -> Result<Vec<EpochRecord>> {
        let (meta, path) = (&self.meta, &self.path);
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

    /// The iteration at which the paper's warm-up ended, if it has.
    pub fn warmup_done_at(&self) -> Result<Option<usize>> {
        self.meta
            .get("warmup_done_at")
            .map(|s| s.parse::<usize>())
            .transpose()
            .context("bad `warmup_done_at` in checkpoint metadata")
    }

    /// Where the run stopped within the epoch after its last full one, if it did.
    pub fn partial(&self) -> Result<Option<PartialEpoch>> {
        self.meta
            .get("partial_epoch")
            .map(|p| PartialEpoch::from_json(p))
            .transpose()
            .with_context(|| format!("reading {}", self.path.display()))
    }

    /// Every device the run has trained on, in order.
    pub fn devices(&self) -> Vec<String> {
        self.meta
            .get("devices")
            .map(|d| d.split('|').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The run continues on the data it was trained on: the same normalisation.
    pub fn ensure_same_normalization(&self, now: &Normalization) -> Result<()> {
        let had = norm_from_string(
            self.meta
                .get("normalization")
                .context("checkpoint metadata lacks `normalization`")?,
        )?;
        ensure!(
            had == *now,
            "the training images are not the run's: their normalisation is mean {:?} std {:?}, \
             the checkpoint {} was trained with mean {:?} std {:?}; use the data (--data-dir) \
             the run was started on",
            now.mean,
            now.std,
            self.path.display(),
            had.mean,
            had.std
        );
        Ok(())
    }
}
