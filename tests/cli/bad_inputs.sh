#!/usr/bin/env bash
# Bad input to the `loom` command gets one clear line on stderr and exit status 1,
# never a crash. Usage: bad_inputs.sh path/to/loom
set -u
loom="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# expect_error NAME PATTERN -- ARGS...: runs loom ARGS, wants status 1, one stderr line matching PATTERN.
expect_error() {
  local name="$1" pattern="$2"
  shift 3
  "$loom" "$@" >"$tmp/out" 2>"$tmp/err"
  local status=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [ "$status" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -qE "$pattern" "$tmp/err"; then
    echo "FAIL $name: status $status, $lines stderr lines, wanted /$pattern/:"
    sed 's/^/    /' "$tmp/err" | head -5
    failures=$((failures + 1))
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}

# A tiny synthetic IDX data set so the tests need no download.
python3 - "$tmp" <<'PY'
import gzip, struct, sys, random
d = sys.argv[1]
random.seed(0)
def idx(path, dims, data, gz=False):
    blob = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", x) for x in dims) + bytes(data)
    (gzip.open if gz else open)(path, "wb").write(blob)
n = 64
idx(f"{d}/img.gz", [n, 8, 8], [random.randrange(256) for _ in range(n * 64)], gz=True)
idx(f"{d}/lab", [n], [i % 2 for i in range(n)])
raw = gzip.open(f"{d}/img.gz").read()
idx_trunc = raw[: len(raw) // 2]
gzip.open(f"{d}/trunc.gz", "wb").write(idx_trunc)
open(f"{d}/badmagic", "wb").write(b"\x01\x02\x03\x04" + raw[4:])
PY

job() {  # job NAME EXTRA_MODEL_TOML [DATA_OVERRIDES]
  cat >"$tmp/$1.toml" <<TOML
[model]
$2
[data]
dataset = "idx"
root = "$tmp"
train_file = "${3:-img.gz}"
train_labels = "lab"
test_file = "img.gz"
test_labels = "lab"
batch_size = 16
[train]
epochs = 1
threads = 1
TOML
}

job ok 'name = "mlp"'
expect_error "missing data set" "apt-get install dataset-fashion-mnist.*data.root" -- train "$tmp/ok.toml" \
  --set data.dataset=fashion-mnist --set data.root=/nonexistent/fmnist
job trunc 'name = "mlp"' trunc.gz
expect_error "truncated IDX" "trunc.gz.*(truncated|bytes)" -- train "$tmp/trunc.toml"
job magic 'name = "mlp"' badmagic
expect_error "corrupt IDX" "badmagic" -- train "$tmp/magic.toml"
printf '[model\nname = "mlp"\n' >"$tmp/malformed.toml"
expect_error "malformed TOML" "malformed.toml:1: invalid TOML" -- train "$tmp/malformed.toml"
job typo 'name = "mlp"'
printf '[optimizer]\nlrate = 0.1\n' >>"$tmp/typo.toml"
expect_error "unknown key" "typo.toml:[0-9]+: \[optimizer\] unknown key 'lrate' \(did you mean 'lr'\?\)" -- train "$tmp/typo.toml"
job layer '[[model.layers]]
type = "convolution"'
expect_error "unknown layer" "layer.toml:[0-9]+: unknown layer type 'convolution'" -- train "$tmp/layer.toml"
job shapes '[[model.layers]]
type = "flatten"
[[model.layers]]
type = "linear"
in = 100
out = 2'
expect_error "incompatible layer shapes" "shapes.toml:[0-9]+: layer 1 .*Linear\(100 -> 2\).*\[64\]" -- train "$tmp/shapes.toml"
expect_error "missing job file" "cannot open job file" -- train "$tmp/nope.toml"
expect_error "bad --set" "section.key" -- train "$tmp/ok.toml" --set epochs=3

# Checkpoints: a good one, then truncated, corrupted and mismatched.
"$loom" train "$tmp/ok.toml" --save-final "$tmp/model.safetensors" >/dev/null 2>&1 || { echo "FAIL could not train"; exit 1; }
head -c 100 "$tmp/model.safetensors" >"$tmp/truncated.safetensors"
expect_error "truncated checkpoint" "truncated.safetensors" -- eval "$tmp/ok.toml" --checkpoint "$tmp/truncated.safetensors"
python3 - "$tmp" <<'PY'
import sys
d = sys.argv[1]
b = bytearray(open(f"{d}/model.safetensors", "rb").read())
b[8:12] = b"{{{{"          # break the JSON header
open(f"{d}/corrupt.safetensors", "wb").write(b)
PY
expect_error "corrupt checkpoint" "corrupt.safetensors" -- eval "$tmp/ok.toml" --checkpoint "$tmp/corrupt.safetensors"
job lenet 'name = "cnn"'
expect_error "checkpoint that does not fit" "model.safetensors: the weights do not fit" -- eval "$tmp/lenet.toml" --checkpoint "$tmp/model.safetensors"
expect_error "inspect a missing file" "nope.safetensors" -- inspect "$tmp/nope.safetensors"

# Usage errors exit 2 with CLI11's message; --help and --version exit 0.
"$loom" train >/dev/null 2>&1; [ $? -eq 2 ] || { echo "FAIL usage error status"; failures=$((failures + 1)); }
for cmd in "" train eval inspect; do
  "$loom" $cmd --help >/dev/null 2>&1 || { echo "FAIL loom $cmd --help"; failures=$((failures + 1)); }
done
"$loom" --version | grep -q "^loom [0-9]" || { echo "FAIL --version"; failures=$((failures + 1)); }

[ "$failures" -eq 0 ] && echo "all bad-input checks passed"
exit "$failures"
