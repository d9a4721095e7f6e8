//! The `train` binary end to end on small generated CIFAR-format files: metrics, plot,
//! checkpoints, exact resume, CIFAR-100, `train eval`, and the errors a user can hit.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use train::engine::checkpoint;

// Running the `train` binary as a user would: the `commands` tests' helpers.
#[allow(dead_code, unused_imports)]
#[path = "commands/common.rs"]
mod common;
use common::{ok, p, train, train_bin};

/// Records whose pixels carry a faint class signal, so a model can learn something.
fn records(r: &mut ChaCha8Rng, n: usize, label_bytes: usize, classes: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let label = r.gen_range(0..classes);
        if label_bytes == 2 {
            out.push(label / 5); // coarse label
        }
        out.push(label);
        out.extend((0..3072).map(|i| {
            (r.gen_range(0..200u32) + if i % 7 == label as usize % 7 { 55 } else { 0 }) as u8
        }));
    }
    out
}

fn cifar10_dir(root: &Path) -> PathBuf {
    cifar10_dir_with(root, 24)
}

/// CIFAR-10 files with `per_file` training images in each of the five batches.
fn cifar10_dir_with(root: &Path, per_file: usize) -> PathBuf {
    let d = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(1);
    for i in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{i}.bin")),
            records(&mut r, per_file, 1, 10),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), records(&mut r, 40, 1, 10)).unwrap();
    root.to_path_buf()
}

fn cifar100_dir(root: &Path) -> PathBuf {
    let d = root.join("cifar-100-binary");
    std::fs::create_dir_all(&d).unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(2);
    std::fs::write(d.join("train.bin"), records(&mut r, 150, 2, 100)).unwrap();
    std::fs::write(d.join("test.bin"), records(&mut r, 60, 2, 100)).unwrap();
    let fine: String = (0..100).map(|i| format!("class_{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("super_{i}\n")).collect();
    std::fs::write(d.join("fine_label_names.txt"), fine).unwrap();
    std::fs::write(d.join("coarse_label_names.txt"), coarse).unwrap();
    root.to_path_buf()
}

/// A small, fast model and recipe: depth 20 at width 4.
const SMALL: [&str; 10] = [
    "--depth",
    "20",
    "--width",
    "4",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--seed",
    "3",
];

#[test]
fn two_epochs_then_resume_for_a_third_matches_a_straight_three_epoch_run_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir(&tmp.path().join("data"));
    let file = |n: &str| tmp.path().join(n);
    // Explicit milestones: the lr of every epoch is then the same whether the run is told
    // --epochs 2 or --epochs 3 (the defaults scale with --epochs), so extending the 2-epoch
    // run (--extend) continues exactly as the 3-epoch run goes on.
    let mut args = SMALL.to_vec();
    args.extend([
        "--data-dir",
        p(&data),
        "--limit-train",
        "120",
        "--milestones",
        "1,2",
    ]);

    // Two epochs: metrics with two rows, a PNG, a checkpoint.
    let (csv, png, ck) = (file("m.csv"), file("p.png"), file("ck.safetensors"));
    ok(&[
        &args[..],
        &[
            "--epochs",
            "2",
            "--metrics",
            p(&csv),
            "--plot",
            p(&png),
            "--save",
            p(&ck),
        ],
    ]
    .concat());
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 2, "{rows}");
    assert!(rows.starts_with("epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds"));
    assert!(std::fs::read(&png)
        .unwrap()
        .starts_with(b"\x89PNG\r\n\x1a\n"));

    // Resume for a third epoch, appending to the same metrics and checkpoint.
    let out = ok(&[
        &args[..],
        &[
            "--epochs",
            "3",
            "--extend",
            "--resume",
            p(&ck),
            "--save",
            p(&ck),
            "--metrics",
            p(&csv),
        ],
    ]
    .concat());
    assert!(
        out.contains("resumed") && out.contains("epoch   3/3") && !out.contains("epoch   1/3"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap().lines().count(),
        1 + 3
    );

    // The uninterrupted run.
    let straight = file("straight.safetensors");
    ok(&[&args[..], &["--epochs", "3", "--save", p(&straight)]].concat());

    // Bit-identical weights, BN buffers and momentum; identical metrics but for seconds.
    let (t_resumed, m_resumed) = checkpoint::load(&ck).unwrap();
    let (t_straight, m_straight) = checkpoint::load(&straight).unwrap();
    assert_eq!(t_resumed.len(), t_straight.len());
    assert!(
        t_resumed == t_straight,
        "the resumed run's tensors differ from the uninterrupted run's"
    );
    let strip = |csv: &str| {
        csv.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&m_resumed["metrics_csv"]),
        strip(&m_straight["metrics_csv"])
    );
    assert_eq!(m_resumed["epoch"], "3");
}

#[test]
fn two_epochs_write_two_metric_rows_a_png_and_a_checkpoint_that_eval_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir(&tmp.path().join("data"));
    let (csv, png, ck) = (
        tmp.path().join("out/m.csv"),
        tmp.path().join("out/p.png"),
        tmp.path().join("out/c.safetensors"),
    );
    let mut args = SMALL.to_vec();
    args.extend([
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--metrics",
        p(&csv),
        "--plot",
        p(&png),
        "--save",
        p(&ck),
    ]);
    ok(&args);
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (tensors, meta) = checkpoint::load(&ck).unwrap();
    assert_eq!(meta["model"], "resnet20-w4");
    assert!(tensors.iter().any(|t| t.name == "layers.8.b2.running_mean"));
    let out = ok(&[
        "eval",
        "--checkpoint",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("test loss") && out.contains("airplane") && out.contains("truck"),
        "{out}"
    );
}

#[test]
fn cifar100_trains_on_fine_labels_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar100_dir(&tmp.path().join("data"));
    let ck = tmp.path().join("c100.safetensors");
    let mut args = SMALL.to_vec();
    args.extend([
        "--dataset",
        "cifar100",
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&ck),
    ]);
    let out = ok(&args);
    assert!(out.contains("cifar100"), "{out}");
    let (tensors, _) = checkpoint::load(&ck).unwrap();
    let fc = tensors.iter().find(|t| t.name == "fc.weight").unwrap();
    assert_eq!(fc.shape, vec![100, 16]);
    let out = ok(&[
        "eval",
        "--checkpoint",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    assert!(out.contains("class_99"), "{out}");
}

#[test]
fn user_errors_are_clear_and_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir(&tmp.path().join("data"));
    let check = |args: &[&str], code: i32, needles: &[&str]| {
        let out = train(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected `{n}` in: {err}");
        }
    };
    let missing = tmp.path().join("nowhere");
    check(
        &[
            "--data-dir",
            p(&missing),
            "--device",
            "cpu",
            "--epochs",
            "1",
        ],
        1,
        &["data_batch_1.bin", "cargo xtask fetch-cifar", "--data-dir"],
    );
    check(
        &["--depth", "21", "--dry-run"],
        1,
        &["unsupported depth 21", "110", "152"],
    );
    check(
        &["--data-dir", p(&data), "--batch-size", "0"],
        1,
        &["--batch-size"],
    );
    check(&["--shortcut", "diagonal"], 2, &["diagonal"]);

    // A checkpoint of another model.
    let ck = tmp.path().join("c.safetensors");
    let mut args = SMALL.to_vec();
    args.extend([
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&ck),
        "--limit-train",
        "40",
    ]);
    ok(&args);
    check(
        &[
            "--depth",
            "32",
            "--data-dir",
            p(&data),
            "--resume",
            p(&ck),
            "--device",
            "cpu",
        ],
        1,
        &["resnet20-w4", "resnet32", "c.safetensors"],
    );
    check(
        &[
            "--data-dir",
            p(&data),
            "--resume",
            p(&tmp.path().join("none.st")),
            "--device",
            "cpu",
        ],
        1,
        &["none.st"],
    );

    // CUDA graphs need a GPU.
    let mut args = SMALL.to_vec();
    args.extend(["--data-dir", p(&data), "--epochs", "1", "--cuda-graph"]);
    check(&args, 1, &["--cuda-graph needs a GPU"]);

    // A diverging run stops with a clear message and leaves the last good checkpoint intact.
    let before = std::fs::read(&ck).unwrap();
    let mut args = SMALL.to_vec();
    args.extend([
        "--data-dir",
        p(&data),
        "--epochs",
        "3",
        "--save",
        p(&ck),
        "--lr",
        "1e30",
        "--limit-train",
        "40",
    ]);
    check(&args, 1, &["diverged", "c.safetensors"]);
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the last good checkpoint changed"
    );
}

#[test]
fn dry_run_prints_the_summary_and_parameter_count() {
    let out = ok(&["--depth", "34", "--width", "16", "--dry-run"]);
    assert!(out.trim_end().ends_with("parameters: 1323418"), "{out}");
    assert!(out.contains("layers.15"));
    let out = ok(&["--depth", "110", "--dry-run"]);
    assert!(out.trim_end().ends_with("parameters: 1727962"), "{out}");
}

#[test]
fn device_cuda_is_a_clean_exit_2_without_a_gpu_and_trains_with_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir(&tmp.path().join("data"));
    let mut args = SMALL.to_vec();
    args.retain(|a| *a != "--device" && *a != "cpu");
    args.extend(["--data-dir", p(&data), "--epochs", "1", "--device", "cuda"]);
    let out = train(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    match tensor::Device::cuda(0) {
        Err(_) => {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("--device cuda is not usable") && err.contains("--device cpu"),
                "{err}"
            );
        }
        Ok(_) => assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("cuda:0"),
            "{err}"
        ),
    }
}

/// The GPU for this test alone, until the guard drops. The GPU tests run in parallel threads
/// otherwise, and the out-of-memory one fills the whole card: the others would fail with an
/// out-of-memory of their own. (The lock's poison, from a failed test, is ignored.)
fn gpu_to_myself() -> std::sync::MutexGuard<'static, ()> {
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The CUDA engine end to end: two epochs on the GPU, a checkpoint, `eval` on the GPU and on
/// the CPU agreeing on the test accuracy.
#[test]
#[ignore = "needs a CUDA GPU"]
fn trains_and_evaluates_on_the_gpu() {
    let _gpu = gpu_to_myself();
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir(&tmp.path().join("data"));
    let ck = tmp.path().join("gpu.safetensors");
    let mut args = SMALL.to_vec();
    args.retain(|a| *a != "--device" && *a != "cpu");
    args.extend([
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--device",
        "cuda",
        "--save",
        p(&ck),
    ]);
    let out = ok(&args);
    assert!(
        out.contains("cuda:0") && out.contains("epoch   2/2"),
        "{out}"
    );
    let accuracy = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("test loss"))
            .unwrap()
            .to_string()
    };
    let gpu = ok(&[
        "eval",
        "--checkpoint",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cuda",
    ]);
    let cpu = ok(&[
        "eval",
        "--checkpoint",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    assert_eq!(
        accuracy(&gpu).split("accuracy").nth(1),
        accuracy(&cpu).split("accuracy").nth(1)
    );
}

/// More than the GPU holds: ResNet-110 at batch 16384 and width 32. A basic block keeps four
/// distinct activations for backward (conv1 out, its BN+ReLU out, conv2 out, the block's
/// output; clones share buffers), each 16384 × 32 × 32 × 32 floats = 2 GiB in the first
/// stage: 18 blocks there alone hold 144 GiB, and the whole forward pass ~250 GiB, more than
/// an H200's ~140 GiB. (At the default width 16 the forward pass keeps ~128 GiB, which could
/// fit on an H200.) The run must end with exit status 1 and one clear line naming the model
/// and the batch size, and no panic message.
#[test]
#[ignore = "needs a CUDA GPU"]
fn out_of_gpu_memory_is_a_clear_error_naming_the_model_and_batch_size() {
    let _gpu = gpu_to_myself();
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10_dir_with(&tmp.path().join("data"), 3300);
    // Twice: refused by the estimate made before anything is allocated, and (with that check
    // off) by the driver when the allocations run out. On the stand-in driver the device is
    // shrunk to 128 MiB so that this happens at the first batch, before the emulator would
    // spend hours on a batch of 16384 (a real GPU ignores the variable).
    for (check, wants) in [
        ("on", ["needs about", "of GPU memory"]),
        ("off", ["out of GPU memory", "batch size 16384"]),
    ] {
        let out = Command::new(train_bin())
            .args([
                "--data-dir",
                p(&data),
                "--device",
                "cuda",
                "--depth",
                "110",
                "--width",
                "32",
                "--batch-size",
                "16384",
                "--limit-train",
                "16384",
                "--epochs",
                "1",
            ])
            .env_remove("CIFAR_DIR")
            .env("RESNET_MEMORY_CHECK", check)
            .env("CUDA_STANDIN_MEMORY", "128MiB")
            .output()
            .expect("run train");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        for want in wants.iter().chain(&["resnet110", "16384", "--batch-size"]) {
            assert!(
                errors[0].contains(want),
                "check {check}: {want:?} not in {}",
                errors[0]
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn bench_reports_ms_per_step_in_the_peers_json_format() {
    let out = ok(&[
        "bench",
        "--depth",
        "20",
        "--width",
        "4",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--json",
    ]);
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["model"], "resnet20-w4-pad");
    assert_eq!(v["batch"], 8);
    assert!(
        v["ms_per_step"].as_f64().unwrap() > 0.0 && v["img_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(out.contains("ms/step"), "{out}");
}

#[test]
fn bench_profile_says_where_a_cpu_step_goes() {
    let out = ok(&[
        "bench",
        "--depth",
        "20",
        "--width",
        "4",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--profile",
    ]);
    // One line per op with its share; the three conv passes, BN and the rest all appear.
    for op in [
        "conv3x3 4->4 32x32/1 fwd",
        "bwd data",
        "bwd weight",
        "bn fwd",
        "sgd",
        "all ops",
    ] {
        assert!(out.contains(op), "no `{op}` in:\n{out}");
    }
}
