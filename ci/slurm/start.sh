#!/usr/bin/env bash
# Starts a single-node Slurm cluster (munged, slurmctld, slurmd) whose every file is in DIR:
# `ci/slurm/start.sh DIR`, then `export SLURM_CONF=DIR/slurm.conf` for sbatch, squeue, ...
# `ci/slurm/stop.sh DIR` tears it down. Needs root and Debian's packages:
# apt-get install -y slurmctld slurmd slurm-client munge
# Ports: SLURM_CI_PORT (slurmctld, default 16817) and the next one (slurmd).
set -euo pipefail
dir=${1:?usage: start.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"/{state,spool,log,munge}
dir=$(cd "$dir" && pwd)
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" > /dev/null ||
    { echo "start.sh: $tool is missing (apt-get install -y slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
port=${SLURM_CI_PORT:-16817}
host=$(hostname -s)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
[[ -f $dir/munge/munge.key ]] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$dir/munge"
chmod 600 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed"
sed -e "s|@DIR@|$dir|g" -e "s|@HOST@|$host|g" -e "s|@CPUS@|$(nproc)|g" -e "s|@MEM@|$mem_mb|g" \
  -e "s|@CTLD_PORT@|$port|g" -e "s|@SLURMD_PORT@|$((port + 1))|g" \
  "$here/slurm.conf.in" > "$dir/slurm.conf"
export SLURM_CONF=$dir/slurm.conf
slurmctld -i
slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2> /dev/null | grep -q idle; then
    sinfo
    exit 0
  fi
  sleep 0.5
done
echo "start.sh: the node did not come up within 30 s; slurmctld and slurmd logs:" >&2
tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
exit 1
