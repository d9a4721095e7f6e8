#!/usr/bin/env bash
# The GPU checks of the CUDA engine (#4) and the speed work (#5), planned for the lent GPU
# machine's budget: 15 minutes of device time per session (start-up included), at most 10
# minutes and 8 files back per call. All of it takes more than one session's budget, so the
# calls are ordered by what they prove; each stays under 600 s even on a fresh machine.
#
# Here (with Rust):   ../shared/tools/gpu-bundle.sh        # stages .gpu/ (tests, benches, bins, data, peer)
# There (device tool, carry [".gpu"]), in this order:
#   bash scripts/gpu-proof.sh call1   # GPU tests, speed table vs the peer, memcheck        (~7 min)
#   bash scripts/gpu-proof.sh call2   # 30-epoch accuracy (ours bf16+graph, ours fp32, peer),
#                                     # kernel bench                                         (~6 min)
#   bash scripts/gpu-proof.sh call3   # racecheck, the paper's 164-epoch ResNet-20 run       (~5 min)
# Single stages: tests | speed | memcheck | racecheck | accuracy | bench | paper.
#   tests     the ignored tests of every test executable (the GPU ones: GPU-vs-CPU parity in
#             tests/gpu/, smoke, resident batches, e2e GPU training, --cuda-graph equal to eager,
#             out of memory), one at a time; the CPU tests already ran in CI  -> tests.log
#   speed     train bench in 4 modes vs torch_peer.py speed, one markdown table -> speed.log, speed.jsonl
#   memcheck  compute-sanitizer on a short training run, eager and with --cuda-graph
#   racecheck --precision bf16                                                  -> memcheck.log, racecheck.log
#   accuracy  depth 20, 30 epochs, the peer's recipe: ours bf16 + CUDA graph, ours fp32 eager,
#             then the peer                                                      -> accuracy.log, 2 CSVs
#   bench     the kernels' criterion bench (ceilings, then every kernel; % of peak) -> bench.log
#   paper     time to accuracy: the defaults (the paper's 164 epochs, 64k steps, evaluating every
#             epoch), bf16 + CUDA graph                                          -> paper.log, paper.csv
#
# Every stage and every run inside one has its own time limit, and a failure never skips the
# runs after it: one call must bring back everything that works.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
g="$root/.gpu"
[ -x "$g/remote.sh" ] || { echo "no .gpu/ bundle: run ../shared/tools/gpu-bundle.sh here first and carry .gpu" >&2; exit 2; }
out=${OUT:-/tmp/gpu-proof}
mkdir -p "$out"
export TRAIN_BIN="$g/bin/train"
status=0

# nvrtc: the toolkit's libnvrtc.so.13 (the driver's CUDA version), found even where the loader
# cache lacks it. A newer nvrtc elsewhere (a Python venv's) is not taken by accident.
preflight() {
  if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc.so.13 '; then
    local d
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/*/lib; do
      if [ -e "$d/libnvrtc.so.13" ]; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
    done
  fi
  echo "nvrtc: $( (ldconfig -p 2>/dev/null | grep -m1 'libnvrtc.so.13 ') || echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}")"
  command -v nvcc > /dev/null && nvcc --version | tail -1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# stage NAME SECONDS COMMAND...: runs it under a time limit, its output in $out/NAME.log.
stage() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit} s)"
  # Through bash -c: timeout runs programs, and a stage is often one of the functions below.
  if timeout -k 10 "$limit" bash -c '"$@"' stage "$@" 2>&1 | tee "$out/$name.log"; then
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "=== $name: FAILED or timed out ($((SECONDS - t0)) s)"
    status=1
  fi
}

# run SECONDS COMMAND...: one run inside a stage; notes a failure and goes on.
run() {
  local limit=$1; shift
  echo "--- $*"
  timeout -k 10 "$limit" "$@" || { echo "--- FAILED (exit $?): $*"; return 1; }
}

tests() {
  local t rc=0
  for t in "$g"/tests/*; do
    case $(basename "$t") in nvrtc-*) continue ;; esac  # compile-only, run by CI
    echo "== $(basename "$t")"
    # --ignored: only the GPU tests (the rest ran in CI). One at a time: they share the GPU.
    run 240 "$t" --ignored --test-threads=1 || rc=1
  done
  return $rc
}

sanitizer() { # TOOL: memcheck on a short run, eager and bf16 + graph; racecheck on a shorter one
  local tool=$1 s rc=0
  s=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  [ -n "$s" ] || { echo "compute-sanitizer not found on this machine"; return 1; }
  local args=(--depth 20 --epochs 1 --limit-train 256 --limit-test 128 --batch-size 64 --device cuda)
  # racecheck is slow on the shared-memory conv tiles: fewer steps.
  [ "$tool" = racecheck ] && args=(--depth 20 --epochs 1 --limit-train 128 --limit-test 64 --batch-size 64 --device cuda)
  run 150 "$s" --tool "$tool" --error-exitcode 9 "$g/bin/train" "${args[@]}" || rc=1
  run 150 "$s" --tool "$tool" --error-exitcode 9 "$g/bin/train" "${args[@]}" --precision bf16 --cuda-graph || rc=1
  return $rc
}

accuracy() {
  local rc=0
  local recipe=(--depth 20 --epochs 30 --no-decay-bn-bias --device cuda)
  run 200 "$g/bin/train" "${recipe[@]}" --precision bf16 --cuda-graph --metrics "$out/accuracy-ours-bf16-graph.csv" || rc=1
  run 200 "$g/bin/train" "${recipe[@]}" --precision fp32 --metrics "$out/accuracy-ours-fp32.csv" || rc=1
  run 200 bash "$g/remote.sh" peer accuracy --model resnet20 --epochs 30 || rc=1
  return $rc
}

# Only the kernels' bench (the CPU train_step bench is for the CPU machine). Criterion's shortest
# sensible timing (~0.5 s per benchmark, ~2 min for all); each sample is still a batch of
# launches timed by events.
bench() {
  local b rc=0
  for b in "$g"/bench/kernels-*; do
    run 200 "$b" --bench --warm-up-time 0.1 --measurement-time 0.4 || rc=1
  done
  return $rc
}

paper() {
  local t0=$SECONDS
  run 290 "$g/bin/train" --device cuda --precision bf16 --cuda-graph --metrics "$out/paper.csv" || return 1
  echo "paper schedule, depth 20, bf16 + CUDA graph: $((SECONDS - t0)) s wall, start-up and every epoch's evaluation included"
}

export root g out
export -f run tests sanitizer accuracy bench paper

# remote.sh decodes the CIFAR-10 stand-in into $CIFAR_DIR once per machine; train needs it.
bash "$g/remote.sh" sh true > /dev/null || { echo "decoding the CIFAR-10 stand-in failed"; status=1; }
export CIFAR_DIR=${CIFAR_DIR:-/tmp/cifar}
preflight
case ${1:-call1} in
  tests) stage tests 420 tests ;;
  speed) stage speed 400 bash "$root/scripts/speed-vs-peer.sh" ;;
  memcheck | racecheck) stage "$1" 300 sanitizer "$1" ;;
  accuracy) stage accuracy 560 accuracy ;;
  bench) stage bench 300 bench ;;
  paper) stage paper 300 paper ;;
  # Stage limits sized so that each call stays under the device tool's 600 s with a fresh
  # machine's ~40 s of data decoding; a stage cut short still leaves its log.
  call1)
    stage tests 180 tests
    stage speed 240 bash "$root/scripts/speed-vs-peer.sh"
    stage memcheck 120 sanitizer memcheck ;;
  call2)
    stage accuracy 360 accuracy
    stage bench 150 bench ;;
  call3)
    stage racecheck 200 sanitizer racecheck
    stage paper 300 paper ;;
  *) echo "unknown stage $1 (call1|call2|call3|tests|speed|memcheck|racecheck|accuracy|bench|paper)" >&2; exit 2 ;;
esac
exit $status
