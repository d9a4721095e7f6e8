//! The runs of a reproduction, numbered from 1 in the order one process trains them (depth by
//! depth, seeds 0..N-1 within a depth): `--run I` and a Slurm array task take a number, and
//! `--list` shows each with its state on disk.

use crate::engine::checkpoint;
use crate::engine::lock::RunLock;
use crate::engine::partial::PartialEpoch;
use crate::engine::spec::RunSpec;
use crate::engine::{metrics, state};
use anyhow::{Context, Result};
use model::{Footprint, ResNetConfig};
use std::fmt::Write as _;
use std::path::Path;

use super::table::RunResult;

/// One run: its number (from 1), depth and seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunId {
    pub number: usize,
    pub depth: usize,
    pub seed: u64,
}

impl RunId {
    /// `resnet20-seed0`: the run's files are `<stem>.safetensors` and `<stem>.csv`.
    pub fn stem(&self) -> String {
        format!("resnet{}-seed{}", self.depth, self.seed)
    }

    /// `ResNet-20, seed 0`.
    pub fn name(&self) -> String {
        format!("ResNet-{}, seed {}", self.depth, self.seed)
    }
}

/// Every run of `depths` × `seeds`, numbered.
pub fn all(depths: &[usize], seeds: usize) -> Vec<RunId> {
    depths
        .iter()
        .flat_map(|&depth| (0..seeds as u64).map(move |seed| (depth, seed)))
        .enumerate()
        .map(|(i, (depth, seed))| RunId {
            number: i + 1,
            depth,
            seed,
        })
        .collect()
}

/// `1-3,5,7-8`: Slurm's `--array` list of the numbers (ascending).
pub fn ranges(numbers: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        match j - i {
            0 => write!(out, "{}", numbers[i]),
            _ => write!(out, "{}-{}", numbers[i], numbers[j]),
        }
        .expect("writing to a String");
        i = j + 1;
    }
    out
}

/// What a run's checkpoint on disk says: its result so far, and where it stopped within an
/// epoch if it did.
pub struct OnDisk {
    pub result: RunResult,
    pub partial: Option<PartialEpoch>,
}

/// The checkpoint of one run, or `None` when it has not started.
pub fn read(path: &Path, id: &RunId) -> Result<Option<OnDisk>> {
    if !path.exists() {
        return Ok(None);
    }
    let (_, meta) = checkpoint::load(path)?;
    let context = || format!("reading {}", path.display());
    let config: ResNetConfig = state::config_from_metadata(&meta).with_context(context)?;
    let spec =
        RunSpec::from_json(meta.get("run").map_or("", String::as_str)).with_context(context)?;
    let records = metrics::parse_csv(meta.get("metrics_csv").map_or("", String::as_str))
        .with_context(|| format!("metrics history in {}", path.display()))?;
    let partial = meta
        .get("partial_epoch")
        .map(|p| PartialEpoch::from_json(p))
        .transpose()
        .with_context(context)?;
    Ok(Some(OnDisk {
        result: RunResult {
            depth: id.depth,
            seed: id.seed,
            params: Footprint::of(&config).params as usize,
            epochs: spec.epochs,
            records,
            devices: meta
                .get("devices")
                .map(|d| d.split('|').map(str::to_string).collect())
                .unwrap_or_default(),
        },
        partial,
    }))
}

/// Whether the run has all its epochs (an unreadable checkpoint counts as not done).
pub fn finished(path: &Path, id: &RunId) -> bool {
    matches!(read(path, id), Ok(Some(d)) if d.result.finished())
}

/// The state column of `--list`: `done: 2 of 2 epochs`, `partial: 1 of 2 epochs, stopped in
/// epoch 2 at step 5 of 13`, `not started`, each with `; being trained by pid ...` while a
/// process holds the run's lock.
pub fn state(path: &Path, id: &RunId) -> String {
    let on_disk = match read(path, id) {
        Ok(None) => "not started".to_string(),
        Ok(Some(d)) => {
            let (done, of) = (d.result.records.len(), d.result.epochs);
            let within = d.partial.map_or(String::new(), |p| {
                format!(
                    ", stopped in epoch {} at step {} of {}",
                    p.epoch, p.steps_done, p.steps_per_epoch
                )
            });
            if d.result.finished() {
                format!("done: {done} of {of} epochs")
            } else {
                format!("partial: {done} of {of} epochs{within}")
            }
        }
        Err(e) => format!("unreadable: {e:#}"),
    };
    match RunLock::holder(path) {
        Ok(Some(who)) => format!("{on_disk}; being trained by {who}"),
        _ => on_disk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_numbered_depth_by_depth_from_one() {
        let runs = all(&[20, 32], 2);
        let seen: Vec<(usize, usize, u64)> =
            runs.iter().map(|r| (r.number, r.depth, r.seed)).collect();
        assert_eq!(seen, [(1, 20, 0), (2, 20, 1), (3, 32, 0), (4, 32, 1)]);
        assert_eq!(runs[3].stem(), "resnet32-seed1");
        assert_eq!(runs[3].name(), "ResNet-32, seed 1");
    }

    #[test]
    fn array_lists_are_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
