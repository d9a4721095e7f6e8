//! `train --device cuda` on a machine without nvrtc, from the prebuilt kernels file
//! (`cargo xtask cubins`, which `scripts/emulated-gpu.sh` runs first). On the stand-in driver
//! only (`standin_*`): nvrtc is hidden by taking NVIDIA's wheel off `LD_LIBRARY_PATH`, which
//! works where the wheel is the only nvrtc (CI); each test checks with `train doctor` that
//! nvrtc really is gone, and fails otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kernels::prebuilt::{Prebuilt, FILE_NAME, SOURCES_HASH_OFFSET};

use crate::common::*;

/// `LD_LIBRARY_PATH` without the directories that hold an nvrtc.
pub fn path_without_nvrtc() -> String {
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let keep: Vec<&str> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let has_nvrtc = std::fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc"))
            });
            !has_nvrtc
        })
        .collect();
    keep.join(":")
}

/// The prebuilt file where `train` finds it by itself (beside it, or one directory up), which
/// must be there and fresh: `cargo xtask cubins` writes it (scripts/emulated-gpu.sh runs it).
pub fn the_prebuilt_file() -> PathBuf {
    let exe = train_bin();
    let dir = exe.parent().expect("train's directory");
    let places = [dir.join(FILE_NAME), dir.parent().unwrap().join(FILE_NAME)];
    let found = places.iter().find(|p| p.exists()).unwrap_or_else(|| {
        panic!(
            "no {FILE_NAME} beside {} or above it: run `cargo xtask cubins` first \
             (scripts/emulated-gpu.sh does)",
            exe.display()
        )
    });
    if let Err(e) = Prebuilt::read(found) {
        panic!("{e} (scripts/emulated-gpu.sh rebuilds it)");
    }
    found.clone()
}

/// `bin ARGS` (a `train` executable) with `env` added; its output is echoed for failures.
pub fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("CIFAR_DIR")
        .envs(env.iter().copied());
    let out = cmd.output().expect("run train");
    eprintln!(
        "$ {} {}\n{}{}",
        bin.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `train doctor`'s standard output with `env` (and its exit status); never a panic.
pub fn doctor(env: &[(&str, &str)]) -> (String, Option<i32>) {
    doctor_of(&train_bin(), env)
}

fn doctor_of(bin: &Path, env: &[(&str, &str)]) -> (String, Option<i32>) {
    let out = run(bin, &["doctor"], env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// Checks, with `train doctor`, that `env` hides nvrtc from `bin` (with RESNET_KERNELS=nvrtc,
/// so that the doctor stops before its smoke test).
pub fn assert_nvrtc_hidden(bin: &Path, env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("RESNET_KERNELS", "nvrtc"));
    let (out, _) = doctor_of(bin, &env);
    assert!(
        out.contains("nvrtc: nvrtc not available"),
        "nvrtc is still found with LD_LIBRARY_PATH={:?} (installed system-wide?): this test \
         needs a machine where only LD_LIBRARY_PATH provides it\n{out}",
        path_without_nvrtc()
    );
}

/// These tests mean something only on the stand-in.
pub fn assert_standin() {
    assert!(
        std::env::var_os("RESNET_CUDA_STANDIN").is_some(),
        "run under scripts/emulated-gpu.sh (RESNET_CUDA_STANDIN names the stand-in driver)"
    );
}

/// A one-epoch run of `bin` on the GPU: one step of 16 training images and the evaluation of
/// 8 test images, ResNet-20 at width 4 (every kernel of training and evaluation). Returns the
/// process's output and the metrics rows without their timing column.
fn one_epoch(bin: &Path, data: &Path, csv: &Path, env: &[(&str, &str)]) -> (Output, Vec<String>) {
    let mut args: Vec<&str> = "--depth 20 --width 4 --batch-size 16 --seed 5 --epochs 1 \
                               --limit-train 16 --limit-test 8 --device cuda"
        .split_whitespace()
        .collect();
    args.extend(["--data-dir", p(data), "--metrics", p(csv)]);
    let out = run(bin, &args, env);
    let rows = std::fs::read_to_string(csv)
        .map(|t| rows_without_seconds(&t))
        .unwrap_or_default();
    (out, rows)
}

/// The prebuilt file with only the images whose arch `keep` accepts, written to `dest`.
fn thinned(keep: impl Fn(&str) -> bool, dest: &Path) -> String {
    let mut file = Prebuilt::read(&the_prebuilt_file()).unwrap();
    file.retain_archs(keep);
    std::fs::write(dest, file.to_bytes()).unwrap();
    p(dest).to_string()
}

/// nvrtc hidden, the prebuilt file beside train (found with no setting): training on the
/// stand-in's sm_90 runs from its sm_90 cubins, and gives the same rows, digit for digit, as
/// the run with nvrtc. A file with PTX only (compute_90) serves it too, through the driver's
/// compiler; one with only sm_80 cubins cannot (an sm_80 cubin does not run on sm_90), and
/// the refusal says so and how to build one that does.
#[test]
#[ignore = "needs the stand-in driver: scripts/emulated-gpu.sh"]
fn standin_without_nvrtc_train_runs_from_the_prebuilt_file() {
    assert_standin();
    the_prebuilt_file();
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 5, None);
    let hidden = path_without_nvrtc();
    let no_nvrtc = [("LD_LIBRARY_PATH", hidden.as_str())];
    let train = train_bin();
    assert_nvrtc_hidden(&train, &no_nvrtc);

    let (out, with_nvrtc) = one_epoch(&train, &data, &tmp.path().join("nvrtc.csv"), &[]);
    assert!(out.status.success());
    assert_eq!(
        with_nvrtc.len(),
        2,
        "a header and one epoch: {with_nvrtc:?}"
    );
    let (out, from_file) = one_epoch(&train, &data, &tmp.path().join("file.csv"), &no_nvrtc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(from_file, with_nvrtc, "the prebuilt cubins against nvrtc's");

    let ptx = thinned(|a| a.starts_with("compute_"), &tmp.path().join("ptx.bin"));
    let env = [no_nvrtc[0], ("RESNET_KERNELS_FILE", ptx.as_str())];
    let (out, from_ptx) = one_epoch(&train, &data, &tmp.path().join("ptx.csv"), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        from_ptx, with_nvrtc,
        "the prebuilt PTX against nvrtc's cubins"
    );
    let (report, code) = doctor(&env);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("compute_90 PTX, compiled by the driver, from the prebuilt file"),
        "{report}"
    );

    let sm80 = thinned(|a| a == "sm_80", &tmp.path().join("sm80.bin"));
    let env = [no_nvrtc[0], ("RESNET_KERNELS_FILE", sm80.as_str())];
    let (out, _) = one_epoch(&train, &data, &tmp.path().join("sm80.csv"), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "--device cuda is not usable: no GPU kernels: nvrtc is not here, and the prebuilt \
         kernels file",
        "holds no image that a sm_90 device can run (it has sm_80)",
        "cargo xtask cubins --arch sm_90",
        "pip install \"nvidia-cuda-nvrtc==13.0.*\"",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// nvrtc hidden and no prebuilt file anywhere train looks (a copy of train in a directory of
/// its own): `--device cuda` exits with status 2 and says what to install (nvrtc, or the file
/// and how to build it); `--device auto` trains on the CPU with a one-line notice. A stale
/// file (built from other kernel sources) is refused, never loaded, with the command that
/// rebuilds it.
#[test]
#[ignore = "needs the stand-in driver: scripts/emulated-gpu.sh"]
fn standin_without_nvrtc_or_the_file_the_error_says_what_to_install() {
    assert_standin();
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 5, None);
    let hidden = path_without_nvrtc();
    // train alone in tmp/bin/: nothing beside it or in tmp/.
    let lone = tmp.path().join("bin").join("train");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    if std::fs::hard_link(train_bin(), &lone).is_err() {
        std::fs::copy(train_bin(), &lone).unwrap();
    }
    let env = [("LD_LIBRARY_PATH", hidden.as_str())];
    assert_nvrtc_hidden(&lone, &env);
    let (out, _) = one_epoch(&lone, &data, &tmp.path().join("none.csv"), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let error = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    for want in [
        "--device cuda is not usable: no GPU kernels: neither nvrtc nor the prebuilt kernels \
         file is here",
        &format!(
            "looked for {}",
            tmp.path().join("bin").join(FILE_NAME).display()
        ),
        "pip install \"nvidia-cuda-nvrtc==13.0.*\"",
        "LD_LIBRARY_PATH",
        "`cargo xtask cubins`",
    ] {
        assert!(error.contains(want), "{want:?} not in {error}");
    }
    assert!(!err.contains("panicked"), "{err}");

    // --device auto: the CPU, with the reason in one line.
    let mut args: Vec<&str> = "--depth 20 --width 4 --batch-size 16 --epochs 1 --limit-train 16 \
                               --limit-test 8"
        .split_whitespace()
        .collect();
    args.extend(["--data-dir", p(&data)]);
    let out = run(&lone, &args, &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: using the CPU (no GPU kernels: neither nvrtc nor the prebuilt"),
        "{err}"
    );

    // A stale file: the sources hash of another build.
    let mut bytes = std::fs::read(the_prebuilt_file()).unwrap();
    bytes[SOURCES_HASH_OFFSET] ^= 0x5a;
    let stale = tmp.path().join(FILE_NAME);
    std::fs::write(&stale, bytes).unwrap();
    let (out, _) = one_epoch(&lone, &data, &tmp.path().join("stale.csv"), &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let named = format!(
        "nvrtc is not here, and the prebuilt kernels file {}",
        stale.display()
    );
    for want in [
        named.as_str(),
        "is stale: it was built from other kernel sources",
        "rebuild it with `cargo xtask cubins`",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
}
