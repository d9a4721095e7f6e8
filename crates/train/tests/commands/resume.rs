//! A resumed run takes every setting from its checkpoint; a flag that disagrees is an error
//! naming both values; extending a finished run takes `--extend`.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use train::engine::checkpoint;

/// Starts `train ARGS` and kills it (SIGKILL, like a crash) once `file` exists.
fn start_and_kill_after(args: &[&str], file: &Path) {
    let mut child = Command::new(train_bin())
        .args(args)
        .env_remove("CIFAR_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start train");
    let started = Instant::now();
    while !file.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("train exited ({status}) before writing {}", file.display());
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_interrupted_run_resumed_with_no_flags_but_resume_ends_like_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let (ck, straight) = (tmp.path().join("ck.st"), tmp.path().join("straight.st"));
    // A recipe far from the defaults: had the resumed run taken any default, it would differ.
    let recipe = small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "4",
        "--lr",
        "0.05",
        "--momentum",
        "0.8",
        "--weight-decay",
        "0.0005",
        "--milestones",
        "2,3",
        "--seed",
        "7",
        "--limit-train",
        "100",
        "--val-split",
        "20",
        "--nesterov",
        "--no-decay-bn-bias",
    ]);
    start_and_kill_after(&[&recipe[..], &["--save", p(&ck)]].concat(), &ck);
    let out = ok(&[
        "--resume",
        p(&ck),
        "--save",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    assert!(
        out.contains("resumed from") && out.contains("of 4"),
        "{out}"
    );
    ok(&[&recipe[..], &["--save", p(&straight)]].concat());
    let (t_resumed, m_resumed) = checkpoint::load(&ck).unwrap();
    let (t_straight, m_straight) = checkpoint::load(&straight).unwrap();
    assert!(
        t_resumed == t_straight,
        "the resumed run's tensors differ from the straight run's"
    );
    assert_eq!(
        rows_without_seconds(&m_resumed["metrics_csv"]),
        rows_without_seconds(&m_straight["metrics_csv"])
    );
    assert_eq!(m_resumed["run"], m_straight["run"]);
    assert_eq!(m_resumed["normalization"], m_straight["normalization"]);
}

#[test]
fn flags_that_disagree_with_the_checkpoint_are_errors_naming_both_values() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let ck = tmp.path().join("ck.st");
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--limit-train",
        "64",
        "--save",
        p(&ck),
    ]));
    let before = std::fs::read(&ck).unwrap();
    let resume = |extra: &[&str]| -> String {
        fails(
            &[
                &[
                    "--resume",
                    p(&ck),
                    "--data-dir",
                    p(&data),
                    "--device",
                    "cpu",
                ],
                extra,
            ]
            .concat(),
        )
    };
    for (flags, needles) in [
        (
            &["--epochs", "3"][..],
            &["--epochs 3 (the checkpoint's: 2", "--extend"][..],
        ),
        (&["--lr", "0.05"], &["--lr 0.05 (the checkpoint's: 0.1)"]),
        (
            &["--weight-decay", "0.001"],
            &["--weight-decay 0.001 (the checkpoint's: 0.0001)"],
        ),
        (
            &["--limit-train", "32"],
            &["--limit-train 32 (the checkpoint's: 64)"],
        ),
        (&["--seed", "5"], &["--seed 5 (the checkpoint's: 0)"]),
        (
            &["--milestones", "1"],
            &["--milestones 1 (the checkpoint's: the default"],
        ),
        (
            &["--val-split", "8"],
            &["--val-split 8 (the checkpoint's: 0)"],
        ),
        (
            &["--warmup-iters", "10"],
            &["--warmup-iters 10 (the checkpoint's: none"],
        ),
        (
            &["--batch-size", "16"],
            &["--batch-size 16 (the checkpoint's: 32)"],
        ),
        (
            &["--no-augment"],
            &["--no-augment (the checkpoint's run: not given)"],
        ),
        (
            &["--precision", "bf16"],
            &["--precision bf16 (the checkpoint's: fp32)"],
        ),
        (
            &["--width", "8"],
            &["holds resnet20-w4", "--width 8 (the checkpoint's: 4)"],
        ),
        (
            &["--dataset", "cifar100"],
            &["--dataset cifar100 (the checkpoint's: cifar10)"],
        ),
    ] {
        let err = resume(flags);
        assert!(err.contains("ck.st"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{flags:?}: `{n}` missing in: {err}");
        }
    }
    // Several at once are all named.
    let err = resume(&["--lr", "0.2", "--seed", "1"]);
    assert!(
        err.contains("--lr 0.2") && err.contains("--seed 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "a refused resume touched the checkpoint"
    );

    // Other data than the run's: another normalisation.
    let other = cifar10(&tmp.path().join("other"), 24, 9, None);
    let err = fails(&[
        "--resume",
        p(&ck),
        "--data-dir",
        p(&other),
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains("normalisation") && err.contains("--data-dir"),
        "{err}"
    );

    // A checkpoint that predates recorded settings cannot be resumed by guessing them.
    let (tensors, mut meta) = checkpoint::load(&ck).unwrap();
    meta.remove("run");
    meta.insert("format".into(), "resnet-cifar-checkpoint/1".into());
    let old = tmp.path().join("old.st");
    checkpoint::save(&old, &tensors, &meta).unwrap();
    let err = fails(&[
        "--resume",
        p(&old),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    assert!(
        err.contains("old.st")
            && err.contains("resnet-cifar-checkpoint/1")
            && err.contains("train eval"),
        "{err}"
    );
}

#[test]
fn a_finished_run_is_extended_only_with_extend_on_its_own_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let (ck, csv) = (tmp.path().join("ck.st"), tmp.path().join("m.csv"));
    ok(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--limit-train",
        "64",
        "--save",
        p(&ck),
    ]));
    let base = [
        "--resume",
        p(&ck),
        "--save",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ];
    // Resumed as it was: nothing to do, and it says how to go on.
    let out = ok(&base);
    assert!(
        out.contains("nothing to do") && out.contains("--extend"),
        "{out}"
    );
    // --extend needs a longer --epochs, and a checkpoint.
    let err = fails(&[&base[..], &["--extend"]].concat());
    assert!(err.contains("--extend needs --epochs"), "{err}");
    let err = fails(&[&base[..], &["--extend", "--epochs", "1"]].concat());
    assert!(err.contains("only makes a run longer"), "{err}");
    let out = train(&small(&[
        "--data-dir",
        p(&data),
        "--extend",
        "--epochs",
        "3",
    ]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap: --extend requires --resume"
    );
    // Two more epochs: the lr drops stayed at 50% and 75% of the first 2 epochs, so both new
    // epochs run at the last lr, 0.001.
    let out = ok(&[
        &base[..],
        &["--extend", "--epochs", "4", "--metrics", p(&csv)],
    ]
    .concat());
    assert!(
        out.contains("epoch   3/4") && out.contains("epoch   4/4") && !out.contains("epoch   2/4"),
        "{out}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let lrs: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(lrs.len(), 4, "{text}");
    for lr in &lrs[2..] {
        assert!((lr.parse::<f64>().unwrap() - 0.001).abs() < 1e-6, "{text}");
    }
    let (_, meta) = checkpoint::load(&ck).unwrap();
    let run: serde_json::Value = serde_json::from_str(&meta["run"]).unwrap();
    assert_eq!(
        (run["epochs"].as_u64(), run["schedule_epochs"].as_u64()),
        (Some(4), Some(2))
    );
}
