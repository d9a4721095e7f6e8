//! The GPU proof scripts (`scripts/gpu-proof.sh`, `scripts/speed-vs-peer.sh` and their
//! `scripts/proof-lib.sh`) checked on the CPU machine, where a mistake costs nothing: a GPU
//! machine is lent for minutes, and a limit that does not hold or a stage in the wrong order
//! wastes them. The GPU machine's parts are stood in for by small fakes in a temporary bundle
//! (test executables that log their calls, a `train`, a PyTorch peer, compute-sanitizers as
//! gVisor and Firecracker answer); the scripts themselves run unchanged.
//!
//! Times: a stage of 2 s around a run of 6 s must end in about 2 s. The bound asserted, 4 s,
//! leaves room for a loaded machine; a limit that does not hold takes the run's 6 s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

struct Ran {
    out: String,
    code: Option<i32>,
    took: Duration,
}

/// Runs a bash script (stdout and stderr together, like a device call's log), timing it until
/// its output closes: a process left holding the pipe counts, as it does for a stage's `tee`.
fn bash(script: &str, dir: &Path, env: &[(&str, String)]) -> Ran {
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(dir)
        .env("OUT", dir.join("out"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash runs");
    Ran {
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        code: out.status.code(),
        took: t0.elapsed(),
    }
}

/// `bash` with proof-lib.sh sourced.
fn with_lib(script: &str) -> (Ran, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("out")).unwrap();
    let lib = scripts().join("proof-lib.sh");
    let ran = bash(
        &format!("source {}\n{script}", lib.display()),
        dir.path(),
        &[],
    );
    (ran, dir)
}

fn assert_about_2_s(ran: &Ran, at_most: f64) {
    let s = ran.took.as_secs_f64();
    eprintln!("ended after {s:.2} s");
    assert!(
        (1.9..at_most).contains(&s),
        "took {s:.2} s (want about 2 s, under {at_most} s):\n{}",
        ran.out
    );
}

#[test]
fn a_stage_of_2_s_around_a_6_s_run_ends_in_about_2_s() {
    // The run is a shell whose child (the sleep) holds the stage's pipe: the case that kept the
    // old script's stage alive until the run ended by itself.
    let (ran, dir) = with_lib(
        r#"
six() { run 10 bash -c 'sleep 6; echo late'; run 10 echo 'a run after the limit'; }
export -f six
stage six 2 six
echo "stage exit $?"
"#,
    );
    assert_about_2_s(&ran, 4.0);
    assert!(ran.out.contains("=== six: TIMED OUT"), "{}", ran.out);
    assert!(ran.out.contains("stage exit 124"), "{}", ran.out);
    assert_eq!(ran.code, Some(0), "the script went on after the stage");
    assert!(!ran.out.lines().any(|l| l == "late"), "{}", ran.out);
    assert!(
        !ran.out.lines().any(|l| l == "a run after the limit"),
        "{}",
        ran.out
    );
    let log = fs::read_to_string(dir.path().join("out/six.log")).unwrap();
    assert!(
        log.contains("--- bash -c sleep 6; echo late (limit 2 s)"),
        "{log}"
    );
}

#[test]
fn a_run_that_ignores_sigterm_is_killed_after_the_grace() {
    let (ran, _dir) = with_lib(
        r#"
deaf() { run 10 bash -c 'trap "" TERM; sleep 6; echo late'; }
export -f deaf
PROOF_KILL_AFTER=1 stage deaf 2 deaf
"#,
    );
    // 2 s, plus at most the 1 s grace before SIGKILL.
    assert_about_2_s(&ran, 4.5);
    assert!(ran.out.contains("=== deaf: TIMED OUT"), "{}", ran.out);
    assert!(!ran.out.contains("\nlate"), "{}", ran.out);
}

#[test]
fn a_run_ends_with_everything_it_started_and_the_stage_goes_on() {
    let (ran, _dir) = with_lib(
        r#"
body() {
  # The child ignores SIGTERM, its parent does not: timeout ends when the parent does and
  # leaves the child; `within` kills what is left of the run's process group.
  run 1 bash -c 'trap "" TERM; sleep 30 & echo $! > "$OUT/child"; trap - TERM; wait'
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    # Gone, or a zombie about to be reaped.
    grep -qs '^[^ ]* ([^)]*) [^Z]' "/proc/$(cat "$OUT/child")/stat" || { echo "child gone"; break; }
    sleep 0.1
  done
  run 5 echo 'next run'
}
export -f body
stage body 20 body
"#,
    );
    assert!(
        ran.took < Duration::from_secs(4),
        "{:?}\n{}",
        ran.took,
        ran.out
    );
    assert!(ran.out.contains("--- TIMED OUT after 1 s"), "{}", ran.out);
    assert!(ran.out.contains("child gone"), "{}", ran.out);
    assert!(ran.out.contains("\nnext run\n"), "{}", ran.out);
    assert!(ran.out.contains("=== body: ok"), "{}", ran.out);
}

#[test]
fn a_stage_gets_only_what_is_left_of_the_call() {
    let (ran, _dir) = with_lib(
        r#"
proof_limit_shell 2
stage long 300 bash -c 'sleep 6; echo late'
stage after 300 echo never
"#,
    );
    assert_about_2_s(&ran, 4.0);
    assert!(ran.out.contains("=== long (limit 2 s)"), "{}", ran.out);
    assert!(ran.out.contains("=== long: TIMED OUT"), "{}", ran.out);
    assert!(
        ran.out
            .contains("=== after: not started, no time left in this call"),
        "{}",
        ran.out
    );
}

#[test]
fn every_script_parses() {
    for entry in fs::read_dir(scripts()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            let ok = Command::new("bash").arg("-n").arg(&path).status().unwrap();
            assert!(ok.success(), "bash -n {}", path.display());
        }
    }
}
