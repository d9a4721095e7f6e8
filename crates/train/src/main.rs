//! `train`: train a ResNet on CIFAR (default); `train eval`, `predict`, `reproduce`, `bench`,
//! `doctor`.
//! Errors print as `error: ...` with their causes and exit 1 (2 for an unusable --device);
//! running out of GPU memory is such an error (`train::oom`), not a panic.

use clap::Parser;
use std::process::ExitCode;
use train::cli::{Cli, Command};
use train::device::ExitWith;

fn main() -> ExitCode {
    // Out-of-memory panics are caught and reported as errors: keep the panic itself quiet.
    tensor::oom::install_quiet_panic_hook();
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Eval(args)) => train::evaluate::run_eval(args),
        Some(Command::Bench(args)) => train::bench::run_bench(args),
        Some(Command::Predict(args)) => train::predict::run_predict(args),
        Some(Command::Reproduce(args)) => train::reproduce::run_reproduce(args),
        Some(Command::Doctor) => train::doctor::run_doctor(),
        None => train::run::train(&cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.downcast_ref::<ExitWith>().map_or(1, |x| x.code))
        }
    }
}
