#!/usr/bin/env bash
# A real single-node Slurm (Debian's slurm-wlm + munge) runs the deploy recipe
# deploy/slurm/fashion-mnist.sbatch with a small job: 2 tasks, srun starting
# `loom train` on each (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID), and the
# final weights equal the same job under `loom launch --workers 2`, bit for bit.
#
# The test runs its own single-node Slurm in a temporary directory
# (slurm_cluster.sh: munged, slurmctld and slurmd, stopped on exit).
# Usage: slurm.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
source "$here/slurm_cluster.sh"
repo=$(cd "$here/../../.." && pwd)
slurm_start

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
slurm_stop
[ "$failures" -eq 0 ] && echo "Slurm: all checks passed"
exit "$failures"
