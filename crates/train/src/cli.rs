//! The command line: `train [OPTIONS]` trains; `train eval --checkpoint FILE` evaluates;
//! `train predict` classifies images; `train reproduce` runs the paper's CIFAR table;
//! `train bench` times the step. The top of the layers (`crate` docs): each command's
//! arguments are defined beside it in `crate::commands`, and put together here.
//! Every default is the paper's recipe (He et al. 2016, §4.2) and shows in `--help`. The flags
//! that define a run are `Option`s without a clap default, so that a resumed run can tell a
//! flag left out (the checkpoint's value) from one given (which must agree;
//! `crate::engine::request`).

use crate::commands::bench::BenchArgs;
use crate::commands::eval::EvalArgs;
use crate::commands::predict::PredictArgs;
use crate::commands::reproduce::ReproduceArgs;
use crate::commands::train::TrainArgs;
use clap::{Parser, Subcommand};

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
    Predict(PredictArgs),
    /// Reproduce the paper's CIFAR table: train depth 20, 32, 44, 56 and 110 with its recipe
    /// (resumable), then write a markdown table and a plot of test error against epoch.
    Reproduce(ReproduceArgs),
    /// Check whether this machine can train on its GPU: driver, GPUs, nvrtc, the prebuilt
    /// kernels file, the kernel cache, the kernels on GPU 0 and a step there against the CPU,
    /// each line `ok` or what to do. Exit status 0 when the GPU path is usable, else 1.
    ///
    /// Kernels come from nvrtc, else from the prebuilt file (`cargo xtask cubins`) beside
    /// train; RESNET_KERNELS=auto|nvrtc|prebuilt chooses, RESNET_KERNELS_FILE names the file.
    Doctor,
}
