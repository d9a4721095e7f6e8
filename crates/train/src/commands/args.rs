//! The flags several commands share (`--dataset`, `--data-dir`, `--device`, `--precision`,
//! ...), as clap types, and what each means to the engine.

use crate::engine::device::DeviceChoice;
use crate::engine::schedule::ScheduleKind;
use clap::{Args, ValueEnum};
use model::ShortcutKind;
use std::path::PathBuf;

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

impl From<ShortcutArg> for ShortcutKind {
    fn from(s: ShortcutArg) -> Self {
        match s {
            ShortcutArg::Pad => ShortcutKind::Pad,
            ShortcutArg::Conv => ShortcutKind::Conv,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// lr/10 at each milestone (default: 50% and 75% of the iterations, the paper's 32k/48k of 64k)
    Step,
    /// Cosine decay from lr to 0 over all steps
    Cosine,
}

impl From<ScheduleArg> for ScheduleKind {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Step => ScheduleKind::Step,
            ScheduleArg::Cosine => ScheduleKind::Cosine,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The GPU when one is usable, else the CPU (with a notice)
    Auto,
    Cpu,
    Cuda,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
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
