//! `train bench`: the training step's speed on synthetic data (`crate::engine::bench`), after
//! the sizes are checked against the machine's memory and the device is opened.

use crate::commands::args::{DeviceArg, PrecisionArg, ShortcutArg};
use crate::engine::bench::{bench, BenchSpec};
use crate::engine::{device, memory, oom};
use anyhow::{ensure, Result};
use clap::Args;
use model::ResNetConfig;
use tensor::Device;

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

/// `train bench [OPTIONS]`.
pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(
        args.batch_size > 0 && args.steps > 0,
        "--batch-size and --steps must be at least 1"
    );
    let shortcut = args.shortcut.map(Into::into);
    let config = ResNetConfig::from_depth(args.depth, args.width, shortcut, args.classes)?;
    // A model the host cannot even build is refused before the device is opened.
    let building = memory::Work::BuildToTrain {
        batch: args.batch_size,
    };
    memory::ensure_fits(&config, building, &Device::Cpu, 0)?;
    let device = device::select(args.device.into())?;
    let work = memory::Work::Train {
        batch: args.batch_size,
    };
    // The four synthetic batches beside the model.
    let batches = 4.0 * args.batch_size as f64 * 3072.0 * 4.0;
    memory::ensure_fits(
        &config,
        work,
        &device,
        batches.min(usize::MAX as f64) as usize,
    )?;
    let job = oom::Job {
        what: "benchmarking",
        model: config.name(),
        params: model::Footprint::of(&config).params as usize,
        batch_size: args.batch_size,
    };
    let spec = BenchSpec {
        batch_size: args.batch_size,
        steps: args.steps,
        warmup: args.warmup,
        precision: args.precision.into(),
        cuda_graph: args.cuda_graph,
        json: args.json,
        profile: args.profile,
        classes: args.classes,
    };
    oom::guard(&job, &device, || bench(&spec, &config, &device))
}
