#!/usr/bin/env bash
# Ours vs the PyTorch peer, side by side in ONE device call (absolute times from different calls
# or cards are not comparable). Runs `train bench` in each of our modes (fp32, fp32+graph, bf16,
# bf16+graph) and `torch_peer.py speed` for each model and prints one markdown table: ms/step
# per mode, peak memory, and our best mode's speed-up over the peer's best mode.
#
#   bash scripts/speed-vs-peer.sh [--device cuda|cpu] [--steps N] [--time-limit S] [--run-limit S]
#                                 [--peer-time S] [MODEL ...]
# MODEL is the peer's name: resnet20 resnet32 resnet44 resnet56 resnet110 resnet34-w16-pad
# resnet18-w64-conv resnet34-w64-conv resnet34-w64-pad (default: the speed issue's table).
#
# Time: everything ends within --time-limit (default 220 s; inside gpu-proof.sh's stage, within
# what is left of it). Each of our runs has --run-limit (default 40 s) and none starts when less
# than --peer-time (default 60 s) would be left for the peer. Our columns are printed as soon as
# our runs are done, before the peer starts, so a peer that runs out of time or fails costs only
# its own columns; the peer gets whatever time is left, and the table is printed again with its
# columns (those of the models it finished).
#
# Needs the .gpu/ bundle (../shared/tools/gpu-bundle.sh; PROOF_BUNDLE names another). Results
# also land in $OUT/speed.jsonl. Our binaries get the toolkit's nvrtc on LD_LIBRARY_PATH
# (NVRTC_LIB_DIR, see proof-lib.sh); the peer gets the machine's environment untouched.
# Exit status 1 if a run of ours or the peer failed, ran out of time or could not start.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/proof-lib.sh
source "$root/scripts/proof-lib.sh"
g=${PROOF_BUNDLE:-$root/.gpu}
device=cuda steps=50 time_limit=220 run_limit=40 peer_time=60
models=()
while (($#)); do
  case $1 in
    --device) device=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --time-limit) time_limit=$2; shift 2 ;;
    --run-limit) run_limit=$2; shift 2 ;;
    --peer-time) peer_time=$2; shift 2 ;;
    -*) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
((${#models[@]})) || models=(resnet20 resnet56 resnet110 resnet34-w64-pad resnet34-w64-conv resnet34-w16-pad)
out=${OUT:-/tmp/speed}
mkdir -p "$out"
jsonl="$out/speed.jsonl"
: > "$jsonl"
proof_limit_shell "$time_limit"
proof_our_ld_library_path

flags() { # peer name -> our flags
  case $1 in
    resnet[0-9]*-w*-*) local d=${1#resnet} ; d=${d%%-*}; local rest=${1#*-w}; echo "--depth $d --width ${rest%%-*} --shortcut ${rest#*-}" ;;
    resnet[0-9]*) echo "--depth ${1#resnet}" ;;
    *) echo "unknown model $1" >&2; return 1 ;;
  esac
}
for m in "${models[@]}"; do flags "$m" > /dev/null || exit 2; done
status=0 # 1 if a run of ours or the peer failed or ran out of time

# table ours|all: the markdown table of what $jsonl holds so far.
table() {
  python3 - "$1" "$jsonl" <<'PY'
import json, sys
which, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path) if l.strip()]
ours, peer = {}, {}
for r in rows:
    side = ours if r["peer"] == "ours" else peer if r["peer"] == "pytorch" else None
    if side is not None:
        side.setdefault(r["model"], {})[r["mode"]] = r
card = next((r.get("gpu") for r in rows if r.get("gpu")), None)
card = card or next((r.get("device") for r in rows if r.get("device")), "?")
mine = ["fp32", "fp32+graph", "bf16", "bf16+graph"]
ms = lambda d, mode: d[mode]["ms_per_step"] if mode in d and not d[mode].get("failed") else None
def fmt(d, mode):
    if mode not in d:
        return "-"
    r = d[mode]
    return r.get("why", "failed") if r.get("failed") else f"{r['ms_per_step']:.2f}"
if which == "ours":
    print(f"ours (the peer has not run yet): {card}, batch 128, synthetic data on the device, ms/step\n")
    print("| model | " + " | ".join(f"ours {m}" for m in mine) + " | peak MiB (best mode) |")
    print("|" + " --- |" * (len(mine) + 2))
else:
    print(f"card: {card}, batch 128, synthetic data on the device, ms/step (lower is better)\n")
    print("| model | " + " | ".join(f"ours {m}" for m in mine) + " | peer fp32 | peer bf16-cl | best vs peer's best | peak MiB ours / peer |")
    print("|" + " --- |" * (len(mine) + 5))
for m, o in ours.items():
    ok = {mode: ms(o, mode) for mode in mine if ms(o, mode) is not None}
    best_mode = min(ok, key=ok.get) if ok else None
    mem_ours = o[best_mode].get("peak_mem_mb") if best_mode else None
    cells = " | ".join(fmt(o, k) for k in mine)
    if which == "ours":
        print(f"| {m} | {cells} | {mem_ours or 'n/a'} |")
        continue
    p = peer.get(m, {})
    peer_best = min((x["ms_per_step"] for x in p.values()), default=None)
    ratio = f"{peer_best / ok[best_mode]:.2f}x ({best_mode})" if best_mode and peer_best else "?"
    mem_peer = max((x.get("peak_mem_mb") or 0 for x in p.values()), default=None)
    print(f"| {m} | {cells} | {fmt(p, 'fp32')} | {fmt(p, 'bf16-cl')} | {ratio} | {mem_ours or 'n/a'} / {mem_peer or '-'} |")
PY
}

# Ours: every model in every mode, each run within its limit and the time not kept for the peer.
modes=("--precision fp32" "--precision fp32 --cuda-graph" "--precision bf16" "--precision bf16 --cuda-graph")
peer_ms=$(proof_ms "$peer_time")
run_ms=$(proof_ms "$run_limit")
bench_out=$(mktemp)
for m in "${models[@]}"; do
  for mode in "${modes[@]}"; do
    name=$(sed 's/--precision //; s/ --cuda-graph/+graph/' <<< "$mode")
    budget=$(($(proof_left_ms) - peer_ms))
    ((budget < run_ms)) || budget=$run_ms
    why=
    if ((budget < 1000)); then
      why="not run"
      echo "--- ours $m $name: not started, the time left is the peer's"
    else
      echo "--- ours $m $name (limit $((budget / 1000)) s)"
      # shellcheck disable=SC2046,SC2086 # flags and mode are lists of words
      within "$(proof_secs "$budget")" env LD_LIBRARY_PATH="$OUR_LD_LIBRARY_PATH" \
        "$g/bin/train" bench $(flags "$m") $mode --device "$device" --steps "$steps" --json > "$bench_out"
      case $? in
        0) grep '^{' "$bench_out" >> "$jsonl" || why="no result" ;;
        124 | 137) why="timeout" ;;
        *) why="failed" ;;
      esac
      grep -v '^{' "$bench_out"
    fi
    [[ -z $why ]] || status=1
    [[ -z $why ]] || echo "{\"peer\": \"ours\", \"model\": \"$m\", \"mode\": \"$name\", \"failed\": true, \"why\": \"$why\"}" >> "$jsonl"
  done
done
rm -f "$bench_out"
table ours

# The peer: all the time that is left, with the machine's own environment (not ours). It appends
# each result as it finishes, so a peer cut short still fills the columns of what it finished.
left=$(proof_left_ms)
if ((left < 1000)); then
  echo "--- peer: not started, no time left"
  status=1
else
  echo "--- peer: torch_peer.py speed (limit $((left / 1000)) s)"
  (cd "$g/data" && within "$(proof_secs "$left")" python3 torch_peer.py speed --device "$device" \
    --models "$(IFS=,; echo "${models[*]}")" --out "$jsonl" > /dev/null)
  rc=$?
  case $rc in
    0) ;;
    124 | 137) echo "--- peer: ran out of time; its columns hold the models it finished" ;;
    *) echo "--- peer: torch_peer.py speed failed (exit $rc); its columns hold what it finished" ;;
  esac
  ((rc == 0)) || status=1
fi
echo
table all
exit $status
