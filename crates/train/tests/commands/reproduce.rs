//! `train reproduce`: the paper's table in one command, checkpointed and resumable; here with
//! two depths, two epochs and a narrow width on generated data, to prove the plumbing.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `train reproduce` of depth 20 and 32 at width 4 for 2 epochs (unless `extra` says
/// another `--epochs`).
fn quick<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let epochs = if extra.contains(&"--epochs") {
        &[][..]
    } else {
        &["--epochs", "2"][..]
    };
    let mut v = vec![
        "reproduce",
        "--depths",
        "20,32",
        "--width",
        "4",
        "--data-dir",
        data,
        "--out",
        out,
        "--device",
        "cpu",
    ];
    v.extend_from_slice(epochs);
    v.extend_from_slice(extra);
    v
}

/// The parameter count `--dry-run` prints for depth `depth` at width 4, with thousands
/// separators as the table writes it.
fn params(depth: &str, classes: &str) -> String {
    let dataset = if classes == "100" {
        "cifar100"
    } else {
        "cifar10"
    };
    let out = ok(&[
        "--depth",
        depth,
        "--width",
        "4",
        "--dataset",
        dataset,
        "--dry-run",
    ]);
    let n: usize = out.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
    train::engine::oom::thousands(n)
}

fn row<'a>(table: &'a str, depth: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {depth} |")))
        .unwrap_or_else(|| panic!("no row for depth {depth}: {table}"));
    line.split('|').map(str::trim).collect()
}

#[test]
fn reproduce_writes_the_table_and_figure_with_mean_and_sd_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 16, 1, None);
    let out_dir = tmp.path().join("paper");
    let out = ok(&quick(p(&data), p(&out_dir), &["--seeds", "2"]));
    assert!(
        out.contains("run 4 of 4: ResNet-32, seed 1") && out.contains("4 of 4 runs done"),
        "{out}"
    );
    let dir = out_dir.join("cifar10");
    let table = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        table.contains(
            "| depth | params | our test error, last epoch (%) | paper's test error (%) |"
        ),
        "{table}"
    );
    for (depth, paper) in [("20", "8.75"), ("32", "7.51")] {
        let r = row(&table, depth);
        assert_eq!(
            (r[2], r[4], r[5]),
            (params(depth, "10").as_str(), paper, "2"),
            "{table}"
        );
        assert!(
            r[3].contains(" ± ") && r[3].contains("(2 seeds: "),
            "{table}"
        );
        assert!(r[7].starts_with("cpu"), "{table}");
        // The mean is the mean of the two runs' last test errors, as their CSVs say.
        let errors: Vec<f64> = (0..2)
            .map(|s| {
                let csv = std::fs::read_to_string(dir.join(format!("resnet{depth}-seed{s}.csv")))
                    .unwrap();
                let last: Vec<f64> = csv
                    .lines()
                    .last()
                    .unwrap()
                    .split(',')
                    .map(|x| x.parse().unwrap())
                    .collect();
                100.0 * (1.0 - last[5])
            })
            .collect();
        let mean = (errors[0] + errors[1]) / 2.0;
        assert!(
            r[3].starts_with(&format!("{mean:.2} ± ")),
            "{} vs {errors:?}",
            r[3]
        );
    }
    assert!(
        table.contains("First-stage width 4 instead of the paper's 16"),
        "{table}"
    );
    let png = std::fs::read(dir.join("figure.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // Everything done: a second call trains nothing and leaves the numbers as they were.
    let again = ok(&quick(p(&data), p(&out_dir), &["--seeds", "2"]));
    assert!(
        !again.contains("epoch   1/2") && again.contains("nothing to do"),
        "{again}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("table.md")).unwrap(),
        table
    );
    // The same command with another --epochs is refused, naming both values.
    let err = fails(&quick(
        p(&data),
        p(&out_dir),
        &["--seeds", "2", "--epochs", "3"],
    ));
    assert!(
        err.contains("--epochs 3 (the checkpoint's: 2") && err.contains("ResNet-20, seed 0"),
        "{err}"
    );
}

#[test]
fn an_interrupted_reproduction_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 16, 1, None);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // Killed (like a crash) as soon as the first checkpoint is on disk.
    let first = a.join("cifar10/resnet20-seed0.safetensors");
    let mut child = Command::new(train_bin())
        .args(quick(p(&data), p(&a), &[]))
        .env_remove("CIFAR_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !first.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "reproduce ended before its first checkpoint"
        );
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ok(&quick(p(&data), p(&a), &[]));
    assert!(
        out.contains("ResNet-20, seed 0 (continuing from its checkpoint)"),
        "{out}"
    );
    let resnet20 = out.split("== run 2 of 2").next().unwrap();
    assert!(
        resnet20.contains("resumed from") && !resnet20.contains("epoch   1/2  "),
        "it trained epoch 1 again: {out}"
    );
    // The same results as an uninterrupted reproduction.
    ok(&quick(p(&data), p(&b), &[]));
    for run in ["resnet20-seed0.csv", "resnet32-seed0.csv"] {
        let read =
            |d: &std::path::Path| std::fs::read_to_string(d.join("cifar10").join(run)).unwrap();
        assert_eq!(
            rows_without_seconds(&read(&a)),
            rows_without_seconds(&read(&b)),
            "{run}"
        );
    }
}

#[test]
fn reproduce_runs_on_cifar100_and_says_the_paper_has_no_figures_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar100(&tmp.path().join("data"));
    let out_dir = tmp.path().join("paper");
    ok(&[
        "reproduce",
        "--dataset",
        "cifar100",
        "--depths",
        "20",
        "--epochs",
        "1",
        "--width",
        "4",
        "--data-dir",
        p(&data),
        "--out",
        p(&out_dir),
        "--device",
        "cpu",
    ]);
    let table = std::fs::read_to_string(out_dir.join("cifar100/table.md")).unwrap();
    let r = row(&table, "20");
    assert_eq!((r[2], r[4]), (params("20", "100").as_str(), "—"), "{table}");
    assert!(r[3].parse::<f64>().is_ok(), "{table}");
    assert!(
        table.contains("CIFAR-100") && table.contains("no CIFAR-100 results"),
        "{table}"
    );
    assert!(out_dir.join("cifar100/figure.png").exists());
}
