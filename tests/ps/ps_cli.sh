#!/usr/bin/env bash
# Parameter servers from the command line, with real processes:
#  1. dist_sync training equals one process (and the all-reduce run) within 1e-5 after 100 steps;
#  2. MXNet's launcher variables (DMLC_ROLE scheduler/server/worker) start the same roles;
#  3. `loom launch --describe` prints where each key of a job's model lives;
#  4. a job file asking for parameter servers without any gets one clear line;
#  5. --resume goes on with the servers' weights and optimizer state: 2 epochs then 2 resumed equal 4
#     straight, bit for bit;
#  6. checkpoints do not depend on the strategy: 2 epochs local then 2 resumed on dist_sync (1 worker,
#     1 server), and the other way round, equal 4 local epochs, every tensor of the last checkpoint bit for bit.
# Usage: ps_cli.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

python3 "$(dirname "$0")/../cli/synthetic_idx.py" "$tmp" 2048
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
batch_size = 64
num_workers = 0
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
epochs = 10
max_steps = 100
threads = 1
TOML
job="$tmp/job.toml"
max_rel() { "$loom" inspect --diff "$1" "$2" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["max_rel_diff"])'; }

# 1. Equivalence.
"$loom" train "$job" --save-final "$tmp/one.safetensors" >/dev/null 2>&1 || fail "one process did not train"
"$loom" train "$job" --set distributed.mode=dist_sync --set distributed.workers=2 --set distributed.servers=2 \
  --save-final "$tmp/ps.safetensors" >"$tmp/ps.out" 2>&1 || { fail "dist_sync did not train"; cat "$tmp/ps.out"; }
"$loom" train "$job" --set distributed.mode=allreduce --set distributed.workers=2 \
  --save-final "$tmp/ar.safetensors" >/dev/null 2>&1 || fail "allreduce did not train"
for other in ar one; do
  d=$(max_rel "$tmp/ps.safetensors" "$tmp/$other.safetensors")
  python3 -c "import sys; sys.exit(0 if $d <= 1e-5 else 1)" || fail "dist_sync vs $other: max relative difference $d > 1e-5"
  echo "ok   dist_sync (2 workers, 2 servers) vs $other after 100 steps: max relative difference $d"
done

# 2. MXNet's variables: one scheduler, one server, two workers, each started by hand.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DMLC_PS_ROOT_URI=127.0.0.1 DMLC_PS_ROOT_PORT=$port DMLC_NUM_WORKER=2 DMLC_NUM_SERVER=1 LOOM_JOB_SECRET=ps-cli-test
pids=()
for role in scheduler server worker worker; do
  DMLC_ROLE=$role timeout 120 "$loom" train "$job" --set distributed.mode=dist_sync --set train.max_steps=20 \
    >"$tmp/dmlc.$role.${#pids[@]}" 2>&1 &
  pids+=($!)
  [ "$role" = scheduler ] && sleep 0.3
done
statuses=""
for p in "${pids[@]}"; do wait "$p"; statuses="$statuses $?"; done
[ "$statuses" = " 0 0 0 0" ] || { fail "DMLC_ROLE job: exit statuses$statuses"; tail -n 3 "$tmp"/dmlc.*; }
grep -q "test accuracy" "$tmp"/dmlc.worker.* && echo "ok   DMLC_ROLE scheduler/server/worker job trained (statuses$statuses)" \
  || fail "DMLC_ROLE job: no worker reported accuracy"
unset DMLC_PS_ROOT_URI DMLC_PS_ROOT_PORT DMLC_NUM_WORKER DMLC_NUM_SERVER LOOM_JOB_SECRET

# 3. Placement.
"$loom" launch --describe --workers 2 --servers 3 --replicas 1 --split-bound 100 -- "$loom" train "$job" >"$tmp/describe" 2>&1
grep -q "^server 2: host localhost" "$tmp/describe" && grep -q "key 0 .*server .* rows \[0, .*(backup" "$tmp/describe" \
  && echo "ok   launch --describe: $(grep -c ' key ' "$tmp/describe") keys placed" \
  || { fail "launch --describe printed no key placement"; cat "$tmp/describe"; }

# 4. A parameter-server mode without servers.
out=$("$loom" train "$job" --set distributed.mode=dist_async 2>&1); status=$?
[ "$status" -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "needs servers >= 1" \
  && echo "ok   no servers: $out" || fail "no servers: status $status, output: $out"

# 5. Resume: rank 0's checkpoints hold the servers' state (momentum 0.9 here, so losing it would show).
ps=(--set distributed.mode=dist_sync --set distributed.workers=2 --set distributed.servers=2 --set train.max_steps=0)
"$loom" train "$job" "${ps[@]}" --set train.epochs=4 --save-final "$tmp/straight.safetensors" >/dev/null 2>&1 ||
  fail "4 epochs straight did not train"
"$loom" train "$job" "${ps[@]}" --set train.epochs=2 --checkpoint-dir "$tmp/ck" >/dev/null 2>&1 ||
  fail "the first 2 epochs did not train"
"$loom" train "$job" "${ps[@]}" --set train.epochs=4 --checkpoint-dir "$tmp/ck" --resume \
  --save-final "$tmp/resumed.safetensors" >"$tmp/resume.out" 2>&1 || { fail "the resumed run failed"; cat "$tmp/resume.out"; }
grep -q "resuming at step 64" "$tmp/resume.out" || { fail "the resumed run did not start at step 64"; cat "$tmp/resume.out"; }
d=$(max_rel "$tmp/straight.safetensors" "$tmp/resumed.safetensors")
python3 -c "import sys; sys.exit(0 if $d == 0 else 1)" && echo "ok   2 epochs + 2 resumed = 4 straight, bit for bit" ||
  fail "resumed vs straight: max relative difference $d (expected 0)"

# 6. Across strategies. One worker: a dist_sync round is its one push, so the server's update is the local one.
one=(--set distributed.mode=dist_sync --set distributed.workers=1 --set distributed.servers=1)
local=(--set train.max_steps=0)
"$loom" train "$job" "${local[@]}" --set train.epochs=4 --checkpoint-dir "$tmp/x_local" >/dev/null 2>&1 ||
  fail "4 local epochs did not train"
for order in local_then_ps ps_then_local; do
  if [ $order = local_then_ps ]; then first=("${local[@]}"); second=("${local[@]}" "${one[@]}"); else
    first=("${local[@]}" "${one[@]}"); second=("${local[@]}"); fi
  "$loom" train "$job" "${first[@]}" --set train.epochs=2 --checkpoint-dir "$tmp/x_$order" >/dev/null 2>&1 ||
    fail "$order: the first 2 epochs did not train"
  "$loom" train "$job" "${second[@]}" --set train.epochs=4 --checkpoint-dir "$tmp/x_$order" --resume \
    >"$tmp/x_$order.out" 2>&1 || { fail "$order: the resumed run failed"; cat "$tmp/x_$order.out"; }
  last=$(ls "$tmp/x_$order"/ckpt-*.safetensors | tail -1)
  d=$("$loom" inspect --diff "$tmp/x_local/$(basename "$last")" "$last" | tail -1)
  echo "$d" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["max_abs_diff"] != 0 or d["mismatched_tensors"] != 0)' &&
    echo "ok   $order (2 + 2 resumed) = 4 local: every tensor of $(basename "$last") bit for bit" ||
    fail "$order vs 4 local: $d (expected no difference)"
done

[ "$failures" -eq 0 ] && echo "all parameter-server command-line checks passed"
exit "$failures"
