//! Issue 17, item 4: a run stopped by SIGTERM or SIGINT finishes its step, saves itself within
//! the epoch, says so and exits 75; resumed, it ends bit-identical on the CPU to a run that
//! never stopped, wherever it stopped.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use train::engine::checkpoint;

/// A recipe far from the defaults, with a validation split and 7 steps per epoch (220
/// training images at batch 32, the last step of 28).
fn recipe<'a>(data: &'a str, epochs: &'a str) -> Vec<&'a str> {
    small(&[
        "--data-dir",
        data,
        "--epochs",
        epochs,
        "--lr",
        "0.05",
        "--momentum",
        "0.8",
        "--milestones",
        "2",
        "--seed",
        "3",
        "--val-split",
        "20",
        "--nesterov",
    ])
}

/// The checkpoints hold the same tensors bit for bit, the same history (but for the
/// seconds), settings and normalisation, and neither is within an epoch.
fn assert_same_run(a: &Path, b: &Path) {
    let (ta, ma) = checkpoint::load(a).unwrap();
    let (tb, mb) = checkpoint::load(b).unwrap();
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        assert!(
            x == y,
            "tensor `{}` differs between {a:?} and {b:?}",
            x.name
        );
    }
    assert_eq!(
        rows_without_seconds(&ma["metrics_csv"]),
        rows_without_seconds(&mb["metrics_csv"])
    );
    for key in ["run", "normalization", "epoch", "format"] {
        assert_eq!(ma[key], mb[key], "{key}");
    }
    assert!(!ma.contains_key("partial_epoch") && !mb.contains_key("partial_epoch"));
}

#[test]
fn a_run_stopped_at_any_step_and_resumed_ends_bit_identical_to_one_that_never_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 48, 1, None);
    let straight = tmp.path().join("straight.st");
    let run = recipe(p(&data), "3");
    ok(&[&run[..], &["--save", p(&straight)]].concat());
    // Step 3 (within epoch 1), 7 (epoch 1's last: the epoch ends, is saved, then it stops) and
    // 12 (within epoch 2, after the lr drop).
    for (step, within) in [
        (3, Some("epoch 1, step 3 of 7")),
        (7, None),
        (12, Some("epoch 2, step 5 of 7")),
    ] {
        let ck = tmp.path().join(format!("stopped-at-{step}.st"));
        let hook = step.to_string();
        let out = train_with(
            &[&run[..], &["--save", p(&ck)]].concat(),
            &[("RESNET_TEST_SIGTERM_AFTER_STEP", &hook)],
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(75), "step {step}: {said}");
        let (_, meta) = checkpoint::load(&ck).unwrap();
        match within {
            Some(place) => {
                let (epoch, at) = place.split_once(", step ").unwrap();
                let at = at.split(' ').next().unwrap();
                assert!(
                    said.contains(&format!(
                        "stopped by SIGTERM after step {at} of 7 of {epoch}: the run is saved there in"
                    )),
                    "{said}"
                );
                assert_eq!(meta["format"], "resnet-cifar-checkpoint/3");
                let partial: serde_json::Value =
                    serde_json::from_str(&meta["partial_epoch"]).unwrap();
                assert_eq!(partial["steps_done"].as_u64().unwrap().to_string(), at);
                assert_eq!(
                    partial["next_sample"].as_u64(),
                    Some(32 * at.parse::<u64>().unwrap())
                );
                assert_eq!(partial["stopped_by"], "SIGTERM");
                assert!(
                    !said.contains(&format!("epoch   {}/3", &epoch[6..])),
                    "{said}"
                );
            }
            None => {
                assert!(
                    said.contains("stopped by SIGTERM after epoch 1 of 3")
                        && said.contains("epoch   1/3"),
                    "{said}"
                );
                assert!(!meta.contains_key("partial_epoch"));
            }
        }
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
        if let Some(place) = within {
            let (epoch, at) = place.split_once(", step ").unwrap();
            let next = at.split(' ').next().unwrap().parse::<usize>().unwrap() + 1;
            assert!(
                out.contains(&format!(
                    "resumed from {} within {epoch} of 3: at step {next} of 7",
                    ck.display()
                )),
                "{out}"
            );
        }
        assert_same_run(&ck, &straight);
    }
}

#[test]
fn a_checkpoint_of_format_2_still_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let (ck, straight) = (tmp.path().join("ck.st"), tmp.path().join("straight.st"));
    let run = small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "2",
        "--limit-train",
        "64",
    ]);
    ok(&[&run[..], &["--save", p(&straight)]].concat());
    let one = [&run[..], &["--save", p(&ck)]].concat();
    let out = train_with(&one, &[("RESNET_TEST_SIGTERM_AFTER_STEP", "2")]);
    assert_eq!(out.status.code(), Some(75));
    // What the previous release wrote after an epoch: format 2, no `partial_epoch`.
    let (tensors, mut meta) = checkpoint::load(&ck).unwrap();
    assert!(!meta.contains_key("partial_epoch"));
    meta.insert("format".into(), "resnet-cifar-checkpoint/2".into());
    checkpoint::save(&ck, &tensors, &meta).unwrap();
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
        out.contains("resumed from") && out.contains("after epoch 1 of 2"),
        "{out}"
    );
    assert_same_run(&ck, &straight);
}

#[test]
fn a_real_sigterm_stops_the_run_saved_and_the_resumed_run_ends_as_if_it_had_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 48, 1, None);
    let (ck, straight) = (tmp.path().join("ck.st"), tmp.path().join("straight.st"));
    let run = recipe(p(&data), "4");
    let mut child = Command::new(train_bin())
        .args([&run[..], &["--save", p(&ck)]].concat())
        .env_remove("CIFAR_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once epoch 1 is saved, the signal lands somewhere in epoch 2 (or its evaluation).
    let started = Instant::now();
    while !ck.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "train ended before its first checkpoint"
        );
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{said}");
    assert!(
        said.contains("stopped by SIGTERM after ") && said.contains("the run is saved there in"),
        "{said}"
    );
    assert!(!said.contains("epoch   4/4"), "it ran to the end: {said}");
    ok(&[
        "--resume",
        p(&ck),
        "--save",
        p(&ck),
        "--data-dir",
        p(&data),
        "--device",
        "cpu",
    ]);
    ok(&[&run[..], &["--save", p(&straight)]].concat());
    assert_same_run(&ck, &straight);
}

#[test]
fn a_run_without_a_checkpoint_says_nothing_was_saved_and_exits_as_the_signal_would() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let out = train_with(
        &small(&["--data-dir", p(&data), "--epochs", "2"]),
        &[("RESNET_TEST_SIGTERM_AFTER_STEP", "1")],
    );
    assert_eq!(out.status.code(), Some(143));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("stopped by SIGTERM after step 1 of 4 of epoch 1: nothing saved"),
        "{said}"
    );
}

#[test]
fn a_second_process_refuses_a_run_another_is_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 24, 1, None);
    let ck = tmp.path().join("ck.st");
    // This test holds the run's lock, as a running `train --save ck.st` would.
    let train::engine::lock::Claim::Held(_lock) =
        train::engine::lock::RunLock::try_claim(&ck).unwrap()
    else {
        panic!("free lock");
    };
    let err = fails(&small(&[
        "--data-dir",
        p(&data),
        "--epochs",
        "1",
        "--save",
        p(&ck),
    ]));
    assert!(
        err.contains("ck.st is being trained by pid ")
            && err.contains(&format!("pid {}", std::process::id()))
            && err.contains("ck.st.lock"),
        "{err}"
    );
    assert!(!ck.exists());
}
