//! Command-line arguments of `cargo xtask`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project chores"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download, verify (size + MD5) and extract the official CIFAR binary tarballs.
    ///
    /// Produces <DIR>/cifar-10-batches-bin/ and/or <DIR>/cifar-100-binary/, the layout
    /// the trainer's --data-dir expects. Does nothing if the extracted files are already
    /// there with the right sizes. The verified tarball is kept in <DIR> so that a later
    /// run re-extracts without downloading again.
    ///
    /// Offline? Download the tarball on another machine
    /// (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz or
    /// .../cifar-100-binary.tar.gz) and pass --archive PATH.
    #[command(name = "fetch-cifar", verbatim_doc_comment)]
    FetchCifar(FetchArgs),

    /// Compile every CUDA kernel ahead of time into the prebuilt kernels file, which `train`
    /// loads on a machine without nvrtc.
    ///
    /// Cubins for sm_80, sm_86, sm_89 and sm_90, and PTX (compute_90) that the driver
    /// compiles for newer cards, from nvrtc (NVIDIA's wheel: pip install
    /// "nvidia-cuda-nvrtc==13.0.*"; found by itself when installed for python3, or set
    /// NVRTC_LIB_DIR). Goes through the kernel cache, so a rebuild is quick.
    ///
    /// `train` looks for resnet-kernels.bin beside its executable and in the directory above
    /// it (so target/release/train and target/debug/train both find the default output), or
    /// where RESNET_KERNELS_FILE says. The file records the kernel sources' hash: a file from
    /// other sources is refused as stale.
    #[command(verbatim_doc_comment)]
    Cubins(CubinsArgs),
}

#[derive(Debug, Args)]
pub struct CubinsArgs {
    /// Where to write the file [default: resnet-kernels.bin in cargo's target directory]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Architectures: sm_XY for a cubin, compute_XY for PTX
    #[arg(long, value_delimiter = ',', value_name = "ARCH,...", default_values_t = kernels::prebuilt::ARCHS.iter().map(|a| a.to_string()))]
    pub arch: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Which dataset to fetch.
    #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
    pub dataset: DatasetArg,

    /// Data directory to extract into (created if missing).
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub dir: PathBuf,

    /// Install from this official tarball already on disk instead of downloading it;
    /// it must match the official size and MD5. Needs --dataset cifar10 or cifar100.
    #[arg(long, value_name = "PATH")]
    pub archive: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    Cifar10,
    Cifar100,
    All,
}
