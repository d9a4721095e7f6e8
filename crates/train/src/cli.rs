//! The command line: `train [OPTIONS]` trains; `train eval --checkpoint FILE` evaluates;
//! `train predict` classifies images; `train reproduce` runs the paper's CIFAR table.
//! Every default is the paper's recipe (He et al. 2016, §4.2) and shows in `--help`. The flags
//! that define a run are `Option`s without a clap default, so that a resumed run can tell a
//! flag left out (the checkpoint's value) from one given (which must agree; `crate::spec`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "train",
    version,
    about = "Train ResNets on CIFAR-10/100 with a hand-written engine (CPU, CUDA)",
    long_about = "Train ResNets on CIFAR-10/100 with a hand-written engine.\n\n\
        Defaults reproduce the paper's CIFAR recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4, \
        batch 128, 164 epochs with lr/10 at 50% and 75% of training, 4-pixel pad + random crop + \
        horizontal flip, per-channel normalisation; at depth 110 and 1202 the paper's warm-up \
        (lr 0.01 until the training error is below 80%).\n\n\
        --resume takes every setting from the checkpoint: leave the flags out (a flag that \
        disagrees is an error; --extend --epochs N trains a run past its end).\n\n\
        Get the data first: cargo xtask fetch-cifar",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report test loss, accuracy and per-class accuracy of a checkpoint.
    Eval(EvalArgs),
    /// Time training steps on synthetic data (ms/step, images/s, peak memory), like the
    /// PyTorch peer's `speed`.
    Bench(BenchArgs),
    /// Classify PNG or JPEG images with a checkpoint: the top-5 classes with probabilities.
    Predict(crate::predict::PredictArgs),
    /// Reproduce the paper's CIFAR table: train depth 20, 32, 44, 56 and 110 with its recipe
    /// (resumable), then write a markdown table and a plot of test error against epoch.
    Reproduce(crate::reproduce::ReproduceArgs),
    /// Check whether this machine can train on its GPU: driver, GPUs, nvrtc, the prebuilt
    /// kernels file, the kernel cache, the kernels on GPU 0 and a step there against the CPU,
    /// each line `ok` or what to do. Exit status 0 when the GPU path is usable, else 1.
    ///
    /// Kernels come from nvrtc, else from the prebuilt file (`cargo xtask cubins`) beside
    /// train; RESNET_KERNELS=auto|nvrtc|prebuilt chooses, RESNET_KERNELS_FILE names the file.
    Doctor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    Cifar10,
    Cifar100,
}

impl From<DatasetArg> for data::Dataset {
    fn from(d: DatasetArg) -> Self {
        match d {
            DatasetArg::Cifar10 => data::Dataset::Cifar10,
            DatasetArg::Cifar100 => data::Dataset::Cifar100,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShortcutArg {
    /// Option A: subsample + zero-pad new channels (no parameters)
    Pad,
    /// Option B: 1x1 convolution + BatchNorm
    Conv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// lr/10 at each milestone (default: 50% and 75% of the iterations, the paper's 32k/48k of 64k)
    Step,
    /// Cosine decay from lr to 0 over all steps
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU (with a notice)
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Exact fp32 convolutions: the reference
    Fp32,
    /// Convolutions with bf16 operands on the tensor cores (sm_80+), fp32 accumulation; weights,
    /// BN, loss and SGD stay fp32. On the CPU: its exact twin (operands rounded to bf16)
    Bf16,
}

impl From<PrecisionArg> for tensor::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => tensor::Precision::Fp32,
            PrecisionArg::Bf16 => tensor::Precision::Bf16,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Which dataset to use [default: cifar10; for `eval`, the checkpoint's]
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetArg>,
    /// Directory holding cifar-10-batches-bin/ or cifar-100-binary/ (from `cargo xtask fetch-cifar`)
    #[arg(long, env = "CIFAR_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Use only the first N test images
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Where to run
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Arithmetic of the convolutions [default: fp32]
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
}

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

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// A checkpoint written by `train --save`
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Mini-batch size for evaluation
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// ResNet depth (as for training)
    #[arg(long, default_value_t = 20)]
    pub depth: usize,
    /// Width of the first stage [default: 16 for 6n+2 depths, 64 for 18..152]
    #[arg(long)]
    pub width: Option<usize>,
    /// Shortcut where the shape changes [default: pad for basic blocks, conv for bottlenecks]
    #[arg(long, value_enum)]
    pub shortcut: Option<ShortcutArg>,
    /// Number of classes
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Mini-batch size
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Timed steps
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Untimed steps first
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Where to run
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Arithmetic of the convolutions
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Capture the step as a CUDA graph after warm-up and time its replays (GPU only)
    #[arg(long)]
    pub cuda_graph: bool,
    /// Also print the result as one JSON line (the PyTorch peer's format)
    #[arg(long)]
    pub json: bool,
    /// After the timed steps, run as many again timing each op, and print where a step's
    /// time goes (CPU only)
    #[arg(long)]
    pub profile: bool,
}
