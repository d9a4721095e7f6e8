//! What defines a training run, written into every checkpoint: a [`RunSpec`]. Commands build
//! one from their arguments (`crate::engine::request` resolves a fresh or resumed run's), or
//! directly from the paper's recipe ([`RunSpec::paper`]).

use crate::engine::schedule::ScheduleKind;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tensor::Precision;

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

    /// `--warmup-iters N` (0: none).
    pub fn iters(n: usize) -> Warmup {
        match n {
            0 => Warmup::None,
            n => Warmup::Iters(n),
        }
    }

    /// The default at `depth`: the paper's rule at depth 110 and 1202, else none.
    pub fn by_depth(depth: usize) -> Warmup {
        if WARMUP_DEPTHS.contains(&depth) {
            Warmup::UntilTrainErrorBelow80
        } else {
            Warmup::None
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
    pub schedule: ScheduleKind,
    /// `--milestones` as given (epochs); `None`: 50% and 75% of the schedule's iterations.
    pub milestones: Option<Vec<usize>>,
    pub warmup: Warmup,
    pub augment: bool,
    pub seed: u64,
    pub limit_train: Option<usize>,
    /// Training images held out for validation (0: none).
    pub val_split: usize,
    pub precision: Precision,
}

impl RunSpec {
    /// The paper's recipe (He et al. 2016, §4.2) for `depth` on `dataset`: 164 epochs of SGD
    /// at batch 128, lr 0.1 ÷10 at 50% and 75% of the iterations, momentum 0.9, weight decay
    /// 1e-4, crop + flip, the warm-up at depth 110 and 1202, seed 0, all training images.
    pub fn paper(dataset: data::Dataset, depth: usize) -> RunSpec {
        RunSpec {
            dataset,
            epochs: 164,
            schedule_epochs: 164,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
            no_decay_bn_bias: false,
            schedule: ScheduleKind::Step,
            milestones: None,
            warmup: Warmup::by_depth(depth),
            augment: true,
            seed: 0,
            limit_train: None,
            val_split: 0,
            precision: Precision::Fp32,
        }
    }

    /// Settings no run can train with are an error naming the flag.
    pub fn check(&self) -> Result<()> {
        ensure!(self.epochs > 0, "--epochs must be at least 1");
        ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "--lr must be a positive number, got {}",
            self.lr
        );
        ensure!(
            self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
            "--momentum must be in [0, 1), got {}",
            self.momentum
        );
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "--weight-decay must be >= 0, got {}",
            self.weight_decay
        );
        ensure!(
            self.limit_train != Some(0),
            "--limit-train must be at least 1"
        );
        Ok(())
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
            "schedule": self.schedule.name(),
            "milestones": self.milestones,
            "warmup": self.warmup.to_json(),
            "augment": self.augment,
            "seed": self.seed,
            "limit_train": self.limit_train,
            "val_split": self.val_split,
            "precision": self.precision.to_string(),
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
                "step" => ScheduleKind::Step,
                "cosine" => ScheduleKind::Cosine,
                other => bail!("unknown `run.schedule` `{other}`"),
            },
            milestones,
            warmup: Warmup::from_json(field("warmup")?).context("bad `run.warmup`")?,
            augment: flag("augment")?,
            seed: uint("seed")?,
            limit_train: optional_uint("limit_train")?,
            val_split: uint("val_split")? as usize,
            precision: match text("precision")?.as_str() {
                "fp32" => Precision::Fp32,
                "bf16" => Precision::Bf16,
                other => bail!("unknown `run.precision` `{other}`"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_round_trips_through_json() {
        let mut spec = RunSpec::paper(data::Dataset::Cifar100, 110);
        assert_eq!(spec.warmup, Warmup::UntilTrainErrorBelow80);
        assert_eq!(RunSpec::from_json(&spec.to_json()).unwrap(), spec);
        spec.milestones = Some(vec![3, 5]);
        spec.warmup = Warmup::Iters(400);
        (spec.schedule, spec.precision, spec.limit_train) =
            (ScheduleKind::Cosine, Precision::Bf16, Some(99));
        assert_eq!(RunSpec::from_json(&spec.to_json()).unwrap(), spec);
        let plain = RunSpec::paper(data::Dataset::Cifar10, 20);
        assert_eq!(plain.warmup, Warmup::None);
        assert_eq!((plain.epochs, plain.batch_size, plain.lr), (164, 128, 0.1));
        assert_eq!(RunSpec::from_json(&plain.to_json()).unwrap(), plain);
        assert_eq!(Warmup::iters(0), Warmup::None);
        assert_eq!(Warmup::iters(400), Warmup::Iters(400));
    }

    #[test]
    fn settings_no_run_can_use_name_the_flag() {
        let ok = RunSpec::paper(data::Dataset::Cifar10, 20);
        ok.check().unwrap();
        for (spec, said) in [
            (
                RunSpec {
                    epochs: 0,
                    ..ok.clone()
                },
                "--epochs must be at least 1",
            ),
            (
                RunSpec {
                    lr: f32::NAN,
                    ..ok.clone()
                },
                "--lr must be a positive number",
            ),
            (
                RunSpec {
                    momentum: 1.0,
                    ..ok.clone()
                },
                "--momentum must be in [0, 1)",
            ),
            (
                RunSpec {
                    limit_train: Some(0),
                    ..ok.clone()
                },
                "--limit-train",
            ),
        ] {
            assert!(
                spec.check().unwrap_err().to_string().contains(said),
                "{said}"
            );
        }
    }
}
