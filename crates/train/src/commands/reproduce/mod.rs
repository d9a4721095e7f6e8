//! `train reproduce`: the paper's CIFAR table in one command.
//!
//! Trains each depth (20, 32, 44, 56, 110 by default) for each seed with the paper's recipe
//! (`RunSpec::paper`, `train`'s defaults: 164 epochs, lr 0.1 ÷10 at 50% and 75%, the warm-up
//! at depth 110, option A, weight decay 1e-4, momentum 0.9, batch 128, crop + flip), one
//! checkpoint and metrics CSV per run under `--out/<dataset>/`. Every run saves after every epoch, so a
//! second invocation after an interruption resumes each unfinished run where it stopped and
//! skips the finished ones. After every run it rewrites `table.md` (our last-epoch test error
//! beside the paper's, parameters, wall time, device) and `figure.png` (error against epoch
//! for all depths, like the paper's Figure 6) from the checkpoints on disk.

pub mod figure;
pub mod table;

use crate::commands::args::{DatasetArg, DeviceArg, PrecisionArg};
use crate::engine::checkpoint;
use crate::engine::epochs::Outputs;
use crate::engine::request::RunRequest;
use crate::engine::run::{self, Run};
use crate::engine::snapshot::Resumed;
use crate::engine::spec::RunSpec;
use anyhow::{ensure, Context, Result};
use clap::Args;
use model::{Footprint, ResNetConfig};
use std::path::{Path, PathBuf};
use table::RunResult;

#[derive(Args, Debug, Clone)]
pub struct ReproduceArgs {
    /// Which dataset
    #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
    pub dataset: DatasetArg,
    /// Depths to train (the paper's table: 20,32,44,56,110; 1202 too if you have a week)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "20,32,44,56,110",
        value_name = "D1,D2,..."
    )]
    pub depths: Vec<usize>,
    /// Runs per depth, with seeds 0..N-1: the table shows mean ± sd over them
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seeds: usize,
    /// Epochs per run (the paper's 64k iterations at batch 128 are 164 epochs)
    #[arg(long, default_value_t = 164)]
    pub epochs: usize,
    /// Where the checkpoints, metrics, table.md and figure.png go (in a folder per dataset)
    #[arg(long, default_value = "runs/paper", value_name = "DIR")]
    pub out: PathBuf,
    /// First-stage width; the paper's is 16 (smaller only for a quick try of the plumbing)
    #[arg(long)]
    pub width: Option<usize>,
    /// Directory holding cifar-10-batches-bin/ or cifar-100-binary/
    #[arg(long, env = "CIFAR_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Use only the first N training images (for a quick try)
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Use only the first N test images (for a quick try)
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Where to run
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Arithmetic of the convolutions [default: fp32]
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
}

impl ReproduceArgs {
    fn folder(&self) -> PathBuf {
        self.out.join(data::Dataset::from(self.dataset).to_string())
    }

    fn stem(depth: usize, seed: u64) -> String {
        format!("resnet{depth}-seed{seed}")
    }

    /// Where one run keeps its checkpoint.
    fn checkpoint(&self, depth: usize, seed: u64) -> PathBuf {
        self.folder()
            .join(format!("{}.safetensors", Self::stem(depth, seed)))
    }

    /// One run of the table: the paper's recipe for this depth and seed, with the quick-try
    /// sizes, continuing its checkpoint when there is one. The same spec on every invocation,
    /// so a resumed run agrees with its checkpoint (and a changed `--epochs` is an error
    /// naming both values, as `train --resume` names a flag).
    fn run(&self, depth: usize, seed: u64) -> Result<Run> {
        let dataset = data::Dataset::from(self.dataset);
        let config = ResNetConfig::from_depth(depth, self.width, None, dataset.num_classes())?;
        let spec = RunSpec {
            epochs: self.epochs,
            schedule_epochs: self.epochs,
            seed,
            limit_train: self.limit_train,
            precision: self.precision.unwrap_or(PrecisionArg::Fp32).into(),
            ..RunSpec::paper(dataset, depth)
        };
        let checkpoint = self.checkpoint(depth, seed);
        let resumed = if checkpoint.exists() {
            Some(Resumed::load(&checkpoint)?)
        } else {
            None
        };
        let (config, spec) = RunRequest::exactly(&config, &spec).resolve(resumed.as_ref())?;
        let stem = Self::stem(depth, seed);
        Ok(Run {
            config,
            spec,
            resumed,
            data_dir: self.data_dir.clone(),
            limit_test: self.limit_test,
            device: self.device.into(),
            outputs: Outputs {
                save: Some(checkpoint),
                metrics: Some(self.folder().join(format!("{stem}.csv"))),
                plot: None,
            },
            cuda_graph: false,
            invocation: format!("{self:?}"),
        })
    }
}

/// What the checkpoint of one run says, or `None` when it has not started.
fn read_run(path: &Path, depth: usize, seed: u64) -> Result<Option<RunResult>> {
    if !path.exists() {
        return Ok(None);
    }
    let (_, meta) = checkpoint::load(path)?;
    let config: ResNetConfig = crate::engine::state::config_from_metadata(&meta)
        .with_context(|| format!("reading {}", path.display()))?;
    let spec = RunSpec::from_json(meta.get("run").map_or("", String::as_str))
        .with_context(|| format!("reading {}", path.display()))?;
    let records =
        crate::engine::metrics::parse_csv(meta.get("metrics_csv").map_or("", String::as_str))
            .with_context(|| format!("metrics history in {}", path.display()))?;
    Ok(Some(RunResult {
        depth,
        seed,
        params: Footprint::of(&config).params as usize,
        epochs: spec.epochs,
        records,
        devices: meta
            .get("devices")
            .map(|d| d.split('|').map(str::to_string).collect())
            .unwrap_or_default(),
    }))
}

/// The recipe paragraph of the table.
fn recipe(args: &ReproduceArgs) -> String {
    let width = args.width.map_or(String::new(), |w| {
        format!(" **First-stage width {w} instead of the paper's 16.**")
    });
    let limits = match (args.limit_train, args.limit_test) {
        (None, None) => String::new(),
        (t, e) => format!(
            " **Quick try: {} training and {} test images.**",
            t.map_or("all".into(), |n| n.to_string()),
            e.map_or("all".into(), |n| n.to_string())
        ),
    };
    format!(
        "Recipe (He et al. 2016, §4.2): {} epochs of SGD, batch 128, lr 0.1 ÷10 at 50% and 75% of \
         the iterations (the paper's 32k and 48k of 64k), momentum 0.9, weight decay 1e-4, option-A \
         shortcuts, 4-pixel pad + random 32x32 crop + horizontal flip, per-channel normalisation; \
         at depth 110 lr 0.01 until the training error is below 80%. Trained on all training \
         images, no validation split.{width}{limits} Made by `train reproduce --dataset {} \
         --depths {} --seeds {} --epochs {}`.",
        args.epochs,
        data::Dataset::from(args.dataset),
        args.depths
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        args.seeds,
        args.epochs
    )
}

/// Rewrites `table.md` and `figure.png` from the checkpoints on disk.
fn write_results(args: &ReproduceArgs) -> Result<Vec<RunResult>> {
    let dir = args.folder();
    let mut runs = Vec::new();
    for &depth in &args.depths {
        for seed in 0..args.seeds as u64 {
            if let Some(r) = read_run(&args.checkpoint(depth, seed), depth, seed)? {
                runs.push(r);
            }
        }
    }
    let dataset = data::Dataset::from(args.dataset);
    let md = table::markdown(dataset, &args.depths, args.seeds, &runs, &recipe(args));
    let table_path = dir.join("table.md");
    crate::engine::atomic::write_atomic(&table_path, md.as_bytes())
        .with_context(|| format!("cannot write {}", table_path.display()))?;
    let title = format!(
        "ResNets on {}: error against epoch (like the paper's Figure 6)",
        table::pretty(dataset)
    );
    figure::write(&dir.join("figure.png"), &args.depths, &runs, &title)?;
    Ok(runs)
}

/// `train reproduce [OPTIONS]`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    ensure!(!args.depths.is_empty(), "--depths needs at least one depth");
    ensure!(args.seeds > 0, "--seeds must be at least 1");
    for &d in &args.depths {
        ResNetConfig::from_depth(d, args.width, None, 10)?;
    }
    let dir = args.folder();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let total = args.depths.len() * args.seeds;
    let mut n = 0;
    for &depth in &args.depths {
        for seed in 0..args.seeds as u64 {
            n += 1;
            println!(
                "== run {n} of {total}: ResNet-{depth}, seed {seed}{} ==",
                if args.checkpoint(depth, seed).exists() {
                    " (continuing from its checkpoint)"
                } else {
                    ""
                }
            );
            args.run(depth, seed)
                .and_then(|r| run::train(&r))
                .with_context(|| format!("ResNet-{depth}, seed {seed}"))?;
            write_results(args)?;
        }
    }
    let runs = write_results(args)?;
    let done = runs.iter().filter(|r| r.finished()).count();
    println!(
        "{done} of {total} runs done; table: {}, figure: {}",
        dir.join("table.md").display(),
        dir.join("figure.png").display()
    );
    print!(
        "{}",
        std::fs::read_to_string(dir.join("table.md")).unwrap_or_default()
    );
    Ok(())
}
