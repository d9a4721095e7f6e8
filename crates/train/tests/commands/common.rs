//! Shared by the `commands` tests: generated CIFAR files, and the `train` binary run as a
//! user would.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "fixture.rs"]
mod fixture;
pub use fixture::{cifar10, records};

/// CIFAR-100 files under `root` (120 training, 40 test images).
pub fn cifar100(root: &Path) -> PathBuf {
    let d = root.join("cifar-100-binary");
    std::fs::create_dir_all(&d).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(2);
    std::fs::write(d.join("train.bin"), records(&mut r, 120, 2, 100)).unwrap();
    std::fs::write(d.join("test.bin"), records(&mut r, 40, 2, 100)).unwrap();
    let fine: String = (0..100).map(|i| format!("class_{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("super_{i}\n")).collect();
    std::fs::write(d.join("fine_label_names.txt"), fine).unwrap();
    std::fs::write(d.join("coarse_label_names.txt"), coarse).unwrap();
    root.to_path_buf()
}

/// The `train` binary: `$TRAIN_BIN`, else cargo's build of it, else `../bin/train` beside this
/// test executable (the layout `gpu-bundle.sh` stages on a GPU machine).
pub fn train_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRAIN_BIN") {
        return PathBuf::from(p);
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_train"));
    if built.exists() {
        return built;
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("bin/train"))
        .filter(|p| p.exists())
        .unwrap_or(built)
}

/// `train ARGS` without `CIFAR_DIR` from the environment; its output is echoed for failures.
pub fn train_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(train_bin());
    cmd.args(args).env_remove("CIFAR_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run train");
    eprintln!(
        "$ train {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn train(args: &[&str]) -> Output {
    train_with(args, &[])
}

/// Runs `train ARGS`, which must succeed; returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = train(args);
    assert!(out.status.success(), "train {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `train ARGS`, which must fail with status 1 and no panic; returns its standard error.
pub fn fails(args: &[&str]) -> String {
    let out = train(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "train {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A small, fast model on the CPU: depth 20 at width 4, batch 32.
pub const SMALL: [&str; 8] = [
    "--depth",
    "20",
    "--width",
    "4",
    "--batch-size",
    "32",
    "--device",
    "cpu",
];

/// `SMALL` plus `extra`.
pub fn small<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = SMALL.to_vec();
    v.extend_from_slice(extra);
    v
}

/// The CSV rows of a metrics file without the timing column (which never repeats).
pub fn rows_without_seconds(csv: &str) -> Vec<String> {
    csv.lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}
