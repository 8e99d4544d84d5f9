#!/usr/bin/env bash
# Parameter-server replication with real processes: 2 workers, 2 servers, 1
# backup per shard. Mid-run, kill -9 server 0 (the primary of half the keys
# and of one half of the split key); the job must finish, and every
# acknowledged update must be in the final value: each worker counts its
# acknowledged pushes and checks the pulled value equals the total (none lost,
# none applied twice). Once for dist_sync and once for dist_async.
# Usage: ps_failover.sh path/to/loom path/to/loom_kv_counter
set -u
loom="$1"
counter="$2"
tmp=$(mktemp -d)
launcher=""
cleanup() { [ -n "$launcher" ] && kill -9 "$launcher" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

for mode in dist_sync dist_async; do
  "$loom" launch --workers 2 --servers 2 --replicas 1 --split-bound 1000 --heartbeat-timeout 2 \
    -- "$counter" "$mode" 300 >"$tmp/out.$mode" 2>"$tmp/err.$mode" &
  launcher=$!
  # Wait until training is under way, then kill server 0.
  for _ in $(seq 100); do grep -q "step 50" "$tmp/out.$mode" && break; sleep 0.1; done
  victim=$(pgrep -f "loom server --replicas 1" | while read -r p; do
    tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -q '^LOOM_RANK=0$' && echo "$p"; done | head -1)
  if [ -z "$victim" ]; then fail "$mode: no server 0 found"; cat "$tmp/out.$mode" "$tmp/err.$mode"; continue; fi
  kill -9 "$victim"
  wait "$launcher"; status=$?
  launcher=""
  [ "$status" -eq 0 ] || { fail "$mode: the job failed (status $status) after server 0 was killed"; cat "$tmp/out.$mode" "$tmp/err.$mode"; }
  grep -q "server 0 .*killed by signal 9.*backups take over" "$tmp/err.$mode" || fail "$mode: no line saying server 0 was killed and replaced"
  ok=$(grep -c ": OK$" "$tmp/out.$mode")
  [ "$ok" -eq 2 ] || { fail "$mode: $ok of 2 workers found every acknowledged update"; cat "$tmp/out.$mode"; }
  echo "ok   $mode: $(grep -m1 'acknowledged' "$tmp/out.$mode")"
done
[ "$failures" -eq 0 ] && echo "all parameter-server failover checks passed"
exit "$failures"
