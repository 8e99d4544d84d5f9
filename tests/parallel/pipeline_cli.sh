#!/usr/bin/env bash
# Pipeline parallelism with real processes (`loom train` with [distributed] mode = "pipeline"):
#  1. a small GPT (tied: the embedding and the head on different stages), 50 steps of 4 micro-batches:
#     the final weights file of every schedule
#     (1f1b and zb-h1 on 2 stages, gpipe on 4 stages with 3 micro-batches (M < P), interleaved with 2
#     chunks a stage, 4 stages recomputing, 3 stages cut by measured time) is byte-identical to one process accumulating the same 4 micro-batches;
#     2 replicas x 2 stages equal it within rounding (their sums add in another order: 1e-6 of the weights);
#     deterministic, 2x2, 1x4 and 4x1 equal deterministic data parallelism with 4 atoms byte for byte;
#     untied, 2 stages equal one process too;
#     `loom launch --describe` prints the stages' layers and each rank's actions;
#  2. checkpoints hold the whole model: 25 steps on 2 stages resumed in one process, and 25 steps in
#     one process resumed on 3 stages, both equal 50 straight;
#  3. a stage process killed (-9) ends every other stage with a line naming it, within seconds;
#  4. bad jobs get one clear line and exit status 1: stages against --workers, an unknown schedule.
# Usage: pipeline_cli.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# A corpus of ~60 KB of text: this script's own lines, repeated with line numbers.
for i in $(seq 1 40); do sed "s/^/$i: /" "$0"; done >"$tmp/corpus.txt"
cat >"$tmp/job.toml" <<TOML
[model]
name = "gpt"
context = 16
blocks = 3
heads = 2
embed = 16
dropout = 0.1
tied = true
[data]
dataset = "text"
files = ["$tmp/corpus.txt"]
batch_size = 12
num_workers = 0
[optimizer]
name = "adamw"
lr = 0.003
[train]
epochs = 100
max_steps = 50
microbatches = 4
threads = 1
eval_interval = 0
[distributed]
heartbeat_timeout_s = 3
timeout_s = 30
TOML

run() {  # run NAME [--set ...]: trains the job, final weights in $tmp/NAME.safetensors
  local name=$1; shift
  timeout 120 "$loom" train "$tmp/job.toml" "$@" --save-final "$tmp/$name.safetensors" >"$tmp/$name.log" 2>&1 ||
    { fail "$name: exit status $?"; tail -5 "$tmp/$name.log"; }
}
same() {  # same NAME REF
  if cmp -s "$tmp/$1.safetensors" "$tmp/$2.safetensors"; then echo "ok   $1 == $2 (byte-identical)"; else fail "$1 differs from $2"; fi
}
pipe=(--set distributed.mode=pipeline)

# 1. Every schedule equals gradient accumulation in one process.
run ref
run p2_1f1b "${pipe[@]}" --set distributed.stages=2
run p2_zbh1 "${pipe[@]}" --set distributed.stages=2 --set distributed.schedule=zb-h1
run p2_interleaved "${pipe[@]}" --set distributed.stages=2 --set distributed.schedule=interleaved \
  --set distributed.virtual_stages=2
run p4_recompute "${pipe[@]}" --set distributed.stages=4 --set distributed.recompute=true
run p3_time "${pipe[@]}" --set distributed.stages=3 --set distributed.balance=time
for name in p2_1f1b p2_zbh1 p2_interleaved p4_recompute p3_time; do same "$name" ref; done
run ref_untied --set model.tied=false
run p2_untied "${pipe[@]}" --set distributed.stages=2 --set model.tied=false
same p2_untied ref_untied
run ref_m3 --set train.microbatches=3
run p4_gpipe_m3 "${pipe[@]}" --set distributed.stages=4 --set distributed.schedule=gpipe --set train.microbatches=3
same p4_gpipe_m3 ref_m3

# 1b. Data x pipeline: 2 replicas of a 2-stage pipeline, each on 6 rows in 2 micro-batches (the same
# 3-row micro-batches as ref's 4), gradients summed over a stage's replicas: equal to one process within
# rounding: the whole model's relative difference |w - w_ref| / |w_ref| below 1e-6. The worst single
# tensor's (a small bias: 4e-7 to 1.5e-6, depending on the corpus) is printed beside one process's own
# with 1 micro-batch instead of 4, the size of rounding here.
# Without dropout: each replica draws its own masks (as data-parallel ranks do outside deterministic mode).
# With SGD: Adam divides a gradient that is rounding noise (attention's key bias has a zero gradient) by
# its own size, so other rounding gives other steps of lr, and one process with 1 and 4 micro-batches
# already differs by 5e-5 there.
plain=(--set model.dropout=0 --set optimizer.name=sgd --set optimizer.lr=0.1)
run ref_nodrop "${plain[@]}"
run ref_nodrop_m1 "${plain[@]}" --set train.microbatches=1
run d2p2 "${pipe[@]}" --set distributed.stages=2 --set distributed.data_parallel=2 --set train.microbatches=2 \
  "${plain[@]}"
# Prints: the whole model's relative difference, and the worst tensor's (safetensors read by hand).
rel() {
  python3 - "$1" "$2" <<'PY'
import array, json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    out = {}
    for k, v in json.loads(b[8:8 + n]).items():
        if k != "__metadata__" and v["dtype"] == "F32":
            s, e = v["data_offsets"]
            out[k] = array.array("f", b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
d = {k: sum((x - y) ** 2 for x, y in zip(a[k], b[k])) for k in b}
w = {k: sum(y * y for y in b[k]) for k in b}
print((sum(d.values()) / sum(w.values())) ** 0.5, max((d[k] / w[k]) ** 0.5 for k in b))
PY
}
read -r whole worst <<<"$(rel "$tmp/d2p2.safetensors" "$tmp/ref_nodrop.safetensors")"
read -r _ noise <<<"$(rel "$tmp/ref_nodrop_m1.safetensors" "$tmp/ref_nodrop.safetensors")"
python3 -c 'import sys; sys.exit(0 if 0 < float(sys.argv[1]) < 1e-6 else 1)' "$whole" &&
  echo "ok   d2p2 ~ ref: relative difference $whole (worst tensor $worst; one process, 1 micro-batch against 4: $noise)" ||
  fail "d2p2 against ref: relative difference $whole (worst tensor $worst)"

# 1c. Deterministic: D x P bitwise equal to deterministic data parallelism with D M atoms (dropout on).
det=(--set distributed.deterministic=true)
run det_dp1 "${det[@]}" --set distributed.mode=allreduce --set distributed.deterministic_atoms=4
run det_d2p2 "${det[@]}" "${pipe[@]}" --set distributed.stages=2 --set distributed.data_parallel=2 \
  --set train.microbatches=2
run det_d1p4 "${det[@]}" "${pipe[@]}" --set distributed.stages=4 --set distributed.schedule=zb-h1
run det_d4p1 "${det[@]}" "${pipe[@]}" --set distributed.stages=1 --set distributed.data_parallel=4 \
  --set train.microbatches=1
for name in det_d2p2 det_d1p4 det_d4p1; do same "$name" det_dp1; done

# 1d. The layout and each rank's actions, without starting anything.
layout=$("$loom" launch --describe --workers 2 -- "$loom" train "$tmp/job.toml" "${pipe[@]}" --set distributed.stages=2 2>&1)
echo "$layout" | grep -q "^stage 1, part 1: layers 2-4 (TransformerBlock" && echo "$layout" | grep -q "^rank 1: recv act mb 0 chunk 1 from 0" &&
  echo "$layout" | grep -q "^tied embedding: stages 0 and 1 both hold the token table" &&
  echo "ok   launch --describe: $(echo "$layout" | grep '^pipeline:')" || { fail "launch --describe:"; echo "$layout"; }

# 2. Checkpoints are the whole model, whatever wrote them.
half=(--set train.max_steps=25)
run half_p2 "${pipe[@]}" --set distributed.stages=2 "${half[@]}" --checkpoint-dir "$tmp/ck_p2"
run resumed_local --checkpoint-dir "$tmp/ck_p2" --resume
same resumed_local ref
run half_local "${half[@]}" --checkpoint-dir "$tmp/ck_local"
run resumed_p3 "${pipe[@]}" --set distributed.stages=3 --checkpoint-dir "$tmp/ck_local" --resume
same resumed_p3 ref

# 3. A stage process killed: the other stages stop, naming it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export LOOM_JOB_SECRET=pipeline-test-secret LOOM_COORDINATOR=127.0.0.1:$port LOOM_WORLD_SIZE=3
"$loom" coordinator --bind 127.0.0.1:$port --workers 3 --heartbeat-timeout 3 >"$tmp/coord.log" 2>&1 &
pids+=($!)
stages=()
for r in 0 1 2; do
  LOOM_RANK=$r LOOM_HOST=host$r "$loom" train "$tmp/job.toml" "${pipe[@]}" --set distributed.stages=3 \
    --set train.max_steps=0 >"$tmp/s$r.log" 2>&1 &
  stages+=($!); pids+=($!)
done
sleep 6
kill -9 "${stages[1]}"
start=$(date +%s)
for r in 0 2; do
  wait "${stages[$r]}"; status=$?
  [ "$status" -eq 1 ] || fail "kill: stage $r exit status $status, wanted 1"
  tail -1 "$tmp/s$r.log" | grep -qE "loom: .*worker 1 on host host1 lost" ||
    { fail "kill: stage $r's last line does not name worker 1:"; tail -2 "$tmp/s$r.log"; }
done
took=$(( $(date +%s) - start ))
[ "$took" -le 10 ] || fail "kill: stages took ${took}s to stop (heartbeat timeout 3s)"
echo "ok   kill: $(tail -1 "$tmp/s0.log") (${took}s)"
unset LOOM_JOB_SECRET LOOM_COORDINATOR LOOM_WORLD_SIZE

# 4. Bad jobs: one line, exit 1, no process started.
bad() {  # bad PATTERN ARGS...
  local pattern=$1; shift
  timeout 60 "$loom" train "$tmp/job.toml" "$@" >"$tmp/bad.log" 2>&1; status=$?
  [ "$status" -eq 1 ] || fail "bad ($*): exit status $status, wanted 1"
  grep -qE "$pattern" "$tmp/bad.log" && echo "ok   bad: $(grep -E "$pattern" "$tmp/bad.log" | head -1)" ||
    { fail "bad ($*): no line matching '$pattern'"; cat "$tmp/bad.log"; }
}
bad "one process per stage" "${pipe[@]}" --set distributed.stages=2 --workers 3
bad "schedule" "${pipe[@]}" --set distributed.schedule=zero-bubble

[ "$failures" -eq 0 ] && echo "all pipeline checks passed"
exit "$failures"
