#!/usr/bin/env bash
# The GPU checks of the CUDA engine, for one device call on the lent GPU machine.
#
# Here (with Rust):   ../shared/tools/gpu-bundle.sh        # stages .gpu/ (tests, benches, bins, data, peer)
# There (device tool, carry [".gpu"]):
#   bash scripts/gpu-proof.sh tests        # every test with --include-ignored: GPU-vs-CPU parity, smoke, e2e
#   bash scripts/gpu-proof.sh sanitize     # compute-sanitizer memcheck + racecheck on a short training run
#   bash scripts/gpu-proof.sh bench        # cargo bench -p kernels (criterion, device time per kernel)
#   bash scripts/gpu-proof.sh accuracy     # depth 20, 30 epochs, the peer's recipe: ours, then the PyTorch peer
#   bash scripts/gpu-proof.sh speed        # train bench vs torch_peer.py speed, one table (scripts/speed-vs-peer.sh)
#   bash scripts/gpu-proof.sh all          # tests, sanitize, bench (accuracy takes minutes: run it alone)
# Logs go to $OUT (they come back with the call). Each stage prints its wall time.
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
  "$s" --tool memcheck --error-exitcode 9 bash "$g/remote.sh" train "${run[@]}" &&
    "$s" --tool racecheck --error-exitcode 9 bash "$g/remote.sh" train "${run[@]}"
}

accuracy() {
  local recipe=(--depth 20 --epochs 30 --no-decay-bn-bias --device cuda --metrics "$out/ours-r20-30ep.csv" --plot "$out/ours-r20-30ep.png")
  bash "$g/remote.sh" train "${recipe[@]}" && bash "$g/remote.sh" peer accuracy --model resnet20 --epochs 30
}

case ${1:-all} in
  tests) stage tests bash "$g/remote.sh" tests ;;
  sanitize) stage sanitize sanitizer ;;
  bench) stage bench bash "$g/remote.sh" bench ;;
  accuracy) stage accuracy accuracy ;;
  speed) stage speed bash "$root/scripts/speed-vs-peer.sh" ;;
  all)
    stage tests bash "$g/remote.sh" tests
    stage sanitize sanitizer
    stage bench bash "$g/remote.sh" bench ;;
  *) echo "unknown stage $1 (tests|sanitize|bench|accuracy|speed|all)" >&2; exit 2 ;;
esac
exit $status
