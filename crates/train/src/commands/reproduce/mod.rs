//! `train reproduce`: the paper's CIFAR table in one command.
//!
//! Trains each depth (20, 32, 44, 56, 110 by default) for each seed with the paper's recipe
//! (`RunSpec::paper`, `train`'s defaults: 164 epochs, lr 0.1 ÷10 at 50% and 75%, the warm-up
//! at depth 110, option A, weight decay 1e-4, momentum 0.9, batch 128, crop + flip), one
//! checkpoint and metrics CSV per run under `--out/<dataset>/`. Every run saves after every
//! epoch (and within one when a signal stops it), so a second invocation after an interruption
//! resumes each unfinished run where it stopped and skips the finished ones. Whoever finishes a
//! run rewrites `table.md` (our last-epoch test error beside the paper's, parameters, wall
//! time, device) and `figure.png` (error against epoch for all depths, like the paper's
//! Figure 6) from the checkpoints on disk.
//!
//! One run is one process at a time: a run in training holds the lock beside its checkpoint
//! (`crate::engine::lock`), and any other process skips it. So the runs can be spread out:
//! `--run I` trains run I alone (`runs`: numbered from 1; `--list` shows them), `--jobs K`
//! keeps K of them going as child processes (`jobs`), `--slurm` writes (and `--submit`s) a
//! Slurm job array of them (`slurm`), `--report` rewrites the table and figure.

pub mod figure;
pub mod jobs;
pub mod runs;
pub mod slurm;
pub mod table;

use crate::commands::args::{DatasetArg, DeviceArg, PrecisionArg};
use crate::engine::epochs::Outputs;
use crate::engine::lock::{Claim, ReportLock, RunLock};
use crate::engine::request::RunRequest;
use crate::engine::run::{self, Run};
use crate::engine::snapshot::Resumed;
use crate::engine::spec::RunSpec;
use anyhow::{bail, ensure, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use model::ResNetConfig;
use runs::RunId;
use std::path::{Path, PathBuf};
use table::RunResult;

const EXAMPLES: &str = "\
Examples:
  train reproduce                                  every run, one after another, in this process
  train reproduce --list                           the runs (numbered), each done / partial / not started
  train reproduce --run 3                          run 3 alone (what a Slurm array task does)
  train reproduce --seeds 5 --jobs 4 --gpus 0,1    4 runs at once, 2 per GPU
  train reproduce --seeds 5 --slurm --submit -- --partition=gpu --gpus-per-task=1 --cpus-per-task=8 --time=12:00:00
                                                   a Slurm job array, one task per unfinished run,
                                                   then a job that writes the report
  train reproduce --report                         rewrite table.md and figure.png now

Give every command of one reproduction the same --dataset, --depths, --seeds, --epochs, --width,
--limit-* and --out: they define its runs and their numbers. A run is trained by one process at
a time (a lock beside its checkpoint); another process skips it. On SIGTERM or SIGINT a run
finishes its step, saves itself within the epoch and exits with status 75; the same command
continues it.";

#[derive(Args, Debug, Clone)]
#[command(
    group(ArgGroup::new("mode").multiple(false)),
    after_help = EXAMPLES
)]
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
    /// Print the runs (number, depth, seed, state: done / partial / not started, and who
    /// trains it now) and exit
    #[arg(long, group = "mode")]
    pub list: bool,
    /// Train run I alone (its number in --list), continuing its checkpoint; skipped when
    /// another process trains it
    #[arg(long, value_name = "I", group = "mode")]
    pub run: Option<usize>,
    /// Rewrite table.md and figure.png from the checkpoints on disk, print the table, exit
    #[arg(long, group = "mode")]
    pub report: bool,
    /// Keep K runs going at once, each a child process (`--run I`) with its log in
    /// <out>/<dataset>/logs/; on the CPU they share the cores; Ctrl-C stops them all, saved
    #[arg(long, value_name = "K", group = "mode")]
    pub jobs: Option<usize>,
    /// With --jobs: the GPUs to spread the runs over (CUDA_VISIBLE_DEVICES of each child),
    /// several per GPU when K is larger
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "G1,G2,...",
        requires = "jobs"
    )]
    pub gpus: Option<Vec<String>>,
    /// Write a Slurm job array (one task per unfinished run, requeued tasks continue their
    /// run) to <out>/<dataset>/slurm/ and print it; sbatch options go after `--`
    #[arg(long, group = "mode")]
    pub slurm: bool,
    /// With --slurm: submit it with sbatch, and a job after it that writes the report
    #[arg(long, requires = "slurm")]
    pub submit: bool,
    /// With --slurm, after `--`: options for sbatch, e.g. --partition=gpu --gpus-per-task=1
    /// --cpus-per-task=8 --time=12:00:00 (the report job gets the partition, account, qos)
    #[arg(last = true, value_name = "SBATCH OPTIONS", requires = "slurm")]
    pub sbatch: Vec<String>,
}

impl ReproduceArgs {
    fn folder(&self) -> PathBuf {
        self.out.join(data::Dataset::from(self.dataset).to_string())
    }

    /// Where one run keeps its checkpoint.
    fn checkpoint(&self, id: &RunId) -> PathBuf {
        self.folder().join(format!("{}.safetensors", id.stem()))
    }

    /// The runs, numbered from 1.
    fn runs(&self) -> Vec<RunId> {
        runs::all(&self.depths, self.seeds)
    }

    /// The runs not done yet.
    fn unfinished(&self) -> Vec<RunId> {
        self.runs()
            .into_iter()
            .filter(|id| !runs::finished(&self.checkpoint(id), id))
            .collect()
    }

    /// The flags that define this reproduction (its runs, their numbers and where they go),
    /// with absolute paths: what a child process or a Slurm task gets before `--run I`.
    pub fn run_flags(&self) -> Result<Vec<String>> {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .with_context(|| format!("cannot make {} absolute", p.display()))
                .map(|p| p.to_string_lossy().into_owned())
        };
        let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
            v().map_or(String::new(), |p| p.get_name().to_string())
        };
        let join = self
            .depths
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut v: Vec<String> = vec![
            "--dataset".into(),
            name(&|| self.dataset.to_possible_value()),
            "--depths".into(),
            join,
            "--seeds".into(),
            self.seeds.to_string(),
            "--epochs".into(),
            self.epochs.to_string(),
            "--out".into(),
            absolute(&self.out)?,
            "--data-dir".into(),
            absolute(&self.data_dir)?,
            "--device".into(),
            name(&|| self.device.to_possible_value()),
        ];
        let optional = [
            ("--width", self.width.map(|w| w.to_string())),
            ("--limit-train", self.limit_train.map(|n| n.to_string())),
            ("--limit-test", self.limit_test.map(|n| n.to_string())),
            (
                "--precision",
                self.precision
                    .and_then(|p| p.to_possible_value())
                    .map(|p| p.get_name().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                v.extend([flag.to_string(), value]);
            }
        }
        Ok(v)
    }

    /// One run of the table: the paper's recipe for this depth and seed, with the quick-try
    /// sizes, continuing its checkpoint when there is one. The same spec on every invocation,
    /// so a resumed run agrees with its checkpoint (and a changed `--epochs` is an error
    /// naming both values, as `train --resume` names a flag).
    fn run(&self, id: &RunId, lock: RunLock) -> Result<Run> {
        let (depth, seed) = (id.depth, id.seed);
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
        let checkpoint = self.checkpoint(id);
        let resumed = if checkpoint.exists() {
            Some(Resumed::load(&checkpoint)?)
        } else {
            None
        };
        let (config, spec) = RunRequest::exactly(&config, &spec).resolve(resumed.as_ref())?;
        let stem = id.stem();
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
            lock: Some(lock),
        })
    }
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

/// Rewrites `table.md` and `figure.png` from the checkpoints on disk, atomically, holding the
/// report's lock (so the last writer read every run finished before it).
fn write_results(args: &ReproduceArgs) -> Result<Vec<RunResult>> {
    let dir = args.folder();
    let table_path = dir.join("table.md");
    let _lock = ReportLock::wait(&table_path)?;
    let mut results = Vec::new();
    for id in args.runs() {
        if let Some(d) = runs::read(&args.checkpoint(&id), &id)? {
            results.push(d.result);
        }
    }
    let dataset = data::Dataset::from(args.dataset);
    let md = table::markdown(dataset, &args.depths, args.seeds, &results, &recipe(args));
    crate::engine::atomic::write_atomic(&table_path, md.as_bytes())
        .with_context(|| format!("cannot write {}", table_path.display()))?;
    let title = format!(
        "ResNets on {}: error against epoch (like the paper's Figure 6)",
        table::pretty(dataset)
    );
    figure::write(&dir.join("figure.png"), &args.depths, &results, &title)?;
    Ok(results)
}

/// Whether a run was trained (to its end) or skipped, being another process's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Trained,
    Skipped,
}

/// Trains one run to its end (continuing its checkpoint) unless another process holds it, then
/// rewrites the table. A run stopped by a signal ends in `interrupt::Stopped`.
fn train_one(args: &ReproduceArgs, id: &RunId, total: usize) -> Result<Outcome> {
    let checkpoint = args.checkpoint(id);
    let lock = match RunLock::try_claim(&checkpoint)? {
        Claim::Held(lock) => lock,
        Claim::Busy(who) => {
            println!(
                "== run {} of {total}: {}: skipped, {who} is training it ==",
                id.number,
                id.name()
            );
            return Ok(Outcome::Skipped);
        }
    };
    println!(
        "== run {} of {total}: {}{} ==",
        id.number,
        id.name(),
        if checkpoint.exists() {
            " (continuing from its checkpoint)"
        } else {
            ""
        }
    );
    args.run(id, lock)
        .and_then(|r| run::train(&r))
        .with_context(|| id.name())?;
    write_results(args)?;
    Ok(Outcome::Trained)
}

/// Prints the table and how many runs are done.
fn show_results(args: &ReproduceArgs, results: &[RunResult], skipped: usize) {
    let dir = args.folder();
    let done = results.iter().filter(|r| r.finished()).count();
    let skipped = match skipped {
        0 => String::new(),
        n => format!(" ({n} skipped: another process trains them)"),
    };
    println!(
        "{done} of {} runs done{skipped}; table: {}, figure: {}",
        args.runs().len(),
        dir.join("table.md").display(),
        dir.join("figure.png").display()
    );
    print!(
        "{}",
        std::fs::read_to_string(dir.join("table.md")).unwrap_or_default()
    );
}

/// `train reproduce --list`.
fn list(args: &ReproduceArgs) {
    println!("{:>4}  {:>5}  {:>4}  state", "run", "depth", "seed");
    for id in args.runs() {
        println!(
            "{:>4}  {:>5}  {:>4}  {}",
            id.number,
            id.depth,
            id.seed,
            runs::state(&args.checkpoint(&id), &id)
        );
    }
}

/// `train reproduce [OPTIONS]`.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    // From the start (a Slurm task may be signalled at any time): see `train::run`.
    crate::engine::interrupt::install()?;
    ensure!(!args.depths.is_empty(), "--depths needs at least one depth");
    ensure!(args.seeds > 0, "--seeds must be at least 1");
    for &d in &args.depths {
        ResNetConfig::from_depth(d, args.width, None, 10)?;
    }
    let dir = args.folder();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let all = args.runs();
    let total = all.len();
    if args.list {
        list(args);
        return Ok(());
    }
    if args.report {
        let results = write_results(args)?;
        show_results(args, &results, 0);
        return Ok(());
    }
    if args.slurm {
        return slurm::run(args);
    }
    if let Some(k) = args.jobs {
        return jobs::run(args, k);
    }
    if let Some(i) = args.run {
        let Some(id) = all.iter().find(|id| id.number == i) else {
            bail!("--run {i}: there are runs 1 to {total} (`--list` shows them)");
        };
        train_one(args, id, total)?;
        return Ok(());
    }
    let mut skipped = 0;
    for id in &all {
        if train_one(args, id, total)? == Outcome::Skipped {
            skipped += 1;
        }
    }
    let results = write_results(args)?;
    show_results(args, &results, skipped);
    Ok(())
}
