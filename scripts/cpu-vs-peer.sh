#!/usr/bin/env bash
# Ours vs the PyTorch peer on the CPU, side by side in ONE call on the same cores: `train bench
# --device cpu` (fp32 and bf16) and `torch_peer.py speed --device cpu` (fp32, fp32-cl, bf16-cl),
# alternated model by model within each round, every process on its own (so each peak-memory
# figure is that mode's alone). Prints every round's ms/step, then per model and mode the median
# and best ms/step, images/s, peak memory and the speed ratio against the peer's matching mode
# (ours fp32 vs the faster of the peer's fp32 and fp32-cl; ours bf16 vs the peer's bf16-cl).
#
#   bash scripts/cpu-vs-peer.sh [--rounds R] [--steps N] [--warmup W] [--threads T] [--no-build] [MODEL ...]
#
# Both engines also report the CPU time their process spent per timed step (all threads; the
# peer's through a wrapper that reads process_time where torch_peer.py reads its clock). With
# --threads 1 (RAYON_NUM_THREADS / OMP_NUM_THREADS) that figure hardly moves with other work on
# the machine, unlike wall time: a 2-thread process that loses a core for a moment stalls at its
# next barrier, PyTorch's OpenMP spin-waits far worse than ours. Default: every core.
#
# MODEL is the peer's name (default: resnet20 resnet56 resnet34-w16-pad). Needs a Python with
# torch (CI pins 2.15.0), numpy and pillow: PYTHON=/path/to/python (default: python3). The peer
# is ../shared/tools/torch_peer.py beside the repository (PEER=... to override). Records go to
# $OUT/cpu-vs-peer.jsonl (OUT defaults to /tmp/cpu-vs-peer). The machine should be otherwise
# idle: the load average before and after is printed so a noisy run can be told apart.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
peer=${PEER:-$root/../shared/tools/torch_peer.py}
rounds=3 steps=20 warmup=5 build=1 threads=
models=()
while (($#)); do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 0 ;;
    -*) echo "unknown flag $1 (see --help)" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
((${#models[@]})) || models=(resnet20 resnet56 resnet34-w16-pad)
[[ -f $peer ]] || { echo "the PyTorch peer is not at $peer (set PEER=...)" >&2; exit 2; }
"$python" -c 'import torch, numpy' 2>/dev/null ||
  { echo "$python cannot import torch and numpy: set PYTHON to a Python that has them" >&2; exit 2; }
out=${OUT:-/tmp/cpu-vs-peer}
mkdir -p "$out"
jsonl="$out/cpu-vs-peer.jsonl"
: > "$jsonl"

if ((build)); then
  (cd "$root" && cargo build --release -q -p train)
fi
train="$root/target/release/train"
if [[ -n $threads ]]; then
  export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
fi
# The peer, with its process CPU time per timed step added to each record: torch_peer.py reads
# time.perf_counter() just before and after its timed loop, so process_time is sampled there.
peer_with_cpu_time() {
  "$python" - "$peer" "$@" <<'PYPEER'
import importlib.util, sys, time
path, args = sys.argv[1], sys.argv[2:]
spec = importlib.util.spec_from_file_location("torch_peer", path)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
marks, wall = [], time.perf_counter
def clock():
    marks.append(time.process_time())
    return wall()
time.perf_counter = clock
steps = int(args[args.index("--steps") + 1])
emit = peer.emit
def emit_with_cpu(rec, out):
    if rec.get("what") == "speed" and len(marks) >= 2:
        rec["cpu_ms_per_step"] = round((marks[-1] - marks[-2]) * 1000 / steps, 3)
    emit(rec, out)
peer.emit = emit_with_cpu
sys.argv = [path] + args
peer.main()
PYPEER
}

flags() { # peer name -> our flags
  case $1 in
    resnet[0-9]*-w*-*) local d=${1#resnet}; d=${d%%-*}; local rest=${1#*-w}; echo "--depth $d --width ${rest%%-*} --shortcut ${rest#*-}" ;;
    resnet[0-9]*) echo "--depth ${1#resnet}" ;;
    *) echo "unknown model $1" >&2; return 1 ;;
  esac
}

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
flags_cpu=$( (grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_tile|amx_bf16' /proc/cpuinfo 2>/dev/null || true) | sort -u | tr '\n' ' ')
echo "CPU: ${cpu:-unknown} ($(nproc) threads; ${flags_cpu:-no AVX2 or AVX-512}), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "ours: $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?'), kernels: ${RESNET_CPU_KERNELS:-auto}; peer: $("$python" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "batch 128, $steps timed steps after $warmup warm-up, $rounds rounds, threads: ${threads:-all}"
for r in $(seq 1 "$rounds"); do
  for m in "${models[@]}"; do
    for p in fp32 bf16; do
      # shellcheck disable=SC2046
      "$train" bench $(flags "$m") --device cpu --precision $p --steps "$steps" --warmup "$warmup" --json |
        grep '^{' | sed "s/^{/{\"round\": $r, /" >> "$jsonl" ||
        echo "{\"round\": $r, \"peer\": \"ours\", \"model\": \"$m\", \"mode\": \"$p\", \"failed\": true}" >> "$jsonl"
    done
    for p in fp32 fp32-cl bf16-cl; do
      peer_with_cpu_time speed --device cpu --models "$m" --modes $p --steps "$steps" --warmup "$warmup" |
        grep '^{' | sed "s/^{/{\"round\": $r, /" >> "$jsonl" ||
        echo "{\"round\": $r, \"peer\": \"pytorch\", \"model\": \"$m\", \"mode\": \"$p\", \"failed\": true}" >> "$jsonl"
    done
  done
  echo "round $r done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$python" - "$jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    runs.setdefault((r["model"], r["peer"], r["mode"]), []).append(r)
med = lambda xs: statistics.median(xs) if xs else None
def stat(key, field):
    return med([r[field] for r in runs.get(key, []) if not r.get("failed") and r.get(field) is not None])
print()
print("| model | engine | mode | ms/step (each round) | median ms/step | best | images/s | peak MiB | speed vs peer (median; best) | CPU ms/step (each round) | CPU-time ratio (median) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
models = list(dict.fromkeys(r["model"] for r in rows))
for m in models:
    best = lambda key: min([r["ms_per_step"] for r in runs.get(key, []) if not r.get("failed")], default=None)
    peer_fp32 = min([x for x in (stat((m, "pytorch", "fp32"), "ms_per_step"), stat((m, "pytorch", "fp32-cl"), "ms_per_step")) if x], default=None)
    peer_bf16 = stat((m, "pytorch", "bf16-cl"), "ms_per_step")
    peer_fp32_best = min([x for x in (best((m, "pytorch", "fp32")), best((m, "pytorch", "fp32-cl"))) if x], default=None)
    peer_bf16_best = best((m, "pytorch", "bf16-cl"))
    peer_cpu_fp32 = min([x for x in (stat((m, "pytorch", "fp32"), "cpu_ms_per_step"), stat((m, "pytorch", "fp32-cl"), "cpu_ms_per_step")) if x], default=None)
    peer_cpu_bf16 = stat((m, "pytorch", "bf16-cl"), "cpu_ms_per_step")
    for engine, mode in [("ours", "fp32"), ("ours", "bf16"), ("pytorch", "fp32"), ("pytorch", "fp32-cl"), ("pytorch", "bf16-cl")]:
        rs = runs.get((m, engine, mode), [])
        each = " / ".join("failed" if r.get("failed") else f"{r['ms_per_step']:.1f}" for r in rs)
        ms = stat((m, engine, mode), "ms_per_step")
        ips = stat((m, engine, mode), "img_per_s")
        mem = stat((m, engine, mode), "peak_mem_mb")
        ref = peer_fp32 if mode.startswith("fp32") else peer_bf16
        ref_best = peer_fp32_best if mode.startswith("fp32") else peer_bf16_best
        b = best((m, engine, mode))
        ratio = f"{ref / ms:.2f}x; {ref_best / b:.2f}x" if engine == "ours" and ms and ref and b and ref_best else ""
        fmt = lambda v, f: f.format(v) if v is not None else "?"
        cpu_each = " / ".join("?" if r.get("failed") or r.get("cpu_ms_per_step") is None else f"{r['cpu_ms_per_step']:.1f}" for r in rs)
        cpu = stat((m, engine, mode), "cpu_ms_per_step")
        cpu_ref = peer_cpu_fp32 if mode.startswith("fp32") else peer_cpu_bf16
        cpu_ratio = f"{cpu_ref / cpu:.2f}x" if engine == "ours" and cpu and cpu_ref else ""
        print(f"| {m} | {engine} | {mode} | {each} | {fmt(ms, '{:.1f}')} | {fmt(b, '{:.1f}')} | {fmt(ips, '{:.0f}')} | {fmt(mem, '{:.0f}')} | {ratio} | {cpu_each} | {cpu_ratio} |")
print()
for mode in ("fp32", "bf16"):
    ran = sorted({r.get("device", "?") for r in rows if r["peer"] == "ours" and r["mode"] == mode and not r.get("failed")})
    for d in ran:
        print(f"ours {mode} ran on: {d}")
print()
print("speed vs peer: the peer's ms/step over ours (>1: ours is faster), of the medians and of the")
print("best rounds (on a busy machine other work only adds time); fp32 against the faster of the")
print("peer's fp32 and fp32-cl, bf16 against its bf16-cl (autocast, channels_last). images/s and")
print("peak memory are medians; peak memory is each process's resident high-water mark. CPU ms/step:")
print("the process's CPU time per timed step, all threads (with one thread: that thread's time).")
PY
