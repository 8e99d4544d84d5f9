#!/usr/bin/env bash
# Deterministic data parallelism with real processes (`loom train --workers N`):
#  1. a CNN with batch norm and dropout and an MLP with dropout, 50 steps of batch 32 (8 atoms): the final
#     weights and buffers (running statistics included) are bitwise equal for 1, 2, 4 and 8 workers;
#  2. 6 atoms: 1, 3 and 6 workers agree bit for bit;
#  3. stopped after 25 steps on 2 workers and resumed on 4 equals 50 straight;
#  4. 3 workers with 8 atoms get one clear line, before any worker starts.
# Usage: deterministic_cli.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

python3 "$(dirname "$0")/../cli/synthetic_idx.py" "$tmp" 400
write_job() {  # name, layers
  cat >"$tmp/$1.toml" <<TOML
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
max_steps = 50
threads = 1
eval_interval = 0
[distributed]
mode = "allreduce"
deterministic = true
$2
TOML
}
write_job cnn '[[model.layers]]
type = "conv2d"
out = 4
kernel = 3
padding = 1
[[model.layers]]
type = "batchnorm2d"
[[model.layers]]
type = "relu"
[[model.layers]]
type = "maxpool2d"
[[model.layers]]
type = "flatten"
[[model.layers]]
type = "dropout"
p = 0.2
[[model.layers]]
type = "linear"
out = 3'
write_job mlp '[[model.layers]]
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
out = 3'

diff_of() { "$loom" inspect --diff "$1" "$2" | tail -1; }
same() { diff_of "$1" "$2" | grep -q '"max_abs_diff": 0, "max_rel_diff": 0, "mismatched_tensors": 0'; }

# 1 and 2.
for model in cnn mlp; do
  for spec in "8:1 2 4 8" "6:1 3 6"; do
    atoms=${spec%%:*}
    for n in ${spec#*:}; do
      "$loom" train "$tmp/$model.toml" --workers "$n" --set distributed.deterministic_atoms="$atoms" \
        --save-final "$tmp/$model.$atoms.$n.safetensors" >"$tmp/out" 2>&1 || { fail "$model, $n workers, $atoms atoms did not train"; tail -3 "$tmp/out"; }
    done
    first=${spec#*:}; first=${first%% *}
    for n in ${spec#*:}; do
      [ "$n" = "$first" ] && continue
      if same "$tmp/$model.$atoms.$first.safetensors" "$tmp/$model.$atoms.$n.safetensors"; then
        echo "ok   $model, $atoms atoms: $n workers equal $first bit for bit (weights and buffers)"
      else
        fail "$model, $atoms atoms: $n workers differ from $first: $(diff_of "$tmp/$model.$atoms.$first.safetensors" "$tmp/$model.$atoms.$n.safetensors")"
      fi
    done
  done
done
grep -q running_var <("$loom" inspect "$tmp/cnn.8.1.safetensors" 2>&1) || fail "the CNN's saved state has no running statistics"

# 3. Resume on another world size.
"$loom" train "$tmp/cnn.toml" --workers 2 --set train.max_steps=25 --checkpoint-dir "$tmp/ckpt" >"$tmp/out" 2>&1 \
  || { fail "25 steps on 2 workers did not train"; tail -3 "$tmp/out"; }
"$loom" train "$tmp/cnn.toml" --workers 4 --checkpoint-dir "$tmp/ckpt" --resume --save-final "$tmp/resumed.safetensors" \
  >"$tmp/out" 2>&1 || { fail "resuming on 4 workers did not train"; tail -3 "$tmp/out"; }
if same "$tmp/resumed.safetensors" "$tmp/cnn.8.1.safetensors"; then
  echo "ok   cnn: 25 steps on 2 workers + 25 resumed on 4 equal 50 straight bit for bit"
else
  fail "resumed differs from straight: $(diff_of "$tmp/resumed.safetensors" "$tmp/cnn.8.1.safetensors")"
fi

# 4. A world that does not divide the atoms.
out=$("$loom" train "$tmp/mlp.toml" --workers 3 2>&1); status=$?
[ "$status" -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "deterministic_atoms = 8" \
  && echo "ok   3 workers, 8 atoms: $out" || fail "3 workers with 8 atoms: status $status, output: $out"

[ "$failures" -eq 0 ] && echo "all passed" || echo "$failures failed"
exit $((failures > 0))
