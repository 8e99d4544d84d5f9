#!/usr/bin/env bash
# The CTR example (examples/ctr) end to end: a short local run and a short
# `loom launch --workers 2 --servers 2` dist_async run. Each must reach a test
# AUC clearly above chance, and the bytes a step sends and receives (row-sparse
# table traffic plus the dense MLP) must be a small fraction of the table.
# Usage: ctr_example.sh path/to/loom path/to/loom_ctr
set -u
loom="$1"
ctr="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# 400k rows x 16 f32 = 25.6 MB; 300 steps of 256 samples reach AUC ~0.71 (the
# hidden model itself scores ~0.89); 0.65 leaves room for scheduling noise in dist_async.
min_auc=0.65
args=(--rows 400000 --steps 300 --batch 256 --eval-every 100 --test-size 10000)

check() {  # name, output file
  local name="$1" out="$2" line
  line=$(grep -m1 "result:" "$out")
  if [ -z "$line" ]; then fail "$name: no result line"; cat "$out"; return; fi
  val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  local auc sent received table before=$failures
  auc=$(val auc); sent=$(val sent_per_step); received=$(val received_per_step); table=$(val table_bytes)
  awk -v a="$auc" -v m="$min_auc" 'BEGIN { exit !(a > m) }' || fail "$name: test AUC $auc is not above $min_auc"
  # Far below the table: under 1% of it per step, each way.
  awk -v s="$sent" -v r="$received" -v t="$table" 'BEGIN { exit !(s < t / 100 && r < t / 100) }' ||
    fail "$name: $sent bytes sent and $received received per step, table $table bytes"
  [ "$failures" -eq "$before" ] &&
    echo "ok   $name: AUC $auc, $sent bytes sent and $received received per step, table $table bytes"
}

"$ctr" --type local "${args[@]}" >"$tmp/local.out" 2>&1 || { fail "local: exit status $?"; cat "$tmp/local.out"; }
check local "$tmp/local.out"

"$loom" launch --workers 2 --servers 2 -- "$ctr" --type dist_async "${args[@]}" >"$tmp/async.out" 2>&1 ||
  { fail "dist_async: exit status $?"; cat "$tmp/async.out"; }
check "dist_async (2 workers, 2 servers)" "$tmp/async.out"
[ "$(grep -c "worker [01]: 300 steps" "$tmp/async.out")" -eq 2 ] || { fail "dist_async: not both workers finished"; cat "$tmp/async.out"; }

[ "$failures" -eq 0 ] && echo "all CTR example checks passed"
exit "$failures"
