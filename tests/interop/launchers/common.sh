# Shared by the launcher tests (sourced): a small job, the same job under
# `loom launch` as the reference, and a bitwise comparison that can fail.
#
#   source "$(dirname "$0")/common.sh" "$loom"     # sets $tmp, $job, $loom; cleans up on exit
#   reference "$tmp/ref.safetensors" --workers 2    # loom launch --workers 2 -- loom train $job --save-final FILE
#   same_weights "$tmp/ref.safetensors" "$tmp/mpirun.safetensors" "mpirun -np 2"
#
# The job: an MLP on 1024 synthetic 8x8 images (tests/cli/synthetic_idx.py),
# 20 steps of batch 32 per worker, one thread per process: seconds.
set -u
loom=$(readlink -f "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
pids=()  # background processes a test started; killed on exit
failures=0
common_cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap common_cleanup EXIT
trap 'exit 130' INT TERM  # through the EXIT trap
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
skip() { echo "SKIP $*"; exit 77; }  # ctest SKIP_RETURN_CODE

export OMP_NUM_THREADS=1  # as torchrun sets it; the same for every run compared
export LOOM_JOB_SECRET=launcher-test-secret

python3 "$here/../../cli/synthetic_idx.py" "$tmp" 1024
job="$tmp/job.toml"
cat >"$job" <<TOML
[model]
name = "mlp"
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
epochs = 1
max_steps = 20
threads = 1
[distributed]
mode = "allreduce"
timeout_s = 60
TOML

# A free TCP port on loopback (for a coordinator address given by hand).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A port P with P+1 free too (torchrun's static rendezvous: its store on P, Loom's
# coordinator on P+1), below the ephemeral range so that no other test's
# outgoing connection takes P+1 between this check and the coordinator's bind.
free_port_pair() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 32000)
    try:
        socks = []
        for q in (p, p + 1):
            s = socket.socket(); s.bind(("127.0.0.1", q)); socks.append(s)
        print(p); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
else:
    raise SystemExit("no free pair of ports")
PY
}

# Extra `loom train` options for every run of a test (e.g. a parameter-server mode).
train_args=()

# reference OUT [launch options...]: the job under `loom launch`, final weights in OUT.
reference() {
  local out=$1; shift
  timeout 120 "$loom" launch "$@" -- "$loom" train "$job" "${train_args[@]}" --save-final "$out" \
    >"$out.log" 2>&1 || { fail "loom launch $* did not train"; tail -5 "$out.log"; }
}

# same_weights A B WHAT: every tensor of A and B is bitwise equal (status 0), else prints the diff (status 1).
weights_equal() {
  [ -s "$1" ] && [ -s "$2" ] || return 1
  "$loom" inspect --diff "$1" "$2" >"$tmp/diff" 2>&1 || return 1
  tail -1 "$tmp/diff" | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["max_abs_diff"] == 0 and d["mismatched_tensors"] == 0 else 1)'
}
same_weights() {
  if weights_equal "$1" "$2"; then
    echo "ok   $3: final weights bitwise equal to the same job under loom launch"
  else
    fail "$3: final weights differ from loom launch's (or are missing)"
    [ -f "$tmp/diff" ] && cat "$tmp/diff"
  fi
}

# check_comparison_fails RESULT [launch options...]: the comparison must be able
# to fail: one step fewer under loom launch gives other weights than RESULT.
check_comparison_fails() {
  local result=$1; shift
  local saved=("${train_args[@]}")
  train_args+=(--set train.max_steps=19)
  reference "$tmp/short.safetensors" "$@"
  train_args=("${saved[@]}")
  if weights_equal "$result" "$tmp/short.safetensors"; then
    fail "control: 19 steps compare equal to 20; the comparison cannot fail"
  else
    echo "ok   control: 19 steps under loom launch differ from 20 (the comparison can fail)"
  fi
}
