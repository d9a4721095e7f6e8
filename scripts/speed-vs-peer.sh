#!/usr/bin/env bash
# Ours vs the PyTorch peer, side by side in ONE device call (absolute times from different calls
# or cards are not comparable). Runs `train bench` and `torch_peer.py speed` for each model and
# prints one markdown table: ms/step, images/s, peak memory, and speed-up over the peer's best mode.
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

for m in "${models[@]}"; do
  # shellcheck disable=SC2046
  "$g/bin/train" bench $(flags "$m") --device "$device" --steps "$steps" --json | grep '^{' >> "$jsonl"
done
(cd "$g/data" && python3 torch_peer.py speed --models "$(IFS=,; echo "${models[*]}")" --out "$jsonl" > /dev/null)

python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours = {r["model"]: r for r in rows if r["peer"] == "ours"}
peer = {}
for r in rows:
    if r["peer"] == "pytorch":
        peer.setdefault(r["model"], {})[r["mode"]] = r
gpu = next((r.get("gpu") for r in rows if r.get("gpu")), "?")
print(f"card: {gpu}, batch 128, synthetic data on the device\n")
print("| model | ours ms/step | peer fp32 | peer bf16+cl | speed-up vs peer's best | ours img/s | peak MiB ours / peer |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for m, o in ours.items():
    p = peer.get(m, {})
    best = min((x["ms_per_step"] for x in p.values()), default=None)
    ratio = f"{best / o['ms_per_step']:.2f}x" if best else "?"
    pk = max((x.get("peak_mem_mb") or 0 for x in p.values()), default=None)
    f = lambda mode: f"{p[mode]['ms_per_step']:.2f}" if mode in p else "-"
    print(f"| {m} | {o['ms_per_step']:.2f} | {f('fp32')} | {f('bf16-cl')} | {ratio} | {o['img_per_s']:.0f} | {o.get('peak_mem_mb') or 'n/a'} / {pk} |")
PY
