//! `cargo xtask <command>`: see `cargo xtask --help`.

use clap::Parser;

fn main() {
    let cli = xtask::cli::Cli::parse();
    if let Err(e) = xtask::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
