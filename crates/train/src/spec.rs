//! What defines a training run, resolved once from the command line (a fresh run) or from
//! the checkpoint (a resumed one), and written into every checkpoint.
//!
//! A resumed run takes every setting from its checkpoint: a flag left out means "as it was";
//! a flag given with another value is an error naming both values (a different `--epochs`
//! would move the lr drops, a different `--limit-train` the normalisation, ...). The one
//! sanctioned change is `--extend` with a larger `--epochs`: the run continues past its end on
//! the schedule it had (the lr drops stay where they were; past them lr stays at its last
//! value).

use crate::cli::{DatasetArg, PrecisionArg, ScheduleArg, ShortcutArg, TrainArgs};
use anyhow::{bail, ensure, Context, Result};
use model::{ResNetConfig, ShortcutKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Depths the paper trains with its warm-up (He et al. 2016, §4.2: ResNet-110, and 1202).
pub const WARMUP_DEPTHS: [usize; 2] = [110, 1202];

/// Learning-rate warm-up at lr/10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warmup {
    None,
    /// A fixed number of iterations (`--warmup-iters N`).
    Iters(usize),
    /// The paper's rule for ResNet-110/1202: until the training error is below 80%.
    UntilTrainErrorBelow80,
}

impl Warmup {
    /// As a `--warmup-iters` value would say it, for messages.
    pub fn describe(self) -> String {
        match self {
            Warmup::None => "none".into(),
            Warmup::Iters(n) => n.to_string(),
            Warmup::UntilTrainErrorBelow80 => {
                "the paper's rule, lr/10 until the training error is below 80%".into()
            }
        }
    }

    fn to_json(self) -> Value {
        match self {
            Warmup::None => json!("none"),
            Warmup::Iters(n) => json!(n),
            Warmup::UntilTrainErrorBelow80 => json!("train-error-below-80%"),
        }
    }

    fn from_json(v: &Value) -> Option<Warmup> {
        match v {
            Value::String(s) if s == "none" => Some(Warmup::None),
            Value::String(s) if s == "train-error-below-80%" => {
                Some(Warmup::UntilTrainErrorBelow80)
            }
            v => v.as_u64().map(|n| Warmup::Iters(n as usize)),
        }
    }

    /// `--warmup-iters` resolved: absent is the paper's rule at depth 110 and 1202, else none.
    pub fn from_flag(flag: Option<usize>, depth: usize) -> Warmup {
        match flag {
            None if WARMUP_DEPTHS.contains(&depth) => Warmup::UntilTrainErrorBelow80,
            None | Some(0) => Warmup::None,
            Some(n) => Warmup::Iters(n),
        }
    }
}

/// Every setting that defines a run (the model's configuration is checked beside it).
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub dataset: data::Dataset,
    /// Epochs to train (grows with `--extend`).
    pub epochs: usize,
    /// Epochs the learning-rate schedule was laid out over (the first `--epochs`).
    pub schedule_epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub no_decay_bn_bias: bool,
    pub schedule: ScheduleArg,
    /// `--milestones` as given (epochs); `None`: 50% and 75% of the schedule's iterations.
    pub milestones: Option<Vec<usize>>,
    pub warmup: Warmup,
    pub augment: bool,
    pub seed: u64,
    pub limit_train: Option<usize>,
    /// Training images held out for validation (0: none).
    pub val_split: usize,
    pub precision: PrecisionArg,
}

fn schedule_name(s: ScheduleArg) -> &'static str {
    match s {
        ScheduleArg::Step => "step",
        ScheduleArg::Cosine => "cosine",
    }
}

fn precision_name(p: PrecisionArg) -> &'static str {
    match p {
        PrecisionArg::Fp32 => "fp32",
        PrecisionArg::Bf16 => "bf16",
    }
}

fn list(v: &Option<Vec<usize>>) -> String {
    match v {
        None => "the default (50% and 75% of the iterations)".into(),
        Some(v) => v
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

impl RunSpec {
    /// A fresh run: the flags, with the paper's defaults for those left out.
    pub fn from_args(args: &TrainArgs, depth: usize) -> RunSpec {
        let epochs = args.epochs.unwrap_or(164);
        RunSpec {
            dataset: args.data.dataset.map_or(data::Dataset::Cifar10, Into::into),
            epochs,
            schedule_epochs: epochs,
            batch_size: args.batch_size.unwrap_or(128),
            lr: args.lr.unwrap_or(0.1),
            momentum: args.momentum.unwrap_or(0.9),
            nesterov: args.nesterov,
            weight_decay: args.weight_decay.unwrap_or(1e-4),
            no_decay_bn_bias: args.no_decay_bn_bias,
            schedule: args.schedule.unwrap_or(ScheduleArg::Step),
            milestones: args.milestones.clone(),
            warmup: Warmup::from_flag(args.warmup_iters, depth),
            augment: !args.no_augment,
            seed: args.seed.unwrap_or(0),
            limit_train: args.limit_train,
            val_split: args.val_split.unwrap_or(0),
            precision: args.data.precision.unwrap_or(PrecisionArg::Fp32),
        }
    }

    /// The spec as checkpoint metadata (JSON).
    pub fn to_json(&self) -> String {
        json!({
            "dataset": self.dataset.to_string(),
            "epochs": self.epochs,
            "schedule_epochs": self.schedule_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "no_decay_bn_bias": self.no_decay_bn_bias,
            "schedule": schedule_name(self.schedule),
            "milestones": self.milestones,
            "warmup": self.warmup.to_json(),
            "augment": self.augment,
            "seed": self.seed,
            "limit_train": self.limit_train,
            "val_split": self.val_split,
            "precision": precision_name(self.precision),
        })
        .to_string()
    }

    /// Reads [`RunSpec::to_json`] back.
    pub fn from_json(text: &str) -> Result<RunSpec> {
        let v: Value = serde_json::from_str(text).context("`run` is not JSON")?;
        let field = |k: &str| v.get(k).with_context(|| format!("`run` lacks `{k}`"));
        let uint = |k: &str| -> Result<u64> {
            field(k)?
                .as_u64()
                .with_context(|| format!("`run.{k}` is not a whole number"))
        };
        let float = |k: &str| -> Result<f32> {
            Ok(field(k)?
                .as_f64()
                .with_context(|| format!("`run.{k}` is not a number"))? as f32)
        };
        let flag = |k: &str| -> Result<bool> {
            field(k)?
                .as_bool()
                .with_context(|| format!("`run.{k}` is not true/false"))
        };
        let text = |k: &str| -> Result<String> {
            Ok(field(k)?
                .as_str()
                .with_context(|| format!("`run.{k}` is not text"))?
                .to_string())
        };
        let optional_uint = |k: &str| -> Result<Option<usize>> {
            match field(k)? {
                Value::Null => Ok(None),
                x => Ok(Some(
                    x.as_u64()
                        .with_context(|| format!("`run.{k}` is not a whole number"))?
                        as usize,
                )),
            }
        };
        let milestones = match field("milestones")? {
            Value::Null => None,
            Value::Array(a) => Some(
                a.iter()
                    .map(|x| x.as_u64().map(|e| e as usize))
                    .collect::<Option<Vec<usize>>>()
                    .context("`run.milestones` is not a list of epochs")?,
            ),
            _ => bail!("`run.milestones` is not a list of epochs"),
        };
        Ok(RunSpec {
            dataset: text("dataset")?.parse().context("`run.dataset`")?,
            epochs: uint("epochs")? as usize,
            schedule_epochs: uint("schedule_epochs")? as usize,
            batch_size: uint("batch_size")? as usize,
            lr: float("lr")?,
            momentum: float("momentum")?,
            nesterov: flag("nesterov")?,
            weight_decay: float("weight_decay")?,
            no_decay_bn_bias: flag("no_decay_bn_bias")?,
            schedule: match text("schedule")?.as_str() {
                "step" => ScheduleArg::Step,
                "cosine" => ScheduleArg::Cosine,
                other => bail!("unknown `run.schedule` `{other}`"),
            },
            milestones,
            warmup: Warmup::from_json(field("warmup")?).context("bad `run.warmup`")?,
            augment: flag("augment")?,
            seed: uint("seed")?,
            limit_train: optional_uint("limit_train")?,
            val_split: uint("val_split")? as usize,
            precision: match text("precision")?.as_str() {
                "fp32" => PrecisionArg::Fp32,
                "bf16" => PrecisionArg::Bf16,
                other => bail!("unknown `run.precision` `{other}`"),
            },
        })
    }

    /// A resumed run: `self` is the checkpoint's spec (from `file`); every flag given in
    /// `args` must agree with it, except a larger `--epochs` with `--extend`. Returns the spec
    /// to continue with.
    pub fn resume_with(&self, args: &TrainArgs, depth: usize, file: &Path) -> Result<RunSpec> {
        let mut conflicts: Vec<String> = Vec::new();
        let mut check = |flag: &str, given: Option<String>, had: String| {
            if let Some(given) = given {
                if given != had {
                    conflicts.push(format!("{flag} {given} (the checkpoint's: {had})"));
                }
            }
        };
        let s = |x: &dyn ToString| x.to_string();
        check(
            "--dataset",
            args.data.dataset.map(|d| s(&data::Dataset::from(d))),
            s(&self.dataset),
        );
        check(
            "--batch-size",
            args.batch_size.map(|v| s(&v)),
            s(&self.batch_size),
        );
        check("--lr", args.lr.map(|v| s(&v)), s(&self.lr));
        check(
            "--momentum",
            args.momentum.map(|v| s(&v)),
            s(&self.momentum),
        );
        check(
            "--weight-decay",
            args.weight_decay.map(|v| s(&v)),
            s(&self.weight_decay),
        );
        check(
            "--schedule",
            args.schedule.map(|v| schedule_name(v).to_string()),
            schedule_name(self.schedule).to_string(),
        );
        check(
            "--milestones",
            args.milestones.as_ref().map(|m| list(&Some(m.clone()))),
            list(&self.milestones),
        );
        check(
            "--warmup-iters",
            args.warmup_iters
                .map(|w| Warmup::from_flag(Some(w), depth).describe()),
            self.warmup.describe(),
        );
        check("--seed", args.seed.map(|v| s(&v)), s(&self.seed));
        check(
            "--limit-train",
            args.limit_train.map(|v| s(&v)),
            self.limit_train
                .map_or("none (all images)".into(), |v| s(&v)),
        );
        check(
            "--val-split",
            args.val_split.map(|v| s(&v)),
            s(&self.val_split),
        );
        check(
            "--precision",
            args.data.precision.map(|p| precision_name(p).to_string()),
            precision_name(self.precision).to_string(),
        );
        let switch = |on: bool| if on { "given" } else { "not given" }.to_string();
        for (flag, given, had) in [
            ("--nesterov", args.nesterov, self.nesterov),
            (
                "--no-decay-bn-bias",
                args.no_decay_bn_bias,
                self.no_decay_bn_bias,
            ),
            ("--no-augment", args.no_augment, !self.augment),
        ] {
            if given && !had {
                conflicts.push(format!("{flag} (the checkpoint's run: {})", switch(had)));
            }
        }
        let mut spec = self.clone();
        match args.epochs {
            Some(e) if e == self.epochs => {}
            Some(e) if args.extend && e > self.epochs => {
                ensure!(
                    self.schedule == ScheduleArg::Step,
                    "--extend cannot continue a cosine schedule past its end (lr is 0 there); \
                     start a new run instead"
                );
                spec.epochs = e;
            }
            Some(e) if args.extend => bail!(
                "--extend --epochs {e}: the checkpoint {} already plans {} epochs; --extend \
                 only makes a run longer",
                file.display(),
                self.epochs
            ),
            Some(e) => conflicts.push(format!(
                "--epochs {e} (the checkpoint's: {}; its lr schedule is laid out over {} \
                 epochs: add --extend to train past its end on that schedule)",
                self.epochs, self.schedule_epochs
            )),
            None => ensure!(
                !args.extend,
                "--extend needs --epochs N, more than the checkpoint's {}",
                self.epochs
            ),
        }
        if !conflicts.is_empty() {
            bail!(
                "{} conflicts with the run in checkpoint {}: {}. A resumed run keeps its \
                 settings: leave these flags out (or start a new run with another --save)",
                if conflicts.len() == 1 {
                    "a flag"
                } else {
                    "flags"
                },
                file.display(),
                conflicts.join("; ")
            );
        }
        Ok(spec)
    }
}

/// The model flags of a resumed run must agree with the checkpoint's model; left out, they
/// are the checkpoint's.
pub fn ensure_model_flags_agree(args: &TrainArgs, found: &ResNetConfig, file: &Path) -> Result<()> {
    let mut conflicts = Vec::new();
    if let Some(d) = args.depth.filter(|&d| d != found.depth) {
        conflicts.push(format!("--depth {d} (the checkpoint's: {})", found.depth));
    }
    if let Some(w) = args.width.filter(|&w| w != found.widths[0]) {
        conflicts.push(format!(
            "--width {w} (the checkpoint's: {})",
            found.widths[0]
        ));
    }
    let shortcut = args.shortcut.map(|s| match s {
        ShortcutArg::Pad => ShortcutKind::Pad,
        ShortcutArg::Conv => ShortcutKind::Conv,
    });
    if let Some(s) = shortcut.filter(|&s| s != found.shortcut) {
        conflicts.push(format!(
            "--shortcut {s} (the checkpoint's: {})",
            found.shortcut
        ));
    }
    if !conflicts.is_empty() {
        let asked = ResNetConfig::from_depth(
            args.depth.unwrap_or(found.depth),
            Some(args.width.unwrap_or(found.widths[0])),
            Some(shortcut.unwrap_or(found.shortcut)),
            found.num_classes,
        )
        .map_or_else(|_| "another model".to_string(), |c| c.name());
        bail!(
            "checkpoint {} holds {}, but the flags ask for {asked} ({}); leave the model flags \
             out to resume it",
            file.display(),
            found.name(),
            conflicts.join("; ")
        );
    }
    Ok(())
}

/// The dataset named in checkpoint metadata (`cifar10` when absent, as old checkpoints were).
pub fn dataset_of(meta: &BTreeMap<String, String>) -> Result<data::Dataset> {
    meta.get("dataset")
        .map_or(Ok(data::Dataset::Cifar10), |d| d.parse())
        .context("bad `dataset` in checkpoint metadata")
}

impl From<data::Dataset> for DatasetArg {
    fn from(d: data::Dataset) -> Self {
        match d {
            data::Dataset::Cifar10 => DatasetArg::Cifar10,
            data::Dataset::Cifar100 => DatasetArg::Cifar100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &str) -> TrainArgs {
        let cli = crate::cli::Cli::try_parse_from(
            std::iter::once("train").chain(line.split_whitespace()),
        )
        .unwrap();
        cli.train
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let a = args("--depth 110 --epochs 7 --lr 0.05 --milestones 3,5 --val-split 10 --seed 4 --no-augment --precision bf16 --limit-train 99");
        let spec = RunSpec::from_args(&a, 110);
        assert_eq!(spec.warmup, Warmup::UntilTrainErrorBelow80);
        assert_eq!(RunSpec::from_json(&spec.to_json()).unwrap(), spec);
        let plain = RunSpec::from_args(&args(""), 20);
        assert_eq!(plain.warmup, Warmup::None);
        assert_eq!((plain.epochs, plain.batch_size, plain.lr), (164, 128, 0.1));
        assert_eq!(RunSpec::from_json(&plain.to_json()).unwrap(), plain);
        assert_eq!(Warmup::from_flag(Some(0), 110), Warmup::None);
        assert_eq!(Warmup::from_flag(Some(400), 20), Warmup::Iters(400));
    }

    #[test]
    fn a_resumed_run_keeps_its_settings_and_names_each_conflict() {
        let f = Path::new("ck.safetensors");
        let spec = RunSpec::from_args(&args("--epochs 10 --limit-train 500"), 20);
        // Left out or equal: the checkpoint's.
        assert_eq!(spec.resume_with(&args(""), 20, f).unwrap(), spec);
        assert_eq!(
            spec.resume_with(&args("--epochs 10 --lr 0.1"), 20, f)
                .unwrap(),
            spec
        );
        let e = spec
            .resume_with(&args("--epochs 20 --limit-train 100 --nesterov"), 20, f)
            .unwrap_err()
            .to_string();
        for needle in [
            "--epochs 20 (the checkpoint's: 10",
            "--limit-train 100 (the checkpoint's: 500)",
            "--nesterov",
            "--extend",
            "ck.safetensors",
        ] {
            assert!(e.contains(needle), "`{needle}` missing: {e}");
        }
        // Extending is explicit, and only longer.
        let longer = spec
            .resume_with(&args("--epochs 20 --extend --resume ck"), 20, f)
            .unwrap();
        assert_eq!((longer.epochs, longer.schedule_epochs), (20, 10));
        assert!(spec
            .resume_with(&args("--epochs 5 --extend --resume ck"), 20, f)
            .is_err());
        assert!(spec
            .resume_with(&args("--extend --resume ck"), 20, f)
            .is_err());
        let cosine = RunSpec::from_args(&args("--epochs 10 --schedule cosine"), 20);
        assert!(cosine
            .resume_with(&args("--epochs 20 --extend --resume ck"), 20, f)
            .is_err());
    }
}
