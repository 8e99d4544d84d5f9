#!/usr/bin/env bash
# Open MPI's mpirun (Debian's openmpi-bin) starts a 2-worker Loom job unchanged:
#   mpirun -np 2 -x LOOM_JOB_SECRET loom train JOB
# with no MASTER_ADDR/MASTER_PORT (all ranks on this host: Loom derives the
# coordinator from Open MPI's job id, see loom/comm/rendezvous/job_env.h); its final
# weights equal the same job under `loom launch --workers 2`, bit for bit.
# Without a secret both ranks stop with one line saying how to pass one
# (issue 10: they died with SIGSEGV and printed nothing).
# Usage: mpirun.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
mpirun=$(command -v mpirun || true)
[ -n "$mpirun" ] || skip "no mpirun (openmpi-bin; run scripts/setup)"
# Root (containers, CI) needs Open MPI's consent; --oversubscribe: 2 ranks on fewer cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=("$mpirun" --oversubscribe -np 2)

reference "$tmp/ref.safetensors" --workers 2

timeout 120 "${mpi[@]}" -x LOOM_JOB_SECRET -x OMP_NUM_THREADS "$loom" train "$job" \
  --save-final "$tmp/mpirun.safetensors" >"$tmp/mpirun.log" 2>&1 ||
  { fail "mpirun: exit status $?"; tail -20 "$tmp/mpirun.log"; }
same_weights "$tmp/ref.safetensors" "$tmp/mpirun.safetensors" "mpirun -np 2 (coordinator derived)"

# An address given by hand is used as it is.
port=$(free_port)
MASTER_ADDR=127.0.0.1 MASTER_PORT=$port timeout 120 "${mpi[@]}" -x LOOM_JOB_SECRET -x OMP_NUM_THREADS \
  -x MASTER_ADDR -x MASTER_PORT "$loom" train "$job" --save-final "$tmp/mpirun_master.safetensors" \
  >"$tmp/mpirun_master.log" 2>&1 || { fail "mpirun -x MASTER_ADDR: exit status $?"; tail -20 "$tmp/mpirun_master.log"; }
same_weights "$tmp/ref.safetensors" "$tmp/mpirun_master.safetensors" "mpirun -np 2 -x MASTER_ADDR -x MASTER_PORT"

# No secret passed on: status 1 from mpirun, no crash, every rank says how in one line.
(unset LOOM_JOB_SECRET; timeout 60 "${mpi[@]}" "$loom" train "$job" >"$tmp/nosecret.log" 2>&1)
status=$?
lines=$(grep -c '^loom: no job secret: .*started by Open MPI (mpirun).*mpirun -x LOOM_JOB_SECRET' "$tmp/nosecret.log")
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$lines" -eq 2 ] &&
   ! grep -qiE 'segmentation|signal 11|core dumped' "$tmp/nosecret.log"; then
  echo "ok   mpirun without a secret: status $status, on each rank: $(grep -m1 '^loom:' "$tmp/nosecret.log")"
else
  fail "mpirun without a secret: status $status, $lines ranks printed the hint"; cat "$tmp/nosecret.log"
fi

check_comparison_fails "$tmp/mpirun.safetensors" --workers 2
[ "$failures" -eq 0 ] && echo "mpirun: all checks passed"
exit "$failures"
