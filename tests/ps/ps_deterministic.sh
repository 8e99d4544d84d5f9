#!/usr/bin/env bash
# Deterministic dist_sync on parameter servers with real processes (`loom train`
# with [distributed] mode = "dist_sync", deterministic = true, servers = 2):
#  1. an MLP with dropout, 30 steps of batch 32 in 8 atoms, momentum SGD on the
#     servers: the final weights are bitwise equal for 1, 2 and 4 workers;
#  2. deterministic dist_async and dist_ssp get one clear line, before any process starts;
#  3. 3 workers with 8 atoms get one clear line too.
# Usage: ps_deterministic.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

python3 "$(dirname "$0")/../cli/synthetic_idx.py" "$tmp" 400
cat >"$tmp/mlp.toml" <<TOML
[data]
dataset = "idx"
root = "$tmp"
train_file = "img"
train_labels = "lab"
test_file = "img"
test_labels = "lab"
batch_size = 32
num_workers = 0
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
epochs = 10
max_steps = 30
threads = 1
eval_interval = 0
[distributed]
mode = "dist_sync"
servers = 2
deterministic = true
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "linear"
out = 16
[[model.layers]]
type = "relu"
[[model.layers]]
type = "dropout"
p = 0.3
[[model.layers]]
type = "linear"
out = 3
TOML

diff_of() { "$loom" inspect --diff "$1" "$2" | tail -1; }
same() { diff_of "$1" "$2" | grep -q '"max_abs_diff": 0, "max_rel_diff": 0, "mismatched_tensors": 0'; }

# 1.
for n in 1 2 4; do
  timeout 240 "$loom" train "$tmp/mlp.toml" --workers "$n" --save-final "$tmp/w$n.safetensors" >"$tmp/out" 2>&1 \
    || { fail "$n workers did not train"; tail -3 "$tmp/out"; }
done
for n in 2 4; do
  if same "$tmp/w1.safetensors" "$tmp/w$n.safetensors"; then
    echo "ok   dist_sync deterministic: $n workers equal 1 bit for bit"
  else
    fail "dist_sync deterministic: $n workers differ from 1: $(diff_of "$tmp/w1.safetensors" "$tmp/w$n.safetensors")"
  fi
done

# 2.
for mode in dist_async dist_ssp; do
  out=$(timeout 60 "$loom" train "$tmp/mlp.toml" --workers 2 --set distributed.mode=$mode 2>&1); status=$?
  [ "$status" -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "applies each push as it arrives" \
    && echo "ok   $mode refused: $out" || fail "deterministic $mode: status $status, output: $out"
done

# 3.
out=$(timeout 60 "$loom" train "$tmp/mlp.toml" --workers 3 2>&1); status=$?
[ "$status" -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "deterministic_atoms = 8" \
  && echo "ok   3 workers, 8 atoms: $out" || fail "3 workers with 8 atoms: status $status, output: $out"

[ "$failures" -eq 0 ] && echo "all passed" || echo "$failures failed"
exit $((failures > 0))
