#!/usr/bin/env bash
# Tears down the cluster `ci/slurm/start.sh DIR` started, whatever state it is in: cancels every
# job and waits for them, ends the processes of jobs still running, then slurmd, slurmctld and
# munged, each by the pid it recorded. Never fails.
dir=${1:?usage: stop.sh DIR}
export SLURM_CONF=$dir/slurm.conf
pid_of() { [[ -s $1 ]] && cat "$1"; }
alive() { [[ -n $1 ]] && kill -0 "$1" 2> /dev/null; }
if [[ -f $SLURM_CONF ]] && alive "$(pid_of "$dir/slurmctld.pid")"; then
  scancel --full --quiet --user="$(id -un)" 2> /dev/null || true
  for _ in $(seq 1 30); do
    [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING,CONFIGURING 2> /dev/null) ]] && break
    sleep 0.5
  done
  # Processes of jobs that did not end (slurmstepd outlives slurmd): by their ids.
  jobpids=$(scontrol listpids 2> /dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}')
fi
for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
  pid=$(pid_of "$f") || continue
  alive "$pid" && kill -TERM "$pid"
  for _ in $(seq 1 20); do alive "$pid" || break; sleep 0.25; done
  alive "$pid" && kill -KILL "$pid"
done
for pid in ${jobpids:-}; do
  alive "$pid" && kill -KILL "$pid"
done
echo "stop.sh: the cluster in $dir is down"
exit 0
