#!/usr/bin/env bash
# The GPU checks of the CUDA engine (#4) and the speed work (#5), planned for the lent GPU
# machine's budget: 15 minutes of device time per session (start-up included), at most 10
# minutes and 8 files back per call. All of it takes more than one session's budget, so the
# calls are ordered by what they prove; each ends within PROOF_CALL_LIMIT (default 570 s, under
# the device tool's 600), data decoding on a fresh machine included.
#
# Here (with Rust):   ../shared/tools/gpu-bundle.sh        # stages .gpu/ (tests, benches, bins, data, peer)
# There (device tool, carry [".gpu"]), in this order:
#   bash scripts/gpu-proof.sh call1   # doctor, smoke, GPU tests, speed table vs the peer, memcheck
#   bash scripts/gpu-proof.sh call2   # doctor, smoke, 30-epoch accuracy (ours bf16+graph, ours fp32, peer), kernel bench
#   bash scripts/gpu-proof.sh call3   # doctor, smoke, racecheck, the paper's 164-epoch ResNet-20 run
# Single stages: doctor | smoke | tests | speed | memcheck | racecheck | accuracy | bench | paper.
#   doctor    `train doctor`: the driver, GPUs, nvrtc, the prebuilt kernels file, the kernel cache,
#             the kernels on GPU 0 and a training step there against the CPU, each line ok or
#             what to do. First in every call; its failure is counted, and the smoke test still
#             decides whether the GPU stages run.                               -> doctor.log
#   smoke     gpu_smoke alone (a relu on the device). Every call starts with it, and when it
#             fails the GPU stages after it are skipped: nothing else can pass.  -> smoke.log
#   tests     the GPU tests (ignored elsewhere), each group a process of its own so that a sticky
#             fault (after which every CUDA call fails) cannot hide the other groups' results:
#             parity (every op vs the CPU engine), fast paths (bf16, fusions, CUDA graph), the e2e
#             training tests, the resident data set; then any other ignored test.  -> tests.log
#   speed     train bench in 4 modes vs torch_peer.py speed, one markdown table -> speed.log, speed.jsonl
#   memcheck  compute-sanitizer on a short training run, eager and with --cuda-graph
#   racecheck --precision bf16                                                  -> memcheck.log, racecheck.log
#             Probed first on gpu_smoke: where the runtime does not support the sanitizer
#             (gVisor: "Device not supported"), the stage says so in the sanitizer's words and
#             is not counted as a failure.
#   accuracy  depth 20, 30 epochs, the peer's recipe: ours bf16 + CUDA graph, ours fp32 eager,
#             then the peer                                                      -> accuracy.log, 2 CSVs
#   bench     the kernels' criterion bench (ceilings, then every kernel; % of peak) -> bench.log
#   paper     time to accuracy: the defaults (the paper's 164 epochs, 64k steps, evaluating every
#             epoch), bf16 + CUDA graph                                          -> paper.log, paper.csv
#
# Limits nest (scripts/proof-lib.sh): the call's, each stage's within what is left of the call,
# each run's within what is left of its stage; a run that ends is killed with everything it
# started. A failure never skips the runs after it (except a failed smoke test): one call must
# bring back everything that works. Exit status 1 if anything failed or timed out.
#
# Settings: OUT (where logs go; the device tool's $OUT), PROOF_CALL_LIMIT (seconds),
# PROOF_BUNDLE (default .gpu), NVRTC_LIB_DIR (the directory of libnvrtc.so.13, if the toolkit's
# usual places lack it), PROOF_SANITIZER (the compute-sanitizer to use instead of the PATH's or
# the toolkit's; a path that does not exist means none).

# The stage functions below run through `stage` (bash -c), which shellcheck cannot follow.
# shellcheck disable=SC2317
set -uo pipefail
case ${1:-call1} in
  call1 | call2 | call3 | doctor | smoke | tests | speed | memcheck | racecheck | accuracy | bench | paper) ;;
  # Before anything else: a typo must not cost a fresh machine's ~40 s of data decoding.
  *) echo "unknown stage $1 (call1|call2|call3|doctor|smoke|tests|speed|memcheck|racecheck|accuracy|bench|paper)" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/proof-lib.sh
source "$root/scripts/proof-lib.sh"
g=${PROOF_BUNDLE:-$root/.gpu}
[ -x "$g/remote.sh" ] || { echo "no .gpu/ bundle: run ../shared/tools/gpu-bundle.sh here first and carry .gpu" >&2; exit 2; }
export OUT=${OUT:-/tmp/gpu-proof}
mkdir -p "$OUT"
export root g PROOF_BUNDLE=$g TRAIN_BIN="$g/bin/train"
proof_limit_shell "${PROOF_CALL_LIMIT:-570}"
status=0

# What this machine is, and the nvrtc our binaries will load (LD_LIBRARY_PATH for ours only:
# the PyTorch peer keeps the machine's, see proof-lib.sh).
preflight() {
  proof_our_ld_library_path
  local d
  d=$(proof_nvrtc_dir)
  echo "nvrtc for our binaries: ${d:-$( (ldconfig -p 2> /dev/null | grep -m1 'libnvrtc\.so\.13 ') || echo 'not found: our GPU runs will fail to compile kernels (set NVRTC_LIB_DIR)')}"
  if command -v nvcc > /dev/null; then nvcc --version | tail -1; fi
  if command -v nvidia-smi > /dev/null; then
    within 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine?)"
  fi
}

# test_exes NAME: the bundle's test executables of cargo target NAME (staged as NAME-<hash>).
test_exes() {
  local t
  for t in "$g"/tests/"$1"-*; do
    [[ -x $t && $(basename "$t") =~ ^$1-[0-9a-f]+$ ]] && echo "$t"
  done
}

# run_tests SECONDS NAME [ARGS...]: the ignored (GPU) tests of target NAME, one at a time (they
# share the GPU), each executable a process of its own; ARGS: libtest name filters or --skip.
run_tests() {
  local limit=$1 name=$2 t rc=0 found=0
  shift 2
  while read -r t; do
    found=1
    run_ours "$limit" "$t" --ignored --test-threads=1 "$@" || rc=1
  done < <(test_exes "$name")
  ((found)) || { echo "--- FAILED: no test executable $name-* in $g/tests (gpu-bundle.sh --no-tests?)"; return 1; }
  return "$rc"
}

# train doctor: the machine as train sees it, line by line (it also compiles the kernels into
# the cache the later stages read).
doctor() {
  run_ours 90 "$g/bin/train" doctor
}

smoke() {
  run_tests 60 gpu_smoke
}

gpu_tests() {
  local rc=0
  run_tests 70 gpu parity:: || rc=1
  run_tests 50 gpu fast_paths:: || rc=1
  run_tests 120 end_to_end || rc=1
  # The train crate's unit tests: resident_batches_match_the_host_loader (crates/train/src/batches.rs).
  run_tests 30 train || rc=1
  other_ignored_tests || rc=1
  return "$rc"
}

# Any ignored test the groups above did not run (today: `train --device cuda` against the CPU in
# the train crate's `commands` tests): listed first, so that the many executables without one
# cost no run.
other_ignored_tests() {
  local t name skip rc=0
  for t in "$g"/tests/*; do
    name=$(basename "$t")
    name=${name%-*}
    # Tests named standin_* use the stand-in driver's own controls (its device size, fault
    # injection): they run in CI on the stand-in, and mean nothing on a real GPU.
    skip=(--skip standin_)
    case $name in
      gpu_smoke | end_to_end | train | nvrtc) continue ;; # run above; nvrtc: compile-only, run by CI
      gpu) skip+=(--skip parity:: --skip fast_paths::) ;;
    esac
    if within 20 "$t" --list --ignored --format terse "${skip[@]}" 2> /dev/null | grep -q ': test$'; then
      run_ours 60 "$t" --ignored --test-threads=1 "${skip[@]}" || rc=1
    fi
  done
  return "$rc"
}

# The compute-sanitizer to use: PROOF_SANITIZER if set (a path that does not exist: none),
# else the PATH's, else the toolkit's.
sanitizer_bin() {
  local s candidates=("${PROOF_SANITIZER:-}")
  [[ -n ${PROOF_SANITIZER:-} ]] || candidates=("$(command -v compute-sanitizer)" /usr/local/cuda*/bin/compute-sanitizer)
  for s in "${candidates[@]}"; do
    if [[ -n $s && -x $s ]]; then
      echo "$s"
      return 0
    fi
  done
  return 1
}

# sanitizer_probe TOOL: the sanitizer on gpu_smoke (a tiny run that passed without it). 0: it
# works here; PROOF_UNAVAILABLE, after a line "unavailable ...": the machine or its runtime
# cannot run it (gVisor: "Device not supported", then error 999 at the first allocation);
# 1: it found an error in the smoke test's kernels (ours).
sanitizer_probe() {
  local tool=$1 s smoke log rc words
  s=$(sanitizer_bin) || { echo "unavailable on this runtime: compute-sanitizer is not installed here"; return "$PROOF_UNAVAILABLE"; }
  smoke=$(test_exes gpu_smoke | head -1)
  log=$(mktemp)
  echo "--- probe: $s --tool $tool on gpu_smoke (limit 60 s)"
  within 60 env LD_LIBRARY_PATH="${OUR_LD_LIBRARY_PATH:-}" \
    "$s" --tool "$tool" --error-exitcode 9 "$smoke" --ignored --test-threads=1 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # The sanitizer's own lines start with "=========": quote its complaint, else any error it
  # names, else the run's last lines.
  words=$(grep -m2 -iE '^=========.*(not supported|error 999|CUDA_ERROR)' "$log")
  [[ -n $words ]] || words=$(grep -m2 -i '^=========.*error' "$log" | grep -v 'ERROR SUMMARY: 0')
  [[ -n $words ]] || words=$(tail -n 2 "$log")
  words=$(awk '{ sub(/^=* */, ""); printf "%s%s", (NR > 1 ? "; " : ""), $0 }' <<< "$words")
  if ((rc == 0)); then
    echo "probe: compute-sanitizer $tool works here"
  elif grep -qi 'not supported' "$log"; then
    echo "unavailable on this runtime: compute-sanitizer says \"$words\""
    rc=$PROOF_UNAVAILABLE
  elif grep -qE 'Invalid __(global|shared|local)__|Race reported|hazard|Uninitialized __global__' "$log"; then
    echo "probe: compute-sanitizer $tool found an error in gpu_smoke's kernels (above)"
    rc=1
  else
    # gpu_smoke passed without it (the smoke stage), so what failed is the tool on this machine.
    echo "unavailable on this runtime: compute-sanitizer could not run gpu_smoke (exit $rc) and reported no error in a kernel: \"$words\""
    rc=$PROOF_UNAVAILABLE
  fi
  rm -f "$log"
  return "$rc"
}

sanitizer() { # TOOL: memcheck on a short run, eager and bf16 + graph; racecheck on a shorter one
  local tool=$1 s rc=0
  sanitizer_probe "$tool"
  case $? in
    0) ;;
    "$PROOF_UNAVAILABLE") return "$PROOF_UNAVAILABLE" ;;
    *) rc=1 ;; # a finding is ours; the runs below still say what else it finds
  esac
  s=$(sanitizer_bin)
  local args=(--depth 20 --epochs 1 --limit-train 256 --limit-test 128 --batch-size 64 --device cuda)
  # racecheck is slow on the shared-memory conv tiles: fewer steps.
  [ "$tool" = racecheck ] && args=(--depth 20 --epochs 1 --limit-train 128 --limit-test 64 --batch-size 64 --device cuda)
  run_ours 150 "$s" --tool "$tool" --error-exitcode 9 "$g/bin/train" "${args[@]}" || rc=1
  run_ours 150 "$s" --tool "$tool" --error-exitcode 9 "$g/bin/train" "${args[@]}" --precision bf16 --cuda-graph || rc=1
  return "$rc"
}

accuracy() {
  local rc=0
  local recipe=(--depth 20 --epochs 30 --no-decay-bn-bias --device cuda)
  run_ours 200 "$g/bin/train" "${recipe[@]}" --precision bf16 --cuda-graph --metrics "$OUT/accuracy-ours-bf16-graph.csv" || rc=1
  run_ours 200 "$g/bin/train" "${recipe[@]}" --precision fp32 --metrics "$OUT/accuracy-ours-fp32.csv" || rc=1
  # The peer with the machine's own environment (no nvrtc of ours in front of torch's).
  run 200 bash "$g/remote.sh" peer accuracy --model resnet20 --epochs 30 || rc=1
  return "$rc"
}

# Only the kernels' bench (the CPU train_step bench is for the CPU machine). Criterion's shortest
# sensible timing (~0.5 s per benchmark, ~2 min for all); each sample is still a batch of
# launches timed by events.
bench() {
  local b rc=0
  for b in "$g"/bench/kernels-*; do
    run_ours 200 "$b" --bench --warm-up-time 0.1 --measurement-time 0.4 || rc=1
  done
  return "$rc"
}

paper() {
  local t0=$SECONDS
  run_ours 290 "$g/bin/train" --device cuda --precision bf16 --cuda-graph --metrics "$OUT/paper.csv" || return 1
  echo "paper schedule, depth 20, bf16 + CUDA graph: $((SECONDS - t0)) s wall, start-up and every epoch's evaluation included"
}

export -f test_exes run_tests doctor smoke gpu_tests other_ignored_tests sanitizer_bin sanitizer_probe \
  sanitizer accuracy bench paper

# The smoke test gates the GPU stages: if a relu cannot run, nothing after it can pass, and its
# one clear failure beats a log of hundreds.
smoke_ok=
gate() {
  stage smoke 60 smoke && smoke_ok=1 && return
  echo "gpu_smoke failed: the GPU stages of this call are skipped (the reason is in smoke.log)"
  smoke_ok=0
  status=1
}

# gpu_stage NAME SECONDS COMMAND...: a stage that needs a working GPU, run after the smoke test.
gpu_stage() {
  [[ -n $smoke_ok ]] || gate
  if ((smoke_ok == 0)); then
    echo "=== $1: skipped (gpu_smoke failed)"
    return
  fi
  stage "$@"
  case $? in 0 | "$PROOF_UNAVAILABLE") ;; *) status=1 ;; esac
}

echo "gpu-proof ${1:-call1}: $(($(proof_left_ms) / 1000)) s for this call"
# remote.sh decodes the CIFAR-10 stand-in into $CIFAR_DIR once per machine; train needs it.
within 150 bash "$g/remote.sh" sh true > /dev/null || { echo "decoding the CIFAR-10 stand-in failed"; status=1; }
export CIFAR_DIR=${CIFAR_DIR:-/tmp/cifar}
preflight
stage doctor 100 doctor || status=1
case ${1:-call1} in
  doctor) ;;
  smoke) gate ;;
  tests) gpu_stage tests 420 gpu_tests ;;
  speed) gpu_stage speed 400 bash "$root/scripts/speed-vs-peer.sh" ;;
  memcheck | racecheck) gpu_stage "$1" 300 sanitizer "$1" ;;
  accuracy) gpu_stage accuracy 560 accuracy ;;
  bench) gpu_stage bench 300 bench ;;
  paper) gpu_stage paper 300 paper ;;
  # Stage limits are each stage's most; the call's limit cuts the last stages of a call when the
  # ones before took long (a fresh machine spends ~40 s decoding the data first).
  call1)
    gpu_stage tests 180 gpu_tests
    gpu_stage speed 220 bash "$root/scripts/speed-vs-peer.sh"
    gpu_stage memcheck 120 sanitizer memcheck ;;
  call2)
    gpu_stage accuracy 360 accuracy
    gpu_stage bench 150 bench ;;
  call3)
    gpu_stage racecheck 200 sanitizer racecheck
    gpu_stage paper 300 paper ;;
esac
echo "gpu-proof ${1:-call1}: $([ "$status" = 0 ] && echo "all ok" || echo "something FAILED or timed out (see above)")"
exit $status
