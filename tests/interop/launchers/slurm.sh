#!/usr/bin/env bash
# A real single-node Slurm (Debian's slurm-wlm + munge) runs the deploy recipe
# deploy/slurm/fashion-mnist.sbatch with a small job: 2 tasks, srun starting
# `loom train` on each (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID), and the
# final weights equal the same job under `loom launch --workers 2`, bit for bit.
#
# The test runs its own munged and slurmctld + slurmd, all in a temporary
# directory: a fresh munge key and socket (slurm.conf's AuthInfo=socket=...),
# ports it picks, state, spool, logs and pid files there; no cgroups
# (proctrack/linuxproc, task/none). A system munged or Slurm, if any, is not
# touched. Every daemon is stopped on exit.
# Usage: slurm.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
repo=$(cd "$here/../../.." && pwd)
for tool in munged slurmctld slurmd sbatch sinfo scontrol srun; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || skip "no $tool (slurm-wlm, munge; run scripts/setup)"
done
PATH=$PATH:/usr/sbin
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root (SlurmUser=root here)"
node=$(hostname -s)
# The recipe's MASTER_ADDR is the first node's name, as on a cluster; a bare
# root (chroot, minimal container) may not resolve its own name.
getent hosts "$node" >/dev/null || skip "host name $node does not resolve (the recipe uses it as MASTER_ADDR)"

s="$tmp/slurm"
steps_before=$(pgrep -x slurmstepd | wc -l)
mkdir -p "$s/state" "$s/spool" "$s/munge"
chmod 700 "$s/munge"

# Daemons: stopped (TERM, then KILL after 10 s) before common.sh removes $tmp;
# if this script is killed outright, `timeout` ends them after 10 minutes.
limit="timeout -s TERM 600"
daemons=()
stop_daemons() {
  for p in "${daemons[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${daemons[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    pkill -9 -P "$p" 2>/dev/null  # the daemon under `timeout`, if TERM did not end it
    kill -9 "$p" 2>/dev/null
  done
  daemons=()
}
trap 'stop_daemons; common_cleanup' EXIT

# munge: a key of its own and a socket in the temp dir.
dd if=/dev/urandom of="$s/munge/key" bs=1024 count=1 status=none
chmod 400 "$s/munge/key"
$limit munged --foreground --force --key-file="$s/munge/key" --socket="$s/munge/sock" --pid-file="$s/munge/pid" \
  --log-file="$s/munge/log" --seed-file="$s/munge/seed" >"$s/munged.out" 2>&1 &
daemons+=($!)
for _ in $(seq 100); do [ -S "$s/munge/sock" ] && break; sleep 0.1; done
[ -S "$s/munge/sock" ] || { fail "munged did not start"; cat "$s/munged.out" "$s/munge/log"; exit 1; }

ctld_port=$(free_port)
slurmd_port=$(free_port)
# Slurm's CPUs, at least the 2 the job asks for (config_overrides: slurmd believes
# the configuration, as on a test node). Not `nproc`: it honours OMP_NUM_THREADS.
cpus=$(getconf _NPROCESSORS_ONLN)
[ "$cpus" -ge 2 ] || cpus=2
cat >"$s/slurm.conf" <<CONF
ClusterName=loomtest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$s/munge/sock
CredType=cred/munge
StateSaveLocation=$s/state
SlurmdSpoolDir=$s/spool
SlurmctldPidFile=$s/slurmctld.pid
SlurmdPidFile=$s/slurmd.pid
SlurmctldLogFile=$s/slurmctld.log
SlurmdLogFile=$s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 State=UNKNOWN
PartitionName=loomtest Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$s/slurm.conf"
$limit slurmctld -D -i >"$s/slurmctld.out" 2>&1 &
daemons+=($!)
$limit slurmd -D -N "$node" >"$s/slurmd.out" 2>&1 &
daemons+=($!)

# Ready when the node is idle (slurmd registered with slurmctld).
state=""
for _ in $(seq 300); do
  state=$(timeout 5 sinfo -h -n "$node" -o %t 2>/dev/null)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  fail "Slurm node $node not idle after 60 s (state '$state')"
  tail -5 "$s"/*.log "$s"/*.out
  exit 1
fi
echo "ok   Slurm up: node $node idle, slurmctld :$ctld_port, slurmd :$slurmd_port, munge $s/munge/sock"

reference "$tmp/ref.safetensors" --workers 2

# The recipe as it is, with sbatch's own options overriding its #SBATCH lines
# for this machine: 2 tasks of 1 CPU. The job and its options are the
# script's arguments; LOOM, MASTER_PORT and the secret come with the
# environment (sbatch exports it by default).
export LOOM="$loom" MASTER_PORT=$(free_port)
(cd "$tmp" && timeout 120 sbatch --wait --ntasks=2 --cpus-per-task=1 --output="$tmp/sbatch-%j.out" \
   "$repo/deploy/slurm/fashion-mnist.sbatch" "$job" --save-final "$tmp/slurm.safetensors" >"$tmp/sbatch.log" 2>&1)
status=$?
if [ "$status" -ne 0 ]; then
  fail "sbatch --wait: status $status"; cat "$tmp/sbatch.log" "$tmp"/sbatch-*.out; tail -20 "$s/slurmd.log"
fi
same_weights "$tmp/ref.safetensors" "$tmp/slurm.safetensors" "sbatch deploy/slurm/fashion-mnist.sbatch (srun, 2 tasks)"
ls "$tmp"/ckpt-* >/dev/null 2>&1 && echo "ok   the recipe wrote its checkpoints ($(ls -d "$tmp"/ckpt-*))" ||
  fail "no checkpoint directory from the recipe"

check_comparison_fails "$tmp/slurm.safetensors" --workers 2
started=("${daemons[@]}")
stop_daemons
left=0
for p in "${started[@]}"; do kill -0 "$p" 2>/dev/null && left=$((left + 1)); done
# slurmstepd (one per step) exits on its own shortly after its step: wait up to 15 s.
for _ in $(seq 150); do
  steps=$(pgrep -x slurmstepd | wc -l)
  [ "$steps" -le "$steps_before" ] && break
  sleep 0.1
done
[ "$left" -eq 0 ] && [ "$steps" -le "$steps_before" ] && echo "ok   munged, slurmctld, slurmd stopped, no slurmstepd left" ||
  fail "$left daemons and $((steps - steps_before)) slurmstepd left after stopping"
[ "$failures" -eq 0 ] && echo "Slurm: all checks passed"
exit "$failures"
