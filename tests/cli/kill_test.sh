#!/usr/bin/env bash
# Failure handling of distributed training, with real processes:
#  1. under `loom launch`: kill -9 one worker -> the job stops with one line naming it, no process left;
#  2. workers started by hand (no launcher to notice): kill -9 one -> every other rank raises
#     PeerLostError within the heartbeat timeout and exits with a line naming the lost rank and host;
#  3. the coordinator killed -> every worker stops with a line naming the coordinator.
# Usage: kill_test.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "${KEEP_TMP:-}" ] && trap - EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

python3 "$(dirname "$0")/synthetic_idx.py" "$tmp" 4096
cat >"$tmp/job.toml" <<TOML
[model]
name = "mlp"
[data]
dataset = "idx"
root = "$tmp"
train_file = "img"
train_labels = "lab"
test_file = "img"
test_labels = "lab"
batch_size = 8
num_workers = 0
[train]
epochs = 1000
threads = 1
[distributed]
mode = "allreduce"
heartbeat_timeout_s = 3
timeout_s = 60
TOML

# 1. Under the launcher.
"$loom" train "$tmp/job.toml" --workers 3 >"$tmp/out1" 2>"$tmp/err1" &
launcher=$!; pids+=("$launcher")
sleep 8
victim=$(pgrep -f "loom train $tmp/job.toml" | while read -r p; do
  tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q '^LOOM_RANK=1$' && echo "$p"; done | head -1)
if [ -z "$victim" ]; then fail "launcher: no worker 1 found"; else
  kill -9 "$victim"
  start=$(date +%s)
  wait "$launcher"; status=$?
  took=$(( $(date +%s) - start ))
  [ "$status" -ne 0 ] || fail "launcher: exit status 0 after a worker was killed"
  grep -q "worker 1 on host .* killed by signal 9" "$tmp/err1" || { fail "launcher: no line naming worker 1"; cat "$tmp/err1"; }
  [ "$took" -le 15 ] || fail "launcher: took ${took}s to stop"
  sleep 1
  left=$(pgrep -f "$tmp/job.toml" | wc -l)
  [ "$left" -eq 0 ] || fail "launcher: $left processes left behind"
  echo "ok   launcher: $(tail -1 "$tmp/err1") (${took}s)"
fi

# 2 and 3. Workers started by hand against a coordinator, as another launcher would.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_job() {
  export LOOM_JOB_SECRET=kill-test-secret LOOM_COORDINATOR=127.0.0.1:$port LOOM_WORLD_SIZE=3
  "$loom" coordinator --bind 127.0.0.1:$port --workers 3 --heartbeat-timeout 3 >"$tmp/coord.$1" 2>&1 &
  coord=$!; pids+=("$coord")
  workers=()
  for r in 0 1 2; do
    LOOM_RANK=$r LOOM_HOST=host$r "$loom" train "$tmp/job.toml" >"$tmp/w$r.$1" 2>&1 &
    workers+=($!); pids+=($!)
  done
  sleep 8
}
check_stopped() {  # check_stopped ROUND PATTERN RANKS...
  local round=$1 pattern=$2; shift 2
  local start=$(date +%s)
  for r in "$@"; do
    wait "${workers[$r]}"; status=$?
    [ "$status" -eq 1 ] || fail "$round: rank $r exit status $status, wanted 1"
    tail -1 "$tmp/w$r.$round" | grep -qE "$pattern" || { fail "$round: rank $r last line:"; tail -2 "$tmp/w$r.$round"; }
  done
  local took=$(( $(date +%s) - start ))
  [ "$took" -le 8 ] || fail "$round: ranks took ${took}s to stop (heartbeat timeout 3s)"
  echo "ok   $round: $(tail -1 "$tmp/w0.$round") (${took}s)"
}

start_job worker
kill -9 "${workers[2]}"
check_stopped worker "loom: .*worker 2 on host host2 lost" 0 1
kill "$coord" 2>/dev/null; wait "$coord" 2>/dev/null

port=$((port + 1))
start_job coordinator
kill -9 "$coord"
check_stopped coordinator "loom: .*coordinator.*lost" 0 1 2

[ "$failures" -eq 0 ] && echo "all kill checks passed"
exit "$failures"
