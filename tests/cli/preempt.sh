#!/usr/bin/env bash
# Preemption with real processes: SIGTERM at a random moment (mid-step,
# mid-all-reduce, mid-checkpoint-write: checkpoints are written every few
# steps, in the background) makes the job finish its step, checkpoint and
# exit 75; `--resume` then finishes it with final weights bitwise equal to an
# undisturbed run's:
#  1. one process;
#  2. all-reduce, 2 workers (deterministic), the signal to the launcher;
#  3. all-reduce, 2 workers, the signal to worker 1 only: every rank agrees on the step;
#  4. dist_sync on a parameter server, 2 workers (deterministic), the signal to the launcher;
#  5. a 2-stage pipeline (deterministic), the signal to the launcher;
#  6. dist_async: stops with 75 and resumes (no bitwise claim: pushes apply as they come);
#  7. a second signal (SIGINT right after SIGTERM; checkpoints every step) exits at once (143 or 130)
#     leaving no temporary file; the job resumes
#     from the last complete checkpoint and still ends bitwise equal.
# Usage: preempt.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

python3 "$(dirname "$0")/synthetic_idx.py" "$tmp" 2048
sed "s#@ROOT@#$tmp#" "$(dirname "$0")/preempt_job.toml" >"$tmp/job.toml"

same() {
  local d
  d=$("$loom" inspect --diff "$1" "$2" | tail -1)
  echo "$d" | grep -q '"max_abs_diff": 0, "max_rel_diff": 0, "mismatched_tensors": 0' || { echo "$d"; return 1; }
}
# The pid of worker RANK of the job whose checkpoint dir is $1.
worker_pid() {
  pgrep -f "loom train $tmp/job.toml.*$1" | while read -r p; do
    tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | grep -q "^LOOM_RANK=$2\$" && echo "$p"; done | head -1
}
# A random delay in [lo, hi) seconds, tenths.
delay() { awk -v lo="$1" -v hi="$2" -v r="$RANDOM" 'BEGIN { printf "%.1f", lo + (hi - lo) * r / 32768 }'; }

now() { date +%s.%N; }

# check_case NAME SIGNAL_TARGET(launcher|worker1) -- ARGS...: an undisturbed run, then the same run
# signalled at a random moment between 20% and 80% of the undisturbed run's time, then resumed.
check_case() {
  local name="$1" target="$2"; shift 3
  local ck="$tmp/ck_$name" t0 took
  t0=$(now)
  timeout 300 "$loom" train "$tmp/job.toml" "$@" --checkpoint-dir "$tmp/ref_$name" \
    --save-final "$tmp/ref_$name.safetensors" >"$tmp/ref_$name.out" 2>&1 || { fail "$name: undisturbed run failed"; tail -5 "$tmp/ref_$name.out"; return; }
  took=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
  local pid t status
  timeout 300 "$loom" train "$tmp/job.toml" "$@" --checkpoint-dir "$ck" --save-final "$tmp/$name.safetensors" \
    >"$tmp/$name.out" 2>&1 &
  pid=$!; pids+=("$pid")
  t=$(delay "$(awk -v d="$took" 'BEGIN { print 0.2 * d }')" "$(awk -v d="$took" 'BEGIN { print 0.8 * d }')")
  sleep "$t"
  if [ "$target" = worker1 ]; then
    local w; w=$(worker_pid "$ck" 1)
    [ -n "$w" ] || { fail "$name: no worker 1 found"; wait "$pid"; return; }
    kill -TERM "$w"
  else
    kill -TERM "$pid"
  fi
  wait "$pid"; status=$?
  if [ "$status" -ne 75 ]; then
    fail "$name: exit status $status after SIGTERM at ${t}s (want 75)"; tail -5 "$tmp/$name.out"; return
  fi
  # The rank that got the signal says so; the others stopped "by request" of the vote, at the same step.
  local stopped; stopped=$(grep -Eo "stopped by (signal 15|request) at step [0-9]*" "$tmp/$name.out" | head -1)
  [ -n "$stopped" ] || { fail "$name: no 'stopped by ... at step N' line"; tail -5 "$tmp/$name.out"; return; }
  ls "$ck"/.*tmp* >/dev/null 2>&1 && fail "$name: a temporary file was left in the checkpoint dir"
  timeout 300 "$loom" train "$tmp/job.toml" "$@" --checkpoint-dir "$ck" --resume \
    --save-final "$tmp/$name.safetensors" >"$tmp/$name.resumed" 2>&1 || { fail "$name: the resumed run failed"; tail -5 "$tmp/$name.resumed"; return; }
  grep -q "resuming at step" "$tmp/$name.resumed" || fail "$name: the resumed run did not resume"
  if [ "${bitwise:-1}" = 1 ]; then
    if same "$tmp/ref_$name.safetensors" "$tmp/$name.safetensors"; then
      echo "ok   $name: SIGTERM at ${t}s -> exit 75, $stopped; resumed bit for bit"
    else
      fail "$name: resumed weights differ from the undisturbed run's"
    fi
  else
    echo "ok   $name: SIGTERM at ${t}s -> exit 75, $stopped; resumed and finished"
  fi
}

# 1-6.
check_case local launcher --
check_case allreduce launcher -- --workers 2 --set distributed.mode=allreduce --set distributed.deterministic=true
check_case allreduce_one_rank worker1 -- --workers 2 --set distributed.mode=allreduce --set distributed.deterministic=true
check_case dist_sync launcher -- --workers 2 --set distributed.mode=dist_sync --set distributed.servers=1 \
  --set distributed.deterministic=true
check_case pipeline launcher -- --workers 2 --set distributed.mode=pipeline --set distributed.stages=2 \
  --set train.microbatches=2 --set distributed.deterministic=true
bitwise=0 check_case dist_async launcher -- --workers 2 --set distributed.mode=dist_async --set distributed.servers=1

# 7. Two signals: at once, nothing half-written; the job resumes from the last whole checkpoint.
ck="$tmp/ck_twice"
timeout 300 "$loom" train "$tmp/job.toml" --checkpoint-dir "$ck" --set train.checkpoint_every_steps=1 \
  --set train.checkpoint_keep=100 >"$tmp/twice.out" 2>&1 &
pid=$!; pids+=("$pid")
sleep "$(delay 1 3)"
child=$(pgrep -P "$pid" | head -1)  # loom itself: `timeout` passes on only the first signal
kill -TERM "$child"; kill -INT "$child"  # (the same signal twice within 1 s would be one request)
wait "$pid"; status=$?
# 128 + the first signal taken: pending signals are taken lowest number first, so INT (130) may come before TERM.
if [ "$status" -ne 143 ] && [ "$status" -ne 130 ]; then
  fail "twice: exit status $status (want 143 or 130: the second signal ends it at once)"
else
  ls -A "$ck" | grep -q 'tmp' && fail "twice: temporary files left: $(ls -A "$ck")"
  timeout 300 "$loom" train "$tmp/job.toml" --checkpoint-dir "$ck" --resume --set train.checkpoint_every_steps=1 \
    --set train.checkpoint_keep=100 --save-final "$tmp/twice.safetensors" >"$tmp/twice.resumed" 2>&1 \
    || fail "twice: resume failed: $(tail -2 "$tmp/twice.resumed")"
  if same "$tmp/ref_local.safetensors" "$tmp/twice.safetensors"; then
    echo "ok   twice: exit $status, no temporary file, $(grep -o 'resuming at step [0-9]*' "$tmp/twice.resumed"), bit for bit"
  else
    fail "twice: resumed weights differ"
  fi
fi

[ "$failures" -eq 0 ] && echo "all preemption checks passed" || echo "$failures preemption check(s) failed"
exit $((failures > 0))
