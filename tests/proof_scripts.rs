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
use std::os::unix::fs::PermissionsExt;
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

fn assert_about_2_s(what: &str, ran: &Ran, at_most: f64) {
    let s = ran.took.as_secs_f64();
    eprintln!("{what}: ended after {s:.2} s");
    assert!(
        (1.5..at_most).contains(&s),
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
    assert_about_2_s("a stage of 2 s around a 6 s run", &ran, 4.0);
    // The run's limit ends just before the stage's: the run cut short is named, and the one
    // after it listed as not started.
    assert!(
        ran.out
            .contains("\n--- TIMED OUT after 1 s: bash -c sleep 6; echo late\n"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("--- not started, no time left: echo a run after the limit"),
        "{}",
        ran.out
    );
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
    assert_about_2_s("a run deaf to SIGTERM in a stage of 2 s", &ran, 4.5);
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
    assert_about_2_s("a stage of 300 s in a call with 2 s left", &ran, 4.0);
    assert!(ran.out.contains("=== long (limit 2 s)"), "{}", ran.out);
    assert!(ran.out.contains("=== long: TIMED OUT"), "{}", ran.out);
    assert!(
        ran.out
            .contains("=== after: not started, no time left in this call"),
        "{}",
        ran.out
    );
}

/// A stand-in for `.gpu/` with fake executables that log each call (name, pid, arguments,
/// LD_LIBRARY_PATH) to `calls`, and a directory with a (fake) libnvrtc.so.13.
struct Bundle {
    dir: tempfile::TempDir,
}

const FAKE_TEST: &str = r#"#!/usr/bin/env bash
# A test executable NAME-<hash>: logs the call; fails when FAKE_FAIL names it or an argument;
# lists one ignored test when FAKE_IGNORED names it.
me=$(basename "$0"); me=${me%-*}
if [[ " $* " == *" --list "* ]]; then
  [[ " ${FAKE_IGNORED:-} " == *" $me "* ]] && echo "slow_gpu_thing: test"
  exit 0
fi
echo "$me $$ $* LD=${LD_LIBRARY_PATH:-}" >> "$FAKE_LOG"
for f in ${FAKE_FAIL:-}; do [[ "$me $*" == *"$f"* ]] && { echo "fake failure: $me $*"; exit 101; }; done
echo "test result: ok"
"#;

const FAKE_TRAIN: &str = r#"#!/usr/bin/env bash
# `train`: logs the call; as `doctor`, a report that fails when FAKE_FAIL names doctor; as
# `bench --json`, one result (hanging in the mode FAKE_HANG names).
echo "train $$ $* LD=${LD_LIBRARY_PATH:-}" >> "$FAKE_LOG"
if [[ $1 == doctor ]]; then
  [[ " ${FAKE_FAIL:-} " == *" doctor "* ]] && { echo "FAIL  driver: fake"; exit 1; }
  echo "ok    driver: fake"; exit 0
fi
mode=fp32; [[ " $* " == *" bf16 "* ]] && mode=bf16; [[ " $* " == *" --cuda-graph "* ]] && mode=$mode+graph
[[ -n ${FAKE_HANG:-} && $mode == "$FAKE_HANG" ]] && sleep 30
echo "resnet20 on cuda:0 (fake): 1.50 ms/step"
echo "{\"peer\": \"ours\", \"model\": \"resnet20\", \"mode\": \"$mode\", \"device\": \"cuda:0 (fake)\", \"ms_per_step\": 1.5, \"peak_mem_mb\": 100}"
"#;

const FAKE_REMOTE: &str = r#"#!/usr/bin/env bash
# remote.sh: `sh CMD` runs CMD (the data is "decoded"); `peer ARGS` logs the call.
case $1 in
  sh) shift; bash -c "$*" ;;
  peer) echo "peer $$ $* LD=${LD_LIBRARY_PATH:-}" >> "$FAKE_LOG" ;;
esac
"#;

const FAKE_PEER: &str = r#"
# torch_peer.py speed: logs the call, notes what the script had printed when it started,
# writes one result, then takes FAKE_PEER_SLEEP seconds.
import json, os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(f"peer {os.getpid()} LD={os.environ.get('LD_LIBRARY_PATH', '')}\n")
with open(os.environ["FAKE_SAW"], "w") as f:
    f.write(open(os.environ["FAKE_STDOUT"]).read())
with open(out, "a") as f:
    f.write(json.dumps({"peer": "pytorch", "model": "resnet20", "mode": "fp32", "ms_per_step": 3.0,
                        "peak_mem_mb": 200, "gpu": "Fake H200"}) + "\n")
time.sleep(float(os.environ.get("FAKE_PEER_SLEEP", "0")))
"#;

/// compute-sanitizer on gVisor (as seen on the device machines, 2026-11-04).
const SANITIZER_GVISOR: &str = r#"#!/usr/bin/env bash
echo "========= COMPUTE-SANITIZER"
echo "========= Error: Device not supported"
echo "thread 'relu_runs_on_the_gpu' panicked: CUDA_ERROR_UNKNOWN, error 999"
echo "========= ERROR SUMMARY: 1 error"
exit 9
"#;

/// A working compute-sanitizer that finds an out-of-bounds read in `train`'s kernels.
const SANITIZER_FINDS: &str = r#"#!/usr/bin/env bash
for a; do case $a in
  */gpu_smoke-*) echo "========= ERROR SUMMARY: 0 errors"; exit 0 ;;
  */train) echo "========= Invalid __global__ read of size 4 bytes"; echo "========= ERROR SUMMARY: 1 error"; exit 9 ;;
esac; done
"#;

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("gpu");
        for sub in ["tests", "bin", "data", "bench"] {
            fs::create_dir_all(g.join(sub)).unwrap();
        }
        fs::create_dir_all(dir.path().join("out")).unwrap();
        fs::create_dir_all(dir.path().join("nvrtc")).unwrap();
        fs::write(dir.path().join("nvrtc/libnvrtc.so.13"), "").unwrap();
        // As gpu-bundle.sh stages them: every test target NAME-<hash> (train twice: lib, bin).
        for exe in [
            "gpu_smoke-0a1b2c3d",
            "gpu-1a2b3c4d",
            "end_to_end-2a3b4c5d",
            "train-3a4b5c6d",
            "train-4a5b6c7d",
            "nvrtc-5a6b7c8d",
            "model-6a7b8c9d",
            "data-7a8b9c0d",
        ] {
            write_exe(&g.join("tests").join(exe), FAKE_TEST);
        }
        write_exe(&g.join("bin/train"), FAKE_TRAIN);
        write_exe(&g.join("remote.sh"), FAKE_REMOTE);
        fs::write(g.join("data/torch_peer.py"), FAKE_PEER).unwrap();
        write_exe(&dir.path().join("sanitizer-gvisor"), SANITIZER_GVISOR);
        write_exe(&dir.path().join("sanitizer-finds"), SANITIZER_FINDS);
        Bundle { dir }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    /// Runs a proof script on this bundle, the machine's own LD_LIBRARY_PATH being
    /// `/machine/lib`, and no compute-sanitizer unless `env` names one.
    fn run(&self, script: &str, args: &str, env: &[(&str, &str)]) -> Ran {
        let mut vars = vec![
            ("PROOF_BUNDLE", self.path("gpu")),
            ("NVRTC_LIB_DIR", self.path("nvrtc")),
            ("FAKE_LOG", self.path("calls")),
            ("LD_LIBRARY_PATH", "/machine/lib".to_string()),
            ("PROOF_SANITIZER", self.path("no-sanitizer-here")),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let cmd = format!("bash {}/{script} {args}", scripts().display());
        bash(&cmd, self.dir.path(), &vars)
    }

    /// Whether `train` ran for anything but `train doctor`.
    fn training_runs(&self) -> bool {
        self.calls()
            .iter()
            .any(|(n, _, rest)| n == "train" && !rest.starts_with("doctor "))
    }

    /// The logged calls: (name, pid, the rest of the line).
    fn calls(&self) -> Vec<(String, String, String)> {
        fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut w = l.splitn(3, ' ');
                let mut next = || w.next().unwrap_or("").to_string();
                (next(), next(), next())
            })
            .collect()
    }
}

#[test]
fn the_gpu_tests_run_smoke_first_then_parity_fast_paths_e2e_each_in_a_process_of_its_own() {
    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "tests", &[("FAKE_IGNORED", "data model")]);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    let calls = b.calls();
    let order: Vec<String> = calls
        .iter()
        .map(|(name, _, rest)| format!("{name} {}", rest.split(" LD=").next().unwrap()))
        .collect();
    let t = "--ignored --test-threads=1";
    assert_eq!(
        order,
        [
            "train doctor".to_string(),
            format!("gpu_smoke {t}"),
            format!("gpu {t} parity::"),
            format!("gpu {t} fast_paths::"),
            format!("end_to_end {t}"),
            format!("train {t}"),
            format!("train {t}"),
            // Then any other executable with an ignored test (FAKE_IGNORED), never nvrtc, and
            // never the stand-in-only tests.
            format!("data {t} --skip standin_"),
            format!("model {t} --skip standin_"),
        ],
        "{}",
        ran.out
    );
    let mut pids: Vec<&String> = calls.iter().map(|(_, pid, _)| pid).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), calls.len(), "one process each: {calls:?}");
    let ld = format!("LD={}:/machine/lib", b.path("nvrtc"));
    assert!(
        calls.iter().all(|(_, _, rest)| rest.ends_with(&ld)),
        "{calls:?}"
    );
    assert!(ran.out.contains("=== doctor: ok") && ran.out.contains("=== smoke: ok"));
    assert!(ran.out.contains("=== tests: ok"), "{}", ran.out);
}

#[test]
fn a_failing_smoke_test_skips_every_gpu_stage_of_the_call() {
    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "call1", &[("FAKE_FAIL", "gpu_smoke")]);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    let names: Vec<String> = b.calls().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        ["train", "gpu_smoke"],
        "doctor, then the smoke test: {}",
        ran.out
    );
    for stage in ["tests", "speed", "memcheck"] {
        assert!(
            ran.out
                .contains(&format!("=== {stage}: skipped (gpu_smoke failed)")),
            "{}",
            ran.out
        );
    }
    assert!(ran.out.contains("=== smoke: FAILED"), "{}", ran.out);
}

/// `train doctor` runs first in every call (and before a single stage), with our nvrtc on the library path, its report in
/// doctor.log; a failing doctor is counted (exit status 1) but the smoke test, not the doctor,
/// decides whether the GPU stages run.
#[test]
fn the_doctor_runs_first_in_every_call_and_its_failure_is_counted() {
    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "accuracy", &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    let calls = b.calls();
    let (name, _, rest) = &calls[0];
    assert_eq!(
        (name.as_str(), rest.as_str()),
        (
            "train",
            format!("doctor LD={}:/machine/lib", b.path("nvrtc")).as_str()
        ),
        "{calls:?}"
    );
    let log = fs::read_to_string(b.dir.path().join("out/doctor.log")).unwrap();
    assert!(log.contains("ok    driver: fake"), "{log}");
    assert!(ran.out.contains("=== doctor: ok"), "{}", ran.out);

    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "accuracy", &[("FAKE_FAIL", "doctor")]);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    assert!(
        ran.out.contains("=== doctor: FAILED (exit 1"),
        "{}",
        ran.out
    );
    assert!(ran.out.contains("=== smoke: ok"), "{}", ran.out);
    assert!(ran.out.contains("=== accuracy: ok"), "{}", ran.out);

    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "doctor", &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    let names: Vec<String> = b.calls().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["train"], "the doctor alone: {}", ran.out);
}

#[test]
fn a_failed_group_does_not_hide_the_others() {
    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "tests", &[("FAKE_FAIL", "parity::")]);
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    let calls: Vec<String> = b
        .calls()
        .into_iter()
        .map(|(n, _, rest)| format!("{n} {rest}"))
        .collect();
    for group in ["parity::", "fast_paths::", "end_to_end", "train"] {
        assert!(
            calls.iter().any(|c| c.contains(group)),
            "{group}: {calls:?}"
        );
    }
    assert!(ran
        .out
        .contains("--- FAILED (exit 101): tests/gpu-1a2b3c4d --ignored --test-threads=1 parity::"));
    assert!(ran.out.contains("=== tests: FAILED"), "{}", ran.out);
}

/// Whether this machine has `name` (on PATH, or in a CUDA toolkit's bin/).
fn installed(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let toolkits = fs::read_dir("/usr/local")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_else(|_| Vec::new());
    path.split(':')
        .map(PathBuf::from)
        .chain(toolkits)
        .any(|d| d.join(name).exists())
}

#[test]
fn without_compute_sanitizer_or_nvidia_smi_the_sanitizer_stage_is_unavailable_not_failed() {
    let b = Bundle::new();
    // The script's own search (PATH, then the toolkit's) where the machine has none, as CI's.
    let search = if installed("compute-sanitizer") {
        b.path("no-sanitizer-here")
    } else {
        String::new()
    };
    let ran = b.run("gpu-proof.sh", "memcheck", &[("PROOF_SANITIZER", &search)]);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    if !installed("nvidia-smi") {
        assert!(ran.out.contains("nvidia-smi: not found"), "{}", ran.out);
    }
    assert!(
        ran.out.contains(
            "=== memcheck: not counted as a failure (0 s): unavailable on this runtime: \
             compute-sanitizer is not installed here"
        ),
        "{}",
        ran.out
    );
    assert!(!b.training_runs());
}

#[test]
fn on_gvisor_the_sanitizer_stages_are_unavailable_in_the_sanitizers_words() {
    let b = Bundle::new();
    let sanitizer = b.path("sanitizer-gvisor");
    for tool in ["memcheck", "racecheck"] {
        let ran = b.run("gpu-proof.sh", tool, &[("PROOF_SANITIZER", &sanitizer)]);
        assert_eq!(ran.code, Some(0), "{}", ran.out);
        assert!(
            ran.out.contains(&format!(
                "=== {tool}: not counted as a failure (0 s): unavailable on this runtime: \
                 compute-sanitizer says \"Error: Device not supported\""
            )),
            "{}",
            ran.out
        );
        assert!(!ran.out.contains("FAILED"), "{}", ran.out);
    }
    // Probed on the smoke test only; no training run was started under it.
    assert!(!b.training_runs());
}

#[test]
fn a_sanitizer_finding_in_our_kernels_fails_the_stage() {
    let b = Bundle::new();
    let sanitizer = b.path("sanitizer-finds");
    let ran = b.run(
        "gpu-proof.sh",
        "memcheck",
        &[("PROOF_SANITIZER", &sanitizer)],
    );
    assert_eq!(ran.code, Some(1), "{}", ran.out);
    assert!(ran
        .out
        .contains("probe: compute-sanitizer memcheck works here"));
    assert!(ran.out.contains("Invalid __global__ read"), "{}", ran.out);
    assert!(ran.out.contains("=== memcheck: FAILED"), "{}", ran.out);
}

#[test]
fn our_binaries_get_the_toolkits_nvrtc_and_the_peer_the_machines_library_path() {
    let b = Bundle::new();
    let ran = b.run("gpu-proof.sh", "accuracy", &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.out);
    let calls = b.calls();
    let ours = format!("LD={}:/machine/lib", b.path("nvrtc"));
    let trains: Vec<_> = calls.iter().filter(|(n, _, _)| n == "train").collect();
    assert_eq!(trains.len(), 3, "doctor and two runs: {calls:?}");
    assert!(
        trains.iter().all(|(_, _, rest)| rest.ends_with(&ours)),
        "{calls:?}"
    );
    let peer: Vec<_> = calls.iter().filter(|(n, _, _)| n == "peer").collect();
    assert_eq!(peer.len(), 1, "{calls:?}");
    assert!(peer[0].2.ends_with(" LD=/machine/lib"), "{calls:?}");
}

#[test]
fn speed_prints_our_columns_first_and_gives_the_peer_only_the_time_left() {
    let b = Bundle::new();
    let stdout = b.path("stdout");
    let saw = b.path("peer-saw");
    let t0 = Instant::now();
    // Our bf16+graph run hangs (cut at its 1 s limit); the peer would take 30 s and gets what is
    // left of the 6 s.
    let ran = b.run(
        "speed-vs-peer.sh",
        &format!("--time-limit 6 --run-limit 1 --peer-time 2 resnet20 > {stdout}"),
        &[
            ("FAKE_HANG", "bf16+graph"),
            ("FAKE_PEER_SLEEP", "30"),
            ("FAKE_STDOUT", &stdout),
            ("FAKE_SAW", &saw),
        ],
    );
    let took = t0.elapsed().as_secs_f64();
    let out = fs::read_to_string(&stdout).unwrap();
    assert!(
        (5.5..8.5).contains(&took),
        "took {took:.2} s\n{out}{}",
        ran.out
    );
    assert_eq!(ran.code, Some(1), "{out}");
    // What the peer found printed when it started: our columns, the timeout named.
    let seen = fs::read_to_string(&saw).unwrap();
    assert!(
        seen.contains("| resnet20 | 1.50 | 1.50 | 1.50 | timeout | 100 |"),
        "{seen}"
    );
    assert!(!seen.contains("peer fp32"), "{seen}");
    // Then the whole table, with the result the peer finished before its time ran out.
    assert!(out.contains("--- peer: ran out of time"), "{out}");
    assert!(
        out.contains(
            "| resnet20 | 1.50 | 1.50 | 1.50 | timeout | 3.00 | - | 2.00x (fp32) | 100 / 200 |"
        ),
        "{out}"
    );
    let calls = b.calls();
    let ours = format!("LD={}:/machine/lib", b.path("nvrtc"));
    assert_eq!(calls.iter().filter(|(n, _, _)| n == "train").count(), 4);
    for (name, _, rest) in &calls {
        let want = if name == "peer" {
            "LD=/machine/lib"
        } else {
            &ours
        };
        assert!(rest.ends_with(want), "{name}: {rest}");
    }
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
