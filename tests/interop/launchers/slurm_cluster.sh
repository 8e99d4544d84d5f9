# A real single-node Slurm (Debian's slurm-wlm + munge) for the Slurm launcher
# tests (sourced after common.sh): its own munged, slurmctld and slurmd, all in
# $tmp/slurm: a fresh munge key and socket (slurm.conf's AuthInfo=socket=...),
# ports it picks, state, spool, logs and pid files there; no cgroups
# (proctrack/linuxproc, task/none). A system munged or Slurm, if any, is not
# touched. Every daemon is stopped on exit.
#
#   source "$(dirname "$0")/common.sh" "$1"
#   source "$here/slurm_cluster.sh"         # skips (77) without slurm-wlm, munge, root or a resolvable host name
#   slurm_start "JobRequeue=1"              # settings replace slurm.conf's of the same key; waits for the node
#   sbatch ...                              # SLURM_CONF is exported; $s is the Slurm directory, $node the node
#   slurm_stop                              # stops the daemons, checks none (nor a slurmstepd) is left
for tool in munged slurmctld slurmd sbatch sinfo squeue scontrol scancel srun; do
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
# if the test is killed outright, `timeout` ends them after 10 minutes.
limit="timeout -s TERM 600"
daemons=()
stop_daemons() {
  # A job still running or requeued (a failed test) first, so that no
  # slurmstepd or task outlives slurmd: SIGKILL to all its processes, then up
  # to 10 s for them to end.
  if [ -n "${SLURM_CONF:-}" ] && [ -n "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]; then
    timeout 5 scancel --user="$(id -un)" --full --signal=KILL 2>/dev/null
    timeout 5 scancel --user="$(id -un)" 2>/dev/null
    for _ in $(seq 100); do [ "$(pgrep -x slurmstepd | wc -l)" -le "$steps_before" ] && break; sleep 0.1; done
  fi
  for p in "${daemons[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${daemons[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    pkill -9 -P "$p" 2>/dev/null  # the daemon under `timeout`, if TERM did not end it
    kill -9 "$p" 2>/dev/null
  done
  daemons=()
}
trap 'stop_daemons; common_cleanup' EXIT

# slurm_start [KEY=VALUE...]: munged, then slurmctld and slurmd with this
# machine's slurm.conf, the given settings replacing its lines of the same key.
slurm_start() {
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
  # Slurm's CPUs, at least the 2 the jobs ask for (config_overrides: slurmd believes
  # the configuration, as on a test node). Not `nproc`: it honours OMP_NUM_THREADS.
  local cpus
  cpus=$(getconf _NPROCESSORS_ONLN)
  [ "$cpus" -ge 2 ] || cpus=2
  local settings=(
    "ClusterName=loomtest"
    "SlurmctldHost=$node(127.0.0.1)"
    "SlurmUser=root"
    "SlurmdUser=root"
    "SlurmctldPort=$ctld_port"
    "SlurmdPort=$slurmd_port"
    "AuthType=auth/munge"
    "AuthInfo=socket=$s/munge/sock"
    "CredType=cred/munge"
    "StateSaveLocation=$s/state"
    "SlurmdSpoolDir=$s/spool"
    "SlurmctldPidFile=$s/slurmctld.pid"
    "SlurmdPidFile=$s/slurmd.pid"
    "SlurmctldLogFile=$s/slurmctld.log"
    "SlurmdLogFile=$s/slurmd.log"
    "ProctrackType=proctrack/linuxproc"
    "TaskPlugin=task/none"
    "SelectType=select/cons_tres"
    "SelectTypeParameters=CR_CPU"
    "SwitchType=switch/none"
    "MpiDefault=none"
    "JobAcctGatherType=jobacct_gather/none"
    "AccountingStorageType=accounting_storage/none"
    "SlurmdParameters=config_overrides"
    "ReturnToService=2"
  )
  local extra line key i
  for extra in "$@"; do
    key=${extra%%=*}
    for i in "${!settings[@]}"; do [ "${settings[$i]%%=*}" = "$key" ] && unset 'settings[i]'; done
    settings+=("$extra")
  done
  {
    for line in "${settings[@]}"; do echo "$line"; done
    echo "NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 State=UNKNOWN"
    echo "PartitionName=loomtest Nodes=$node Default=YES MaxTime=INFINITE State=UP"
  } >"$s/slurm.conf"
  export SLURM_CONF="$s/slurm.conf"
  $limit slurmctld -D -i >"$s/slurmctld.out" 2>&1 &
  daemons+=($!)
  $limit slurmd -D -N "$node" >"$s/slurmd.out" 2>&1 &
  daemons+=($!)

  # Ready when the node is idle (slurmd registered with slurmctld).
  local state=""
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
}

# slurm_stop: the daemons stopped, and none of them nor a slurmstepd left.
slurm_stop() {
  local started=("${daemons[@]}") left=0 steps p
  stop_daemons
  for p in "${started[@]}"; do kill -0 "$p" 2>/dev/null && left=$((left + 1)); done
  # slurmstepd (one per step) exits on its own shortly after its step: wait up to 15 s.
  for _ in $(seq 150); do
    steps=$(pgrep -x slurmstepd | wc -l)
    [ "$steps" -le "$steps_before" ] && break
    sleep 0.1
  done
  if [ "$left" -eq 0 ] && [ "$steps" -le "$steps_before" ]; then
    echo "ok   munged, slurmctld, slurmd stopped, no slurmstepd left"
  else
    fail "$left daemons and $((steps - steps_before)) slurmstepd left after stopping"
  fi
}
