//! Project chores behind `cargo xtask`. A library so that tests can drive the same code
//! paths as the command line without the network.
//!
//! Modules: [`cli`] (arguments), [`cubins`] (the prebuilt kernels file), [`spec`] (what each official tarball is and holds),
//! [`verify`] (size + MD5 of archives, checks of extracted files), [`download`]
//! (HTTPS with progress), [`install`] (verify, extract into a temp dir, rename into place).

pub mod cli;
pub mod cubins;
pub mod download;
pub mod install;
pub mod spec;
pub mod verify;

use cli::{Cli, Command, DatasetArg, FetchArgs};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::FetchCifar(args) => fetch_cifar(&args),
        Command::Cubins(args) => cubins::cubins(&args),
    }
}

fn fetch_cifar(args: &FetchArgs) -> anyhow::Result<()> {
    let specs = match args.dataset {
        DatasetArg::Cifar10 => vec![spec::cifar10()],
        DatasetArg::Cifar100 => vec![spec::cifar100()],
        DatasetArg::All => {
            if args.archive.is_some() {
                anyhow::bail!(
                    "--archive installs one tarball: pass --dataset cifar10 or --dataset cifar100 with it"
                );
            }
            vec![spec::cifar10(), spec::cifar100()]
        }
    };
    for s in &specs {
        install::fetch(&args.dir, s, args.archive.as_deref())?;
    }
    Ok(())
}
