#!/usr/bin/env bash
# `train reproduce` on a real single-node Slurm cluster (CI runs it from .ci/run; a developer can
# too, as root with Debian's slurmctld, slurmd, slurm-client and munge installed):
#   1. `--slurm --submit` of 4 tiny runs (depth 20 and 32, seeds 0 and 1, width 4, 2 epochs,
#      generated data, CPU): every run has exactly its 2 epochs, the table is complete;
#   2. one run stopped twice mid-run: by SIGTERM to its batch script (what --signal=B:TERM@120
#      does before the time limit; the script passes it on, the run saves itself and exits 75,
#      the script requeues the task), then by `scontrol requeue` (SIGTERM to every process, as
#      preemption does); its final checkpoint equals the uninterrupted run's of (1), bit for bit;
#   3. two `train reproduce` jobs on one folder at once: no run is trained by both;
#   4. the cluster is torn down, whatever happened (trap).
# SLURM_CHECK_DIR keeps the files there (default: a fresh temporary folder, removed after a
# success); SLURM_CHECK_LIMIT bounds each wait in seconds (default 240).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=${SLURM_CHECK_DIR:-$(mktemp -d /tmp/slurm-check.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
limit=${SLURM_CHECK_LIMIT:-240}
cluster=$work/cluster
SECONDS=0

cargo build -q -p train --profile test --bin train --example fake_cifar
train=$root/target/debug/train
# 1,280 training images: 10 steps of 128 per epoch, a few seconds, long enough to requeue
# a run in the middle.
"$root/target/debug/examples/fake_cifar" "$work/data" 256 1

teardown() {
  local status=$?
  bash "$root/ci/slurm/stop.sh" "$cluster" || true
  if ((status == 0)) && [[ -z ${SLURM_CHECK_DIR:-} ]]; then rm -rf "$work"; fi
  ((status == 0)) || echo "check.sh: FAILED; the files are in $work" >&2
}
trap teardown EXIT
bash "$root/ci/slurm/start.sh" "$cluster"
export SLURM_CONF=$cluster/slurm.conf

fail() {
  echo "check.sh: $*" >&2
  squeue >&2 || true
  exit 1
}

# Waits until none of the jobs (ids as arguments) is queued any more, at most $limit s.
wait_for() {
  local deadline=$((SECONDS + limit)) ids
  ids=$(IFS=,; echo "$*")
  while [[ -n $(squeue -h -j "$ids" 2> /dev/null) ]]; do
    ((SECONDS < deadline)) || fail "jobs $ids still queued after ${limit}s"
    sleep 1
  done
}

# Every job (and array task) of the ids ended COMPLETED with exit code 0.
completed() {
  local id states
  for id in "$@"; do
    states=$(scontrol -o show job "$id" | grep -o 'JobState=[A-Z_]* .*ExitCode=[0-9:]*' |
      sed 's/JobState=\([A-Z_]*\).*ExitCode=\([0-9:]*\)/\1 \2/')
    [[ -n $states ]] || fail "job $id unknown to slurmctld"
    if grep -qv '^COMPLETED 0:0$' <<< "$states"; then
      fail "job $id did not complete: $(tr '\n' ' ' <<< "$states")"
    fi
  done
}

# The number of lines of FILE matching the extended regex RE (0 when none).
count() { grep -cE "$2" "$1" || true; }

flags=(--depths "20,32" --seeds 2 --width 4 --epochs 2 --data-dir "$work/data" --device cpu)

echo "== 1. a job array of 4 runs"
"$train" reproduce "${flags[@]}" --out "$work/array" --slurm --submit -- --cpus-per-task=1 |
  tee "$work/array-submit.log"
read -r array report < <(sed -n 's/^submitted job array \([0-9]*\) .* and job \([0-9]*\),.*/\1 \2/p' \
  "$work/array-submit.log") || true
[[ -n ${report:-} ]] || fail "no job ids in the output of --slurm --submit"
wait_for "$array" "$report"
completed "$array" "$report"
folder=$work/array/cifar10
for stem in resnet20-seed0 resnet20-seed1 resnet32-seed0 resnet32-seed1; do
  rows=$(($(wc -l < "$folder/$stem.csv") - 1))
  ((rows == 2)) || fail "$stem.csv has $rows epochs, not 2"
done
for n in 1 2 3 4; do
  log=$folder/logs/run-$n.log
  (($(count "$log" '^epoch +[12]/2 ') == 2)) || fail "run $n did not train exactly 2 epochs: $(cat "$log")"
done
table=$folder/table.md
(($(count "$table" '^\| (20|32) \| .*\(2 seeds: ') == 2)) || fail "table incomplete: $(cat "$table")"
grep -q 'running\|not run yet' "$table" && fail "table not final: $(cat "$table")"
grep -q '^4 of 4 runs done' "$folder/logs/report.log" || fail "the report job: $(cat "$folder/logs/report.log")"
echo "-- the 4-run array printed:"
cat "$folder"/logs/run-{1,2,3,4}.log "$folder/logs/report.log"
echo "ok: 4 runs of exactly 2 epochs each, and a complete table ($SECONDS s so far)"

echo "== 2. a run stopped twice in the middle: its time limit's signal, then a requeue"
"$train" reproduce --depths 20 --seeds 1 --width 4 --epochs 2 --data-dir "$work/data" \
  --device cpu --out "$work/requeue" --slurm --submit -- --cpus-per-task=1 > "$work/requeue-submit.log"
read -r job report < <(sed -n 's/^submitted job array \([0-9]*\) .* and job \([0-9]*\),.*/\1 \2/p' \
  "$work/requeue-submit.log") || true
[[ -n ${report:-} ]] || fail "no job ids in $(cat "$work/requeue-submit.log")"
folder=$work/requeue/cifar10
log=$folder/logs/run-1.log
deadline=$((SECONDS + limit))
# Waits until the task is back in the queue (requeued), then lets it start: a requeued job
# otherwise waits ~2 minutes.
restart() {
  until [[ $(squeue -h -j "${job}_1" -o %T 2> /dev/null) == PENDING ]]; do
    ((SECONDS < deadline)) || fail "task ${job}_1 is not back in the queue after ${limit}s"
    sleep 0.2
  done
  # Not within the second its last attempt's credential was revoked (slurmd would refuse the
  # new one: "Job credential revoked").
  sleep 2
  scontrol update jobid="${job}_1" StartTime=now
}
# (a) What --signal=B:TERM@120 does before the time limit: SIGTERM to the batch script only,
# which passes it on, and requeues the task when the run exits 75. Sent in epoch 1.
until grep -q '^training resnet20' "$log" 2> /dev/null; do
  ((SECONDS < deadline)) || fail "run 1 did not start within ${limit}s"
  sleep 0.1
done
sleep 1
scancel --batch --signal=TERM "${job}_1"
restart
# (b) A requeue by Slurm (as preemption does): SIGTERM to every process of the task. Sent in
# epoch 2, once the second attempt has saved epoch 1.
until [[ -f $folder/resnet20-seed0.csv ]] && (($(count "$log" '^training resnet20') == 2)); do
  ((SECONDS < deadline)) || fail "the second attempt saved no epoch within ${limit}s"
  sleep 0.1
done
scontrol requeue "${job}_1"
restart
wait_for "$job" "$report"
completed "$job" "$report"
cat "$log"
(($(count "$log" '^stopped by SIGTERM after ') == 2)) || fail "run 1 was not stopped twice"
(($(count "$log" '^== run 1 saved where it stopped') == 2)) || fail "the task did not see status 75 twice"
(($(count "$log" '^resumed from ') == 2)) || fail "the requeued task did not resume the run twice"
grep -q 'attempt 3$' "$log" || fail "no third attempt in the log"
python3 "$root/ci/slurm/same_run.py" "$folder/resnet20-seed0.safetensors" \
  "$work/array/cifar10/resnet20-seed0.safetensors"
echo "ok: $(grep -o '^stopped by SIGTERM after [^:]*' "$log" | paste -sd ';' -), resumed each" \
  "time, and equal to the uninterrupted run ($SECONDS s so far)"

echo "== 3. two reproductions on one folder at once"
cmd=$(printf '%q ' "$train" reproduce "${flags[@]}" --out "$work/twice")
first=$(sbatch --parsable --cpus-per-task=1 --output="$work/twice-a.log" --wrap "$cmd")
second=$(sbatch --parsable --cpus-per-task=1 --output="$work/twice-b.log" --wrap "$cmd")
wait_for "$first" "$second"
completed "$first" "$second"
for n in 1 2 3 4; do
  by=""
  for x in a b; do
    # The epoch lines of run n's section in job x's log.
    epochs=$(awk -v n="$n" '/^== run /{on = ($3 == n)} on && /^epoch +[12]\/2 /{k++} END{print k+0}' \
      "$work/twice-$x.log")
    ((epochs == 0)) || by="$by $x:$epochs"
  done
  [[ $by == " a:2" || $by == " b:2" ]] || fail "run $n trained by:$by (epochs per job)"
  echo "run $n trained by job${by%:2}"
done
skips=$(cat "$work/twice-a.log" "$work/twice-b.log" | count /dev/stdin ': skipped, .* is training it ==$')
((skips > 0)) || fail "the two jobs never met at a run: nothing was tested"
grep -h '4 of 4 runs done\|skipped' "$work/twice-a.log" "$work/twice-b.log"
(($(count "$work/twice/cifar10/table.md" '\(2 seeds: ') == 2)) || fail "table incomplete"
echo "ok: each run trained once, $skips skipped as another's ($SECONDS s so far)"

echo "check.sh: all Slurm checks passed in ${SECONDS}s"
