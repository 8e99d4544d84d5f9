#!/usr/bin/env bash
# MXNet's role variables start a parameter-server Loom job unchanged: one
# scheduler, one server and two workers, each running the same command with
# the variables dmlc-tracker's "local" launcher (dmlc_tracker/local.py +
# tracker.py's PSTracker) sets: DMLC_ROLE, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT,
# DMLC_NUM_WORKER, DMLC_NUM_SERVER, and for servers and workers DMLC_TASK_ID and
# DMLC_JOB_CLUSTER=local. The scheduler is Loom's coordinator. The final
# weights (dist_sync) equal the same job under
# `loom launch --workers 2 --servers 1`, bit for bit.
# Usage: mxnet_roles.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
train_args=(--set distributed.mode=dist_sync)

reference "$tmp/ref.safetensors" --workers 2 --servers 1

# As dmlc-tracker: the scheduler first (its own thread there), then servers
# and workers together. Nobody waits for anybody: every process retries its
# connection to the scheduler until its join timeout.
export DMLC_PS_ROOT_URI=127.0.0.1 DMLC_PS_ROOT_PORT=$(free_port) DMLC_NUM_WORKER=2 DMLC_NUM_SERVER=1
start() {  # start ROLE TASK_ID LOG [extra loom train options]
  local role=$1 task=$2 log=$3; shift 3
  if [ "$role" = scheduler ]; then
    DMLC_ROLE=$role timeout 120 "$loom" train "$job" "${train_args[@]}" "$@" >"$log" 2>&1 &
  else
    DMLC_ROLE=$role DMLC_TASK_ID=$task DMLC_JOB_CLUSTER=local timeout 120 "$loom" train "$job" "${train_args[@]}" "$@" \
      >"$log" 2>&1 &
  fi
  pids+=($!)
}
start scheduler 0 "$tmp/scheduler.log"
# dmlc's local launcher numbers workers 0..W-1, then servers W..W+S-1. The
# command is the same for every role; only rank 0 writes --save-final.
start worker 0 "$tmp/worker0.log" --save-final "$tmp/mxnet.safetensors"
start worker 1 "$tmp/worker1.log" --save-final "$tmp/mxnet.safetensors"
start server 2 "$tmp/server.log" --save-final "$tmp/mxnet.safetensors"
statuses=""
for p in "${pids[@]}"; do wait "$p"; statuses="$statuses $?"; done
pids=()
if [ "$statuses" = " 0 0 0 0" ]; then
  echo "ok   DMLC_ROLE scheduler, server and 2 workers: exit statuses$statuses"
else
  fail "DMLC_ROLE job: exit statuses (scheduler, worker, worker, server)$statuses"
  for f in "$tmp"/scheduler.log "$tmp"/worker*.log "$tmp"/server.log; do echo "== $f"; tail -5 "$f"; done
fi
same_weights "$tmp/ref.safetensors" "$tmp/mxnet.safetensors" "MXNet roles (dist_sync, 2 workers, 1 server)"

# No secret: every role says how to pass one, in one line, and stops.
unset LOOM_JOB_SECRET
for role in scheduler server worker; do
  out=$(DMLC_ROLE=$role timeout 60 "$loom" train "$job" "${train_args[@]}" 2>&1); status=$?
  if [ "$status" -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "no job secret.*MXNet"; then
    echo "ok   DMLC_ROLE=$role without a secret: $out"
  else
    fail "DMLC_ROLE=$role without a secret: status $status, output: $out"
  fi
done
export LOOM_JOB_SECRET=launcher-test-secret

check_comparison_fails "$tmp/mxnet.safetensors" --workers 2 --servers 1
[ "$failures" -eq 0 ] && echo "MXNet roles: all checks passed"
exit "$failures"
