//! What a command asks of a run ([`RunRequest`]), resolved into the model and [`RunSpec`] it
//! trains: a fresh run takes the paper's defaults for whatever is not asked; a resumed run
//! takes every setting from its checkpoint, and whatever is asked must agree with it, each
//! disagreement named with both values (a different `--epochs` would move the lr drops, a
//! different `--limit-train` the normalisation, ...). The one sanctioned change is `--extend`
//! with a larger `--epochs`: the run continues past its end on the schedule it had (the lr
//! drops stay where they were; past them lr stays at its last value).
//!
//! The settings carry the names of the `train` flags that set them, since that is how a user
//! reads a conflict; a command that builds its [`RunSpec`] whole (`reproduce`) asks for exactly
//! that spec ([`RunRequest::exactly`]), so a checkpoint of another run is refused the same way.

use crate::engine::schedule::ScheduleKind;
use crate::engine::snapshot::Resumed;
use crate::engine::spec::{RunSpec, Warmup};
use anyhow::{bail, ensure, Result};
use model::{ResNetConfig, ShortcutKind};
use std::path::Path;
use tensor::Precision;

/// What a command asks of a run: each setting it names. `None` (or `false`) leaves a setting
/// to the paper's recipe in a fresh run and to the checkpoint in a resumed one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunRequest {
    /// The model: depth (default 20), first-stage width, shortcut.
    pub depth: Option<usize>,
    pub width: Option<usize>,
    pub shortcut: Option<ShortcutKind>,
    pub dataset: Option<data::Dataset>,
    pub epochs: Option<usize>,
    /// A resumed run goes on past its planned epochs, up to `epochs`.
    pub extend: bool,
    pub batch_size: Option<usize>,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub weight_decay: Option<f32>,
    pub no_decay_bn_bias: bool,
    pub schedule: Option<ScheduleKind>,
    pub milestones: Option<Vec<usize>>,
    pub warmup: Option<Warmup>,
    pub no_augment: bool,
    pub seed: Option<u64>,
    pub limit_train: Option<usize>,
    pub val_split: Option<usize>,
    pub precision: Option<Precision>,
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

impl RunRequest {
    /// Asks for exactly `spec` on `config`'s model: every setting named.
    pub fn exactly(config: &ResNetConfig, spec: &RunSpec) -> RunRequest {
        RunRequest {
            depth: Some(config.depth),
            width: Some(config.widths[0]),
            shortcut: Some(config.shortcut),
            dataset: Some(spec.dataset),
            epochs: Some(spec.epochs),
            extend: false,
            batch_size: Some(spec.batch_size),
            lr: Some(spec.lr),
            momentum: Some(spec.momentum),
            nesterov: spec.nesterov,
            weight_decay: Some(spec.weight_decay),
            no_decay_bn_bias: spec.no_decay_bn_bias,
            schedule: Some(spec.schedule),
            milestones: spec.milestones.clone(),
            warmup: Some(spec.warmup),
            no_augment: !spec.augment,
            seed: Some(spec.seed),
            limit_train: spec.limit_train,
            val_split: Some(spec.val_split),
            precision: Some(spec.precision),
        }
    }

    /// The model a fresh run asks for.
    pub fn model(&self) -> Result<ResNetConfig> {
        let dataset = self.dataset.unwrap_or(data::Dataset::Cifar10);
        Ok(ResNetConfig::from_depth(
            self.depth.unwrap_or(20),
            self.width,
            self.shortcut,
            dataset.num_classes(),
        )?)
    }

    /// A fresh run: what is asked, the paper's recipe for the rest.
    pub fn fresh(&self, depth: usize) -> RunSpec {
        let paper = RunSpec::paper(self.dataset.unwrap_or(data::Dataset::Cifar10), depth);
        let epochs = self.epochs.unwrap_or(paper.epochs);
        RunSpec {
            dataset: paper.dataset,
            epochs,
            schedule_epochs: epochs,
            batch_size: self.batch_size.unwrap_or(paper.batch_size),
            lr: self.lr.unwrap_or(paper.lr),
            momentum: self.momentum.unwrap_or(paper.momentum),
            nesterov: self.nesterov,
            weight_decay: self.weight_decay.unwrap_or(paper.weight_decay),
            no_decay_bn_bias: self.no_decay_bn_bias,
            schedule: self.schedule.unwrap_or(paper.schedule),
            milestones: self.milestones.clone(),
            warmup: self.warmup.unwrap_or(paper.warmup),
            augment: !self.no_augment,
            seed: self.seed.unwrap_or(paper.seed),
            limit_train: self.limit_train,
            val_split: self.val_split.unwrap_or(paper.val_split),
            precision: self.precision.unwrap_or(paper.precision),
        }
    }

    /// A resumed run: `recorded` is the checkpoint's spec (from `file`); everything asked
    /// must agree with it, except a larger `epochs` with `extend`. Returns the spec to
    /// continue with.
    pub fn resume(&self, recorded: &RunSpec, file: &Path) -> Result<RunSpec> {
        let mut conflicts: Vec<String> = Vec::new();
        let mut check = |flag: &str, given: Option<String>, had: String| {
            if let Some(given) = given {
                if given != had {
                    conflicts.push(format!("{flag} {given} (the checkpoint's: {had})"));
                }
            }
        };
        let s = |x: &dyn ToString| x.to_string();
        let r = recorded;
        check("--dataset", self.dataset.map(|d| s(&d)), s(&r.dataset));
        check(
            "--batch-size",
            self.batch_size.map(|v| s(&v)),
            s(&r.batch_size),
        );
        check("--lr", self.lr.map(|v| s(&v)), s(&r.lr));
        check("--momentum", self.momentum.map(|v| s(&v)), s(&r.momentum));
        check(
            "--weight-decay",
            self.weight_decay.map(|v| s(&v)),
            s(&r.weight_decay),
        );
        check(
            "--schedule",
            self.schedule.map(|v| v.name().to_string()),
            r.schedule.name().to_string(),
        );
        check(
            "--milestones",
            self.milestones.as_ref().map(|m| list(&Some(m.clone()))),
            list(&r.milestones),
        );
        check(
            "--warmup-iters",
            self.warmup.map(Warmup::describe),
            r.warmup.describe(),
        );
        check("--seed", self.seed.map(|v| s(&v)), s(&r.seed));
        check(
            "--limit-train",
            self.limit_train.map(|v| s(&v)),
            r.limit_train.map_or("none (all images)".into(), |v| s(&v)),
        );
        check(
            "--val-split",
            self.val_split.map(|v| s(&v)),
            s(&r.val_split),
        );
        check(
            "--precision",
            self.precision.map(|p| p.to_string()),
            r.precision.to_string(),
        );
        let switch = |on: bool| if on { "given" } else { "not given" }.to_string();
        for (flag, given, had) in [
            ("--nesterov", self.nesterov, r.nesterov),
            (
                "--no-decay-bn-bias",
                self.no_decay_bn_bias,
                r.no_decay_bn_bias,
            ),
            ("--no-augment", self.no_augment, !r.augment),
        ] {
            if given && !had {
                conflicts.push(format!("{flag} (the checkpoint's run: {})", switch(had)));
            }
        }
        let mut spec = r.clone();
        match self.epochs {
            Some(e) if e == r.epochs => {}
            Some(e) if self.extend && e > r.epochs => {
                ensure!(
                    r.schedule == ScheduleKind::Step,
                    "--extend cannot continue a cosine schedule past its end (lr is 0 there); \
                     start a new run instead"
                );
                spec.epochs = e;
            }
            Some(e) if self.extend => bail!(
                "--extend --epochs {e}: the checkpoint {} already plans {} epochs; --extend \
                 only makes a run longer",
                file.display(),
                r.epochs
            ),
            Some(e) => conflicts.push(format!(
                "--epochs {e} (the checkpoint's: {}; its lr schedule is laid out over {} \
                 epochs: add --extend to train past its end on that schedule)",
                r.epochs, r.schedule_epochs
            )),
            None => ensure!(
                !self.extend,
                "--extend needs --epochs N, more than the checkpoint's {}",
                r.epochs
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

    /// The model asked of a resumed run must be the checkpoint's; left out, it is.
    pub fn ensure_model_agrees(&self, found: &ResNetConfig, file: &Path) -> Result<()> {
        let mut conflicts = Vec::new();
        if let Some(d) = self.depth.filter(|&d| d != found.depth) {
            conflicts.push(format!("--depth {d} (the checkpoint's: {})", found.depth));
        }
        if let Some(w) = self.width.filter(|&w| w != found.widths[0]) {
            conflicts.push(format!(
                "--width {w} (the checkpoint's: {})",
                found.widths[0]
            ));
        }
        if let Some(s) = self.shortcut.filter(|&s| s != found.shortcut) {
            conflicts.push(format!(
                "--shortcut {s} (the checkpoint's: {})",
                found.shortcut
            ));
        }
        if !conflicts.is_empty() {
            let asked = ResNetConfig::from_depth(
                self.depth.unwrap_or(found.depth),
                Some(self.width.unwrap_or(found.widths[0])),
                Some(self.shortcut.unwrap_or(found.shortcut)),
                found.num_classes,
            )
            .map_or_else(|_| "another model".to_string(), |c| c.name());
            bail!(
                "checkpoint {} holds {}, but the flags ask for {asked} ({}); leave the model \
                 flags out to resume it",
                file.display(),
                found.name(),
                conflicts.join("; ")
            );
        }
        Ok(())
    }

    /// The model and spec to train: fresh, or continuing `resumed` (its settings, checked
    /// against what is asked).
    pub fn resolve(&self, resumed: Option<&Resumed>) -> Result<(ResNetConfig, RunSpec)> {
        let Some(r) = resumed else {
            let config = self.model()?;
            let spec = self.fresh(config.depth);
            return Ok((config, spec));
        };
        let config = r.config()?;
        self.ensure_model_agrees(&config, &r.path)?;
        let recorded = r.spec()?;
        let spec = self.resume(&recorded, &r.path)?;
        Ok((config, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_run_is_the_paper_recipe_with_what_is_asked() {
        let asked = RunRequest {
            depth: Some(110),
            epochs: Some(7),
            lr: Some(0.05),
            no_augment: true,
            ..Default::default()
        };
        let config = asked.model().unwrap();
        let spec = asked.fresh(config.depth);
        let paper = RunSpec::paper(data::Dataset::Cifar10, 110);
        assert_eq!(
            spec,
            RunSpec {
                epochs: 7,
                schedule_epochs: 7,
                lr: 0.05,
                augment: false,
                ..paper.clone()
            }
        );
        assert_eq!(paper.warmup, Warmup::UntilTrainErrorBelow80);
        // Asking for exactly a spec gives that spec.
        let exact = RunRequest::exactly(&config, &spec);
        assert_eq!(exact.model().unwrap(), config);
        assert_eq!(exact.fresh(110), spec);
        assert_eq!(exact.resume(&spec, Path::new("f")).unwrap(), spec);
    }

    #[test]
    fn a_resumed_run_keeps_its_settings_and_names_each_conflict() {
        let f = Path::new("ck.safetensors");
        let spec = RunRequest {
            epochs: Some(10),
            limit_train: Some(500),
            ..Default::default()
        }
        .fresh(20);
        // Left out or equal: the checkpoint's.
        assert_eq!(RunRequest::default().resume(&spec, f).unwrap(), spec);
        let same = RunRequest {
            epochs: Some(10),
            lr: Some(0.1),
            ..Default::default()
        };
        assert_eq!(same.resume(&spec, f).unwrap(), spec);
        let other = RunRequest {
            epochs: Some(20),
            limit_train: Some(100),
            nesterov: true,
            ..Default::default()
        };
        let e = other.resume(&spec, f).unwrap_err().to_string();
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
        let extend = |epochs| RunRequest {
            epochs,
            extend: true,
            ..Default::default()
        };
        let longer = extend(Some(20)).resume(&spec, f).unwrap();
        assert_eq!((longer.epochs, longer.schedule_epochs), (20, 10));
        assert!(extend(Some(5)).resume(&spec, f).is_err());
        assert!(extend(None).resume(&spec, f).is_err());
        let cosine = RunRequest {
            epochs: Some(10),
            schedule: Some(ScheduleKind::Cosine),
            ..Default::default()
        }
        .fresh(20);
        assert!(extend(Some(20)).resume(&cosine, f).is_err());
    }
}
