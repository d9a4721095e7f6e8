//! `train`: train a ResNet on CIFAR (default); `train eval`, `predict`, `reproduce`, `bench`,
//! `doctor`.
//! Errors print as `error: ...` with their causes and exit 1 (2 for an unusable --device); a
//! run stopped by SIGTERM/SIGINT exits 75 once it is saved (`train::engine::interrupt`);
//! running out of GPU memory is such an error (`train::engine::oom`), not a panic. The top of
//! the layers (see the library's docs): parse, dispatch to a command, report.

use clap::Parser;
use std::process::ExitCode;
use train::cli::{Cli, Command};
use train::commands;
use train::engine::device::ExitWith;
use train::engine::interrupt::Stopped;

fn main() -> ExitCode {
    // Out-of-memory panics are caught and reported as errors: keep the panic itself quiet.
    tensor::oom::install_quiet_panic_hook();
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Eval(args)) => commands::eval::run(args),
        Some(Command::Bench(args)) => commands::bench::run(args),
        Some(Command::Predict(args)) => commands::predict::run(args),
        Some(Command::Reproduce(args)) => commands::reproduce::run(args),
        Some(Command::Doctor) => commands::doctor::run(),
        None => commands::train::run(&cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by a signal: the run said where and what it saved; 75 = "run me again".
        Err(e) if e.downcast_ref::<Stopped>().is_some() => {
            ExitCode::from(e.downcast_ref::<Stopped>().map_or(1, |s| s.code))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.downcast_ref::<ExitWith>().map_or(1, |x| x.code))
        }
    }
}
