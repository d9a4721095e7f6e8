#!/usr/bin/env bash
# Ours vs the PyTorch peer, side by side in ONE device call (absolute times from different calls
# or cards are not comparable). Runs `train bench` in each of our modes (fp32, fp32+graph, bf16,
# bf16+graph) and `torch_peer.py speed` for each model and prints one markdown table: ms/step
# per mode, peak memory, and our best mode's speed-up over the peer's best mode.
#
#   bash scripts/speed-vs-peer.sh [--device cuda|cpu] [--steps N] [MODEL ...]
# MODEL is the peer's name: resnet20 resnet32 resnet44 resnet56 resnet110 resnet34-w16-pad
# resnet18-w64-conv resnet34-w64-conv resnet34-w64-pad (default: the speed issue's table).
# Needs the .gpu/ bundle (../shared/tools/gpu-bundle.sh). Results also land in $OUT/speed.jsonl.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
g="$root/.gpu"
device=cuda steps=50
models=()
while (($#)); do
  case $1 in
    --device) device=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
((${#models[@]})) || models=(resnet20 resnet56 resnet110 resnet34-w64-pad resnet34-w64-conv resnet34-w16-pad)
out=${OUT:-/tmp/speed}
mkdir -p "$out"
jsonl="$out/speed.jsonl"
: > "$jsonl"

flags() { # peer name -> our flags
  case $1 in
    resnet[0-9]*-w*-*) local d=${1#resnet} ; d=${d%%-*}; local rest=${1#*-w}; echo "--depth $d --width ${rest%%-*} --shortcut ${rest#*-}" ;;
    resnet[0-9]*) echo "--depth ${1#resnet}" ;;
    *) echo "unknown model $1" >&2; return 1 ;;
  esac
}

modes=("--precision fp32" "--precision fp32 --cuda-graph" "--precision bf16" "--precision bf16 --cuda-graph")
for m in "${models[@]}"; do
  for mode in "${modes[@]}"; do
    # shellcheck disable=SC2046,SC2086
    "$g/bin/train" bench $(flags "$m") $mode --device "$device" --steps "$steps" --json | grep '^{' >> "$jsonl" ||
      echo "{\"peer\": \"ours\", \"model\": \"$m\", \"mode\": \"$(echo $mode | sed 's/--precision //; s/ --cuda-graph/+graph/')\", \"failed\": true}" >> "$jsonl"
  done
done
# A failing peer still leaves our columns to print (the ratio column then says "?").
(cd "$g/data" && python3 torch_peer.py speed --models "$(IFS=,; echo "${models[*]}")" --out "$jsonl" > /dev/null) ||
  echo "torch_peer.py speed failed (exit $?): no peer columns" >&2

python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours, peer = {}, {}
for r in rows:
    side = ours if r["peer"] == "ours" else peer if r["peer"] == "pytorch" else None
    if side is not None:
        side.setdefault(r["model"], {})[r["mode"]] = r
gpu = next((r.get("gpu") for r in rows if r.get("gpu")), "?")
print(f"card: {gpu}, batch 128, synthetic data on the device, ms/step (lower is better)\n")
mine = ["fp32", "fp32+graph", "bf16", "bf16+graph"]
print("| model | " + " | ".join(f"ours {m}" for m in mine) + " | peer fp32 | peer bf16-cl | best vs peer's best | peak MiB ours / peer |")
print("|" + " --- |" * (len(mine) + 5))
ms = lambda d, mode: d[mode]["ms_per_step"] if mode in d and not d[mode].get("failed") else None
fmt = lambda v: f"{v:.2f}" if v is not None else "failed"
for m, o in ours.items():
    p = peer.get(m, {})
    mine_ms = {mode: ms(o, mode) for mode in mine}
    ok = {k: v for k, v in mine_ms.items() if v is not None}
    best_mode = min(ok, key=ok.get) if ok else None
    peer_best = min((x["ms_per_step"] for x in p.values()), default=None)
    ratio = f"{peer_best / ok[best_mode]:.2f}x ({best_mode})" if best_mode and peer_best else "?"
    mem_ours = o[best_mode].get("peak_mem_mb") if best_mode else None
    mem_peer = max((x.get("peak_mem_mb") or 0 for x in p.values()), default=None)
    pf = lambda mode: f"{p[mode]['ms_per_step']:.2f}" if mode in p else "-"
    print(f"| {m} | " + " | ".join(fmt(mine_ms[k]) for k in mine) + f" | {pf('fp32')} | {pf('bf16-cl')} | {ratio} | {mem_ours or 'n/a'} / {mem_peer} |")
PY
