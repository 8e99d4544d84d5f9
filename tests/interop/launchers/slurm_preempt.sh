#!/usr/bin/env bash
# Preemption under a real single-node Slurm (slurm_cluster.sh): the deploy
# recipe deploy/slurm/fashion-mnist.sbatch runs the Fashion-MNIST MLP on 2
# tasks with a 1-minute time limit (--time=1, the smallest) and Slurm's
# warning signal before it (--signal=TERM@20). The job is longer than one time
# limit, so: Slurm signals the tasks, `loom train` finishes its step, writes a
# checkpoint and exits 75, the recipe requeues the job, and the next run
# resumes from the checkpoint (--resume), until it finishes. Checked: the
# warning signal was sent, each run but the last ended with status 75 and a
# requeue, each later run resumed at the step the one before stopped at, the
# job completed, and its final weights equal those of the same job run
# undisturbed (`loom train --workers 2`, [distributed] deterministic), bit for bit.
#
# Timing: Slurm checks time limits and warning signals every 30 s and sends
# the signal when it is within sig_time + 30 s of the limit, so a run of
# --time=1 --signal=TERM@20 trains 10-40 s before the signal (and then has
# 20 s or more before the limit). The job's length is measured here (about
# 60 s of training for 2 workers on this machine, half as much again as a
# first run can have), so it needs 2 to 4 runs. slurm.conf: cred_expire=5 (a
# requeued job may start again 6 s later instead of 121 s) and
# sched_interval=2 (the scheduler sees it then, not up to 60 s later).
# Usage: slurm_preempt.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
source "$here/slurm_cluster.sh"
repo=$(cd "$here/../../.." && pwd)
mlp="$repo/examples/fashion_mnist/mlp.toml"
data=$(sed -n 's/^root = "\(.*\)"/\1/p' "$mlp")
[ -f "$data/train-images-idx3-ubyte.gz" ] || skip "no Fashion-MNIST in $data (scripts/setup: dataset-fashion-mnist)"

# The job, the same in every run compared: deterministic all-reduce (resume
# is exact), a checkpoint every 500 steps besides the one at the stop.
sets=(--set distributed.deterministic=true --set train.epochs=1000 --set train.checkpoint_every_steps=500
      --set train.checkpoint_keep=3)

# The job's length: about 60 s of training at this machine's pace, half as
# much again as the 40 s a first run can have before the signal: 2000 steps
# timed, less the time of 1 step (start-up, loading the data, evaluating).
# At least 14000 steps, 48 s at the best pace of a 2-core test machine (about
# 290 steps/s), in case it was busy while timed and is idle later.
time_steps() {  # time_steps N: sets $elapsed, the seconds N steps took
  local begin
  begin=$(date +%s.%N)
  timeout 120 "$loom" train "$mlp" --workers 2 "${sets[@]}" --set train.max_steps="$1" \
    --checkpoint-dir "$tmp/pace-$1" >"$tmp/pace-$1.log" 2>&1 ||
    { fail "loom train --workers 2 ($1 steps, to time) failed"; tail -5 "$tmp/pace-$1.log"; exit 1; }
  elapsed=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$begin" "$(date +%s.%N)")
}
time_steps 1
one=$elapsed
time_steps 2000
rate=$(python3 -c "import sys; print(round(1999 / max(0.5, float(sys.argv[2]) - float(sys.argv[1]))))" "$one" "$elapsed")
steps=$(python3 -c "import sys; print(max(14000, min(50000, round(60 * int(sys.argv[1]) / 100) * 100)))" "$rate")
sets+=(--set train.max_steps=$steps)
echo "ok   the job: $steps steps of the Fashion-MNIST MLP on 2 workers (timed: $rate steps/s)"

# The reference: the same job undisturbed, outside Slurm.
timeout 400 "$loom" train "$mlp" --workers 2 "${sets[@]}" --checkpoint-dir "$tmp/ref-ckpt" \
  --save-final "$tmp/ref.safetensors" >"$tmp/ref.log" 2>&1 ||
  { fail "loom train --workers 2 (the reference) failed"; tail -5 "$tmp/ref.log"; }

slurm_start "AuthInfo=socket=$s/munge/sock,cred_expire=5" "SchedulerParameters=sched_interval=2" \
  "JobRequeue=1" "SlurmctldDebug=debug"

# The recipe with sbatch's options for this machine: 2 tasks of 1 CPU, a
# 1-minute limit and the signal 20 s (+30 s, +Slurm's resolution) before it.
export LOOM="$loom" MASTER_PORT=$(free_port)
jid=$(cd "$tmp" && sbatch --parsable --ntasks=2 --cpus-per-task=1 --time=1 --signal=TERM@20 \
        --output="$tmp/sbatch-%j.out" "$repo/deploy/slurm/fashion-mnist.sbatch" \
        "$mlp" "${sets[@]}" --save-final "$tmp/slurm.safetensors" 2>"$tmp/sbatch.err")
[ -n "$jid" ] || { fail "sbatch: $(cat "$tmp/sbatch.err")"; exit 1; }
out="$tmp/sbatch-$jid.out"

# Until it has finished (each run at most 90 s: the limit, then 30 s to the
# next time-limit check; each requeue 6-10 s), or 7 minutes.
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$info" | head -1; }
state=""
for _ in $(seq 840); do
  info=$(scontrol show job "$jid" 2>/dev/null)
  state=$(field JobState)
  case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) break ;; esac
  sleep 0.5
done
restarts=$(field Restarts)
echo "     job $jid: $state, exit code $(field ExitCode), restarts $restarts"
if [ "$state" = COMPLETED ]; then
  echo "ok   the job completed"
else
  fail "the job ended $state (or had not ended after 7 minutes), not COMPLETED"
  cat "$out"; tail -20 "$s/slurmctld.log"
fi

# Slurm sent the warning signal (slurmctld's debug log says so).
signals=$(grep -c "warning signal 15 to JobId=$jid" "$s/slurmctld.log")
[ "$signals" -ge 1 ] && echo "ok   Slurm sent SIGTERM before the time limit (warning signals: $signals)" ||
  fail "no warning signal in slurmctld's log"

# Each run but the last: status 75 and a requeue; the next resumes where it stopped.
runs=$(grep -c "^loom-fmnist: job $jid run " "$out")
stops=$(grep -c "stopped at a checkpoint (status 75); requeueing" "$out")
mapfile -t resumed < <(sed -n 's/^resuming at step \([0-9]*\)$/\1/p' "$out")
if [ "${restarts:-0}" -ge 1 ] && [ "$runs" -eq $((restarts + 1)) ] && [ "$stops" -eq "$restarts" ]; then
  echo "ok   $runs runs: each but the last exited 75 and was requeued (Restarts=$restarts)"
else
  fail "runs $runs, status-75 requeues $stops, Restarts=${restarts:-?}: expected 2 or more runs, each but the last requeued"
  [ "$runs" -eq 1 ] && [ "$state" = COMPLETED ] &&
    echo "     (the job finished within its first minute: this machine ran faster than it was timed; nothing was preempted)"
  cat "$out"
fi
# Each resumed step is the one the run before stopped at on the signal, and
# they increase; no later run started afresh.
resumes_ok=1
prev=0
for n in "${resumed[@]}"; do
  [ "$n" -gt "$prev" ] && [ "$n" -lt "$steps" ] && grep -q "^stopped by signal 15 at step $n\b" "$out" || resumes_ok=0
  prev=$n
done
if [ "${#resumed[@]}" -eq "$stops" ] && [ "$stops" -ge 1 ] && [ "$resumes_ok" -eq 1 ] &&
   ! sed -n "/^loom-fmnist: job $jid run 2 /,\$p" "$out" | grep -q "starting fresh"; then
  echo "ok   each requeued run resumed at the step the one before stopped at on SIGTERM (${resumed[*]})"
else
  fail "the requeued runs did not each resume where the one before stopped (resumed at: ${resumed[*]:-none})"
  grep -E "^loom-fmnist|resuming|starting fresh|stopped by" "$out"
fi
ls "$tmp/ckpt-$jid"/ckpt-*.safetensors >/dev/null 2>&1 && echo "ok   checkpoints in ckpt-$jid" ||
  fail "no checkpoint in $tmp/ckpt-$jid"

# The weights after preemption and resume equal the undisturbed run's.
if weights_equal "$tmp/ref.safetensors" "$tmp/slurm.safetensors"; then
  echo "ok   final weights after $restarts preemptions bitwise equal to the undisturbed loom train --workers 2"
else
  fail "final weights after preemption differ from the undisturbed run's (or are missing)"
  [ -f "$tmp/diff" ] && tail -3 "$tmp/diff"
fi

slurm_stop
[ "$failures" -eq 0 ] && echo "Slurm preemption: all checks passed"
exit "$failures"
