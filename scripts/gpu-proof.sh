#!/usr/bin/env bash
# The GPU checks of the CUDA engine (#4) and the speed work (#5), planned for the lent GPU
# machine's budget: 15 minutes of device time per session, at most 10 minutes per call, at most
# 8 files back per call. So: two calls, each under ~8 minutes, each writing at most 4 files.
#
# Here (with Rust):   ../shared/tools/gpu-bundle.sh        # stages .gpu/ (tests, benches, bins, data, peer)
# There (device tool, carry [".gpu"]), in this order:
#   bash scripts/gpu-proof.sh call1   # tests, speed table, sanitizer            (~5 min)
#   bash scripts/gpu-proof.sh call2   # 30-epoch accuracy (ours bf16+graph, ours fp32, peer), kernel bench (~8 min)
# Single stages: tests | speed | sanitize | accuracy | bench.
#   tests     every test executable with --include-ignored: GPU-vs-CPU parity (tests/gpu/: parity.rs,
#             fast_paths.rs), smoke, resident batches, e2e (GPU training, --cuda-graph
#             equal to eager, out of memory)                                    -> tests.log
#   speed     train bench in 4 modes vs torch_peer.py speed, one markdown table -> speed.log, speed.jsonl
#   sanitize  compute-sanitizer memcheck, then racecheck, on a short training run, eager and
#             with --cuda-graph --precision bf16                                -> sanitize.log
#   accuracy  depth 20, 30 epochs, the peer's recipe: ours bf16 + CUDA graph, ours fp32 eager,
#             then the peer                                                      -> accuracy.log, 2 CSVs
#   bench     cargo bench -p kernels (ceilings, then every kernel; % of peak)  -> bench.log
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
g="$root/.gpu"
[ -x "$g/remote.sh" ] || { echo "no .gpu/ bundle: run ../shared/tools/gpu-bundle.sh here first and carry .gpu" >&2; exit 2; }
out=${OUT:-/tmp/gpu-proof}
mkdir -p "$out"
export TRAIN_BIN="$g/bin/train"
status=0

stage() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name"
  if "$@" 2>&1 | tee "$out/$name.log"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else echo "=== $name: FAILED ($((SECONDS - t0)) s)"; status=1; fi
}

sanitizer() {
  local s
  s=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  [ -n "$s" ] || { echo "compute-sanitizer not found on this machine"; return 1; }
  local run=(--depth 20 --epochs 1 --limit-train 256 --limit-test 128 --batch-size 64 --device cuda)
  local fast=("${run[@]}" --precision bf16 --cuda-graph)
  "$s" --tool memcheck --error-exitcode 9 bash "$g/remote.sh" train "${run[@]}" &&
    "$s" --tool memcheck --error-exitcode 9 bash "$g/remote.sh" train "${fast[@]}" &&
    "$s" --tool racecheck --error-exitcode 9 bash "$g/remote.sh" train "${run[@]}" &&
    "$s" --tool racecheck --error-exitcode 9 bash "$g/remote.sh" train "${fast[@]}"
}

accuracy() {
  local recipe=(--depth 20 --epochs 30 --no-decay-bn-bias --device cuda)
  bash "$g/remote.sh" train "${recipe[@]}" --precision bf16 --cuda-graph --metrics "$out/accuracy-ours-bf16-graph.csv" &&
    bash "$g/remote.sh" train "${recipe[@]}" --precision fp32 --metrics "$out/accuracy-ours-fp32.csv" &&
    bash "$g/remote.sh" peer accuracy --model resnet20 --epochs 30
}

# Criterion's shortest sensible timing (~0.5 s per benchmark, ~2 min for all) so the bench fits
# the call after the accuracy runs; each sample is still a batch of launches timed by events.
quick_bench=(--warm-up-time 0.1 --measurement-time 0.4)

case ${1:-call1} in
  tests) stage tests bash "$g/remote.sh" tests ;;
  speed) stage speed bash "$root/scripts/speed-vs-peer.sh" ;;
  sanitize) stage sanitize sanitizer ;;
  accuracy) stage accuracy accuracy ;;
  bench) stage bench bash "$g/remote.sh" bench "${quick_bench[@]}" ;;
  call1)
    stage tests bash "$g/remote.sh" tests
    stage speed bash "$root/scripts/speed-vs-peer.sh"
    stage sanitize sanitizer ;;
  call2)
    stage accuracy accuracy
    stage bench bash "$g/remote.sh" bench "${quick_bench[@]}" ;;
  *) echo "unknown stage $1 (call1|call2|tests|speed|sanitize|accuracy|bench)" >&2; exit 2 ;;
esac
exit $status
