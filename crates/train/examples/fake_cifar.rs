//! `fake_cifar DIR [PER_FILE] [SEED]`: writes generated CIFAR-10 binaries under DIR (PER_FILE
//! images in each of the five training files, 40 test images), the same files the `train`
//! tests train on: for `ci/slurm/check.sh`, and anyone who wants to try the plumbing without
//! the real data set.

#[path = "../tests/commands/fixture.rs"]
mod fixture;

use std::path::Path;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: fake_cifar DIR [PER_FILE (default 16)] [SEED (default 1)]");
        std::process::exit(2);
    };
    let mut number = |what: &str, default: u64| -> u64 {
        args.next().map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("error: {what} must be a whole number, not {v:?}");
                std::process::exit(2)
            })
        })
    };
    let per_file = number("PER_FILE", 16) as usize;
    let seed = number("SEED", 1);
    let root = fixture::cifar10(Path::new(&dir), per_file, seed, None);
    println!(
        "{}: {} training and 40 test images",
        root.join("cifar-10-batches-bin").display(),
        5 * per_file
    );
}
