//! `train [OPTIONS]`: a training run from its flags. A fresh run takes the flags given and the
//! paper's recipe for the rest; `--resume` takes the checkpoint's settings, and a flag given
//! must agree with them (`crate::engine::request`). Then the engine trains it
//! (`crate::engine::run`).

use crate::commands::args::{DataArgs, ScheduleArg, ShortcutArg};
use crate::engine::epochs::Outputs;
use crate::engine::request::RunRequest;
use crate::engine::run::{self, Run};
use crate::engine::snapshot::Resumed;
use crate::engine::spec::Warmup;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// ResNet depth: 20, 32, 44, 56, 110, 1202 (the paper's CIFAR family) or 18, 34, 50, 101,
    /// 152 [default: 20]
    #[arg(long)]
    pub depth: Option<usize>,
    /// Width of the first stage [default: 16 for 6n+2 depths, 64 for 18..152]
    #[arg(long)]
    pub width: Option<usize>,
    /// Shortcut where the shape changes [default: pad for basic blocks, conv for bottlenecks]
    #[arg(long, value_enum)]
    pub shortcut: Option<ShortcutArg>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of epochs [default: 164]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// With --resume: train past the checkpoint's planned epochs up to --epochs, on the
    /// schedule it had (its lr drops stay where they were)
    #[arg(long, requires = "resume")]
    pub extend: bool,
    /// Mini-batch size [default: 128]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate [default: 0.1]
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Use Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay [default: 0.0001]
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Do not decay BatchNorm parameters and biases (the PyTorch peer's recipe)
    #[arg(long)]
    pub no_decay_bn_bias: bool,
    /// Learning-rate schedule [default: step]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Epochs at which the step schedule divides lr by 10 [default: at 50% and 75% of all iterations]
    #[arg(long, value_delimiter = ',', value_name = "E1,E2,...")]
    pub milestones: Option<Vec<usize>>,
    /// Train at lr/10 for the first N iterations (0: no warm-up). [default: none, except at
    /// depth 110 and 1202: the paper's rule, lr/10 until the training error is below 80%
    /// (about 400 iterations), checked every 10 iterations; the log says when it switches]
    #[arg(long, value_name = "N")]
    pub warmup_iters: Option<usize>,
    /// Turn off random crop + flip (the seed's first experiment, which overfits)
    #[arg(long)]
    pub no_augment: bool,
    /// Seed for weights, shuffling and augmentation [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N training images
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Hold out the last N training images for validation (the paper's 45k/5k split: 5000),
    /// reported each epoch beside test; the best epoch is then chosen on validation
    #[arg(long, value_name = "N")]
    pub val_split: Option<usize>,
    /// Write one CSV row per epoch (epoch, lr, train/test loss and accuracy, seconds)
    #[arg(long, value_name = "FILE.csv")]
    pub metrics: Option<PathBuf>,
    /// Draw accuracy and loss curves into a PNG, updated every epoch
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Save a checkpoint (safetensors) after every epoch, atomically
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Continue from a checkpoint written by --save, with its settings (model, recipe, data
    /// split, normalisation); flags that disagree with it are an error
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Print the model summary and parameter count, then exit
    #[arg(long)]
    pub dry_run: bool,
    /// On a GPU, capture the training step once as a CUDA graph and replay it (one launch per
    /// step instead of hundreds); the last, smaller batch of an epoch runs eagerly
    #[arg(long)]
    pub cuda_graph: bool,
}

impl TrainArgs {
    /// What the flags ask of the run (the rest: the paper's recipe, or the checkpoint's).
    pub fn request(&self) -> RunRequest {
        RunRequest {
            depth: self.depth,
            width: self.width,
            shortcut: self.shortcut.map(Into::into),
            dataset: self.data.dataset.map(Into::into),
            epochs: self.epochs,
            extend: self.extend,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            no_decay_bn_bias: self.no_decay_bn_bias,
            schedule: self.schedule.map(Into::into),
            milestones: self.milestones.clone(),
            warmup: self.warmup_iters.map(Warmup::iters),
            no_augment: self.no_augment,
            seed: self.seed,
            limit_train: self.limit_train,
            val_split: self.val_split,
            precision: self.data.precision.map(Into::into),
        }
    }
}

/// `train [OPTIONS]`.
pub fn run(args: &TrainArgs) -> Result<()> {
    // From the start: a SIGTERM while the data loads stops the run after its first step
    // (saved), instead of killing it.
    crate::engine::interrupt::install()?;
    let resumed = args.resume.as_deref().map(Resumed::load).transpose()?;
    let (config, spec) = args.request().resolve(resumed.as_ref())?;
    if args.dry_run {
        return run::dry_run(&config, &spec);
    }
    let run = Run {
        config,
        spec,
        resumed,
        data_dir: args.data.data_dir.clone(),
        limit_test: args.data.limit_test,
        device: args.data.device.into(),
        outputs: Outputs {
            save: args.save.clone(),
            metrics: args.metrics.clone(),
            plot: args.plot.clone(),
        },
        cuda_graph: args.cuda_graph,
        invocation: format!("{args:?}"),
        lock: None,
    };
    run::train(&run).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `train`'s flags alone, parsed as the command line parses them.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn args(line: &str) -> TrainArgs {
        let flags =
            Flags::try_parse_from(std::iter::once("train").chain(line.split_whitespace())).unwrap();
        flags.train
    }

    #[test]
    fn each_flag_asks_for_its_setting_and_only_given_flags_ask() {
        assert_eq!(args("").request(), RunRequest::default());
        let asked = args(
            "--depth 110 --width 8 --shortcut conv --dataset cifar100 --epochs 7 --batch-size 64 \
             --lr 0.05 --momentum 0.8 --nesterov --weight-decay 0.001 --no-decay-bn-bias \
             --schedule cosine --milestones 3,5 --warmup-iters 0 --no-augment --seed 4 \
             --limit-train 99 --val-split 10 --precision bf16",
        )
        .request();
        assert_eq!(
            asked,
            RunRequest {
                depth: Some(110),
                width: Some(8),
                shortcut: Some(model::ShortcutKind::Conv),
                dataset: Some(data::Dataset::Cifar100),
                epochs: Some(7),
                extend: false,
                batch_size: Some(64),
                lr: Some(0.05),
                momentum: Some(0.8),
                nesterov: true,
                weight_decay: Some(0.001),
                no_decay_bn_bias: true,
                schedule: Some(crate::engine::schedule::ScheduleKind::Cosine),
                milestones: Some(vec![3, 5]),
                warmup: Some(Warmup::None),
                no_augment: true,
                seed: Some(4),
                limit_train: Some(99),
                val_split: Some(10),
                precision: Some(tensor::Precision::Bf16),
            }
        );
        // At depth 110 a run without --warmup-iters gets the paper's rule; with N, N.
        let spec = args("--depth 110").request().fresh(110);
        assert_eq!(spec.warmup, Warmup::UntilTrainErrorBelow80);
        let spec = args("--depth 110 --warmup-iters 400").request().fresh(110);
        assert_eq!(spec.warmup, Warmup::Iters(400));
    }
}
