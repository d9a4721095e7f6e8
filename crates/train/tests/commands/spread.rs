//! Issue 17, items 1-3: a reproduction's runs spread over processes. `--list` and `--run I`,
//! the lock that keeps a run to one process, `--report`, two reproductions on one folder at
//! once, `--jobs K` (and Ctrl-C stopping it), and the Slurm scripts of `--slurm` (generated,
//! run by bash with fake `sbatch`/`scontrol`; the real Slurm checks are `ci/slurm/check.sh`).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use train::engine::checkpoint;
use train::engine::lock::{Claim, RunLock};

/// `train reproduce` of depths 20 and 32, seeds 0 and 1 (runs 1-4), width 4, 2 epochs.
fn four<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "reproduce",
        "--depths",
        "20,32",
        "--seeds",
        "2",
        "--width",
        "4",
        "--epochs",
        "2",
        "--data-dir",
        data,
        "--out",
        out,
        "--device",
        "cpu",
    ];
    v.extend_from_slice(extra);
    v
}

/// Runs `train ARGS` with `env`, returning its output (echoed for failures).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    train_with(args, env)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The state column of run `n` in `--list`.
fn state(list: &str, n: usize) -> String {
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
        .unwrap_or_else(|| panic!("no run {n} in {list}"))
        .split_whitespace()
        .skip(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Epoch lines in `out` of the run whose section starts at `== run n of 4`.
fn epochs_trained(out: &str, n: usize) -> usize {
    out.split("== run ")
        .filter(|s| s.starts_with(&format!("{n} of 4")))
        .map(|s| s.matches("epoch   ").count())
        .sum()
}

#[test]
fn runs_are_listed_trained_alone_and_skipped_while_another_process_holds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 64, 1, None);
    let out_dir = tmp.path().join("paper");
    let (d, o) = (p(&data).to_string(), p(&out_dir).to_string());
    let list = ok(&four(&d, &o, &["--list"]));
    for n in 1..=4 {
        assert_eq!(state(&list, n), "not started", "{list}");
    }
    assert!(list.contains("   3     32     0  not started"), "{list}");
    // Run 2 alone; run 3 stopped within its first epoch (3 steps of 128, 64 in the last).
    let out = ok(&four(&d, &o, &["--run", "2"]));
    assert!(out.contains("== run 2 of 4: ResNet-20, seed 1 =="), "{out}");
    let stopped = run_env(
        &four(&d, &o, &["--run", "3"]),
        &[("RESNET_TEST_SIGTERM_AFTER_STEP", "1")],
    );
    assert_eq!(stopped.status.code(), Some(75), "{}", stdout(&stopped));
    let dir = out_dir.join("cifar10");
    // This test holds run 4's lock, as another process training it would.
    let Claim::Held(lock) = RunLock::try_claim(&dir.join("resnet32-seed1.safetensors")).unwrap()
    else {
        panic!("run 4 is free");
    };
    let list = ok(&four(&d, &o, &["--list"]));
    assert_eq!(state(&list, 1), "not started");
    assert_eq!(state(&list, 2), "done: 2 of 2 epochs");
    assert_eq!(
        state(&list, 3),
        "partial: 0 of 2 epochs, stopped in epoch 1 at step 1 of 3"
    );
    let me = format!("being trained by pid {}", std::process::id());
    assert!(
        state(&list, 4).starts_with(&format!("not started; {me}")),
        "{list}"
    );
    // A process that reaches run 4 skips it, and writes none of its files.
    let out = ok(&four(&d, &o, &["--run", "4"]));
    assert!(
        out.contains("== run 4 of 4: ResNet-32, seed 1: skipped, pid ")
            && out.contains("is training it"),
        "{out}"
    );
    let out = ok(&four(&d, &o, &[]));
    assert!(
        out.contains("run 4 of 4: ResNet-32, seed 1: skipped")
            && out.contains("3 of 4 runs done (1 skipped: another process trains them)")
            && out.contains("(continuing from its checkpoint)"),
        "{out}"
    );
    assert_eq!(epochs_trained(&out, 2), 0, "run 2 was done: {out}");
    for f in ["resnet32-seed1.safetensors", "resnet32-seed1.csv"] {
        assert!(
            !dir.join(f).exists(),
            "{f} written by a process without the lock"
        );
    }
    let table = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        table.contains("| 32 |") && table.contains("1 of 2 seeds done"),
        "{table}"
    );
    drop(lock);
    // `--report` rewrites the table at any time; with run 4 done it is complete.
    ok(&four(&d, &o, &["--run", "4"]));
    std::fs::remove_file(dir.join("table.md")).unwrap();
    let out = ok(&four(&d, &o, &["--report"]));
    assert!(out.contains("4 of 4 runs done"), "{out}");
    let table = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert_eq!(table.matches("(2 seeds: ").count(), 2, "{table}");
    let err = fails(&four(&d, &o, &["--run", "5"]));
    assert!(err.contains("--run 5: there are runs 1 to 4"), "{err}");
}

#[test]
fn two_reproductions_on_one_folder_at_once_train_each_run_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 64, 1, None);
    let out_dir = tmp.path().join("paper");
    let args = four(p(&data), p(&out_dir), &[]);
    let start = || {
        Command::new(train_bin())
            .args(&args)
            .env_remove("CIFAR_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (sa, sb) = (stdout(&a), stdout(&b));
    assert!(a.status.success() && b.status.success(), "{sa}\n---\n{sb}");
    for n in 1..=4 {
        let (ea, eb) = (epochs_trained(&sa, n), epochs_trained(&sb, n));
        assert!(
            (ea, eb) == (2, 0) || (ea, eb) == (0, 2),
            "run {n}: {ea} epochs in one process, {eb} in the other\n{sa}\n---\n{sb}"
        );
    }
    let dir = out_dir.join("cifar10");
    for stem in [
        "resnet20-seed0",
        "resnet20-seed1",
        "resnet32-seed0",
        "resnet32-seed1",
    ] {
        let csv = std::fs::read_to_string(dir.join(format!("{stem}.csv"))).unwrap();
        assert_eq!(csv.lines().count(), 3, "{stem}: {csv}");
    }
    // Whoever finished last wrote a complete table.
    let table = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert_eq!(table.matches("(2 seeds: ").count(), 2, "{table}");
}

/// Waits until `path` exists, while `child` runs.
fn wait_for(path: &Path, child: &mut std::process::Child) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before {}",
            path.display()
        );
        assert!(started.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn jobs_keep_k_runs_going_and_ctrl_c_stops_them_all_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 64, 1, None);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut parent = Command::new(train_bin())
        .args(four(p(&data), p(&a), &["--jobs", "2", "--gpus", "3,5"]))
        .env_remove("CIFAR_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ctrl-C (SIGINT to the parent) once a run has saved its first epoch.
    wait_for(&a.join("cifar10/resnet20-seed0.csv"), &mut parent);
    assert!(Command::new("kill")
        .args(["-INT", &parent.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = parent.wait_with_output().unwrap();
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(75), "{said}");
    // Spread over the GPUs given (CUDA_VISIBLE_DEVICES; these runs are on the CPU anyway).
    assert!(
        said.contains("2 at a time (on GPUs 3,5)")
            && said.contains("run 1 (ResNet-20, seed 0) started on GPU 3: ")
            && said.contains("run 2 (ResNet-20, seed 1) started on GPU 5: "),
        "{said}"
    );
    assert!(
        said.contains("SIGINT: stopping every run after its step")
            && said.contains("stopped: ")
            && said.contains("the same command continues"),
        "{said}"
    );
    // Its children have ended: no lock is held.
    let list = ok(&four(p(&data), p(&a), &["--list"]));
    assert!(!list.contains("being trained"), "{list}");
    // The same command finishes the reproduction, with what the others would have made.
    let again = ok(&four(p(&data), p(&a), &["--jobs", "2"]));
    assert!(
        again.contains("[run ") && again.contains("4 of 4 runs done"),
        "{again}"
    );
    for n in 1..=4 {
        let log = std::fs::read_to_string(a.join(format!("cifar10/logs/run-{n}.log"))).unwrap();
        assert!(log.contains(&format!("== run {n} of 4")), "{log}");
    }
    ok(&four(p(&data), p(&b), &[]));
    for stem in [
        "resnet20-seed0",
        "resnet20-seed1",
        "resnet32-seed0",
        "resnet32-seed1",
    ] {
        let f = |d: &Path| d.join(format!("cifar10/{stem}.safetensors"));
        let (ta, ma) = checkpoint::load(&f(&a)).unwrap();
        let (tb, mb) = checkpoint::load(&f(&b)).unwrap();
        assert!(
            ta == tb,
            "{stem}: the stopped and resumed run differs from the straight one"
        );
        assert_eq!(
            rows_without_seconds(&ma["metrics_csv"]),
            rows_without_seconds(&mb["metrics_csv"])
        );
    }
}

/// A fake command on a PATH of its own: records its arguments in `<name>.args` and prints
/// `answer`.
fn fake(dir: &Path, name: &str, answer: &str) {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho '{answer}'\n",
            dir.join(format!("{name}.args")).display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn slurm_writes_an_array_of_the_unfinished_runs_and_submits_it_with_a_report_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 16, 1, None);
    let out_dir = tmp.path().join("my paper");
    let (d, o) = (p(&data).to_string(), p(&out_dir).to_string());
    ok(&four(&d, &o, &["--run", "2"]));
    let options = [
        "--slurm",
        "--",
        "--partition=ci",
        "-t",
        "10",
        "--cpus-per-task=1",
    ];
    let printed = ok(&four(&d, &o, &options));
    let folder = out_dir.join("cifar10");
    let script = std::fs::read_to_string(folder.join("slurm/array.sbatch")).unwrap();
    let report = std::fs::read_to_string(folder.join("slurm/report.sbatch")).unwrap();
    assert!(
        printed.contains(&script) && printed.contains(&report),
        "{printed}"
    );
    assert!(
        printed.contains("not submitted (--submit does it)"),
        "{printed}"
    );
    for line in [
        "#SBATCH --array=1,3-4",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:TERM@120",
        "#SBATCH --open-mode=append",
        "#SBATCH --partition=ci",
        "#SBATCH -t 10",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --job-name=resnet-cifar10",
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "no `{line}` in\n{script}"
        );
    }
    let log = format!("#SBATCH --output='{}/logs/run-%a.log'", folder.display());
    assert!(script.contains(&log), "{script}");
    let command = format!(
        "{} reproduce --dataset cifar10 --depths 20,32 --seeds 2 --epochs 2 --out '{}' --data-dir {} --device cpu --width 4 --run \"$SLURM_ARRAY_TASK_ID\" &",
        train_bin().display(),
        out_dir.display(),
        data.display()
    );
    assert!(script.contains(&command), "no `{command}` in\n{script}");
    assert!(
        report.contains("#SBATCH --partition=ci") && !report.contains("cpus-per-task"),
        "{report}"
    );
    assert!(report.contains(" --report\n"), "{report}");
    for f in ["array.sbatch", "report.sbatch"] {
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(folder.join("slurm").join(f))
            .status()
            .unwrap();
        assert!(syntax.success(), "{f} is not valid bash");
    }
    let err = fails(&four(&d, &o, &["--slurm", "--", "--array=1-9"]));
    assert!(err.contains("--slurm sets --array itself"), "{err}");

    // --submit: the array, then the report after it (a fake sbatch answers 41 and 42).
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake(&bin, "sbatch", "41;cluster");
    let path = path_with(&bin);
    let out = run_env(
        &four(&d, &o, &["--slurm", "--submit", "--", "-p", "ci"]),
        &[("PATH", &path)],
    );
    assert!(out.status.success());
    let said = stdout(&out);
    assert!(
        said.contains("submitted job array 41 (runs 1,3-4;")
            && said.contains("and job 41, which writes the report"),
        "{said}"
    );
    let calls = std::fs::read_to_string(bin.join("sbatch.args")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0],
        format!("--parsable {}/slurm/array.sbatch", folder.display())
    );
    assert_eq!(
        calls[1],
        format!(
            "--parsable --dependency=afterany:41 {}/slurm/report.sbatch",
            folder.display()
        )
    );
}

#[test]
fn the_array_script_requeues_a_task_whose_run_stopped_and_ends_one_that_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cifar10(&tmp.path().join("data"), 64, 1, None);
    let out_dir = tmp.path().join("paper");
    let (d, o) = (p(&data).to_string(), p(&out_dir).to_string());
    ok(&four(&d, &o, &["--slurm"]));
    let script: PathBuf = out_dir.join("cifar10/slurm/array.sbatch");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    fake(&bin, "scontrol", "");
    let path = path_with(&bin);
    let task = |env: &[(&str, &str)]| -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .env("PATH", &path)
            .env("SLURM_ARRAY_JOB_ID", "7")
            .env("SLURM_ARRAY_TASK_ID", "3")
            .env_remove("CIFAR_DIR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        eprintln!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        out
    };
    // A signal (here the test hook's SIGTERM) stops run 3 within its first epoch: the task
    // asks Slurm to requeue it, and ends with the run's status.
    let out = task(&[
        ("RESNET_TEST_SIGTERM_AFTER_STEP", "2"),
        ("SLURM_RESTART_COUNT", "0"),
    ]);
    assert_eq!(out.status.code(), Some(75));
    let said = stdout(&out);
    assert!(
        said.contains("run 3 on ") && said.contains("attempt 1"),
        "{said}"
    );
    assert!(
        said.contains("== run 3 saved where it stopped: requeueing it to continue"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("scontrol.args")).unwrap(),
        "requeue 7_3\n"
    );
    // The requeued task continues the run to its end, and is not requeued again.
    let out = task(&[("SLURM_RESTART_COUNT", "1")]);
    assert!(out.status.success());
    let said = stdout(&out);
    assert!(
        said.contains("attempt 2") && said.contains("within epoch 1 of 2: at step 3 of 3"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("scontrol.args")).unwrap(),
        "requeue 7_3\n"
    );
    let list = ok(&four(&d, &o, &["--list"]));
    assert_eq!(state(&list, 3), "done: 2 of 2 epochs", "{list}");
}
