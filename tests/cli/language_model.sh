#!/usr/bin/env bash
# `loom train examples/lm/tiny.toml` end to end on the fortunes corpus
# (scripts/setup installs it): loss and bits per byte for train and
# validation, `loom eval` of the saved weights, tiny_pipeline.toml (2 stages)
# equal to one process bit for bit, and bad language-model jobs
# get one clear line naming the key and exit status 1.
# Usage: language_model.sh path/to/loom path/to/examples/lm
set -u
loom="$1"
examples="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

if ! "$loom" train "$examples/tiny.toml" --set train.max_steps=60 --save-final "$tmp/tiny.safetensors" \
    >"$tmp/out" 2>"$tmp/err"; then
  fail "tiny.toml did not train:"; sed 's/^/    /' "$tmp/err" | tail -5
fi
last=$(grep "^epoch 1/1: step 60" "$tmp/err")
echo "ok   tiny: $last"
for want in "train loss" "train bpb" "val loss" "val bpb"; do
  case "$last" in *"$want "*) ;; *) fail "the epoch line has no '$want'" ;; esac
done
grep -qE '^\{"loss":[0-9.]+,"bpb":[0-9.]+,"num_tokens":[0-9]+\}$' "$tmp/out" || fail "no validation JSON on stdout: $(cat "$tmp/out")"
"$loom" eval "$examples/tiny.toml" --checkpoint "$tmp/tiny.safetensors" >"$tmp/eval" 2>"$tmp/err" || fail "eval: $(cat "$tmp/err")"
cmp -s "$tmp/out" "$tmp/eval" || fail "eval of the final weights differs from training's last validation: $(cat "$tmp/eval")"

# The pipeline example: 2 stages (the tied head on the other stage), bit for bit tiny.toml with 4
# micro-batches in one process.
few=(--set train.max_steps=8)
"$loom" train "$examples/tiny_pipeline.toml" "${few[@]}" --save-final "$tmp/pipe.safetensors" >/dev/null 2>"$tmp/err" ||
  fail "tiny_pipeline.toml did not train: $(tail -3 "$tmp/err")"
"$loom" train "$examples/tiny.toml" "${few[@]}" --set train.microbatches=4 \
  --save-final "$tmp/one.safetensors" >/dev/null 2>&1 || fail "tiny.toml with 4 micro-batches did not train"
# (the files differ in their metadata, which names the job file: compare the tensors)
diff=$("$loom" inspect --diff "$tmp/pipe.safetensors" "$tmp/one.safetensors" | tail -1)
echo "$diff" | grep -q '"max_abs_diff": 0, "max_rel_diff": 0, "mismatched_tensors": 0' &&
  echo "ok   tiny_pipeline: bit for bit one process's weights" ||
  fail "tiny_pipeline.toml's weights differ from one process accumulating the same micro-batches: $diff"

# expect_error NAME PATTERN -- ARGS...: wants status 1 and one stderr line matching PATTERN.
expect_error() {
  local name="$1" pattern="$2"
  shift 3
  "$loom" "$@" >"$tmp/out" 2>"$tmp/err"
  local status=$? lines
  lines=$(wc -l <"$tmp/err")
  if [ "$status" -ne 1 ] || [ "$lines" -ne 1 ] || ! grep -qE "$pattern" "$tmp/err"; then
    fail "$name: status $status, $lines stderr lines, wanted /$pattern/:"; sed 's/^/    /' "$tmp/err" | head -5
  else
    echo "ok   $name: $(cat "$tmp/err")"
  fi
}
printf 'short' >"$tmp/short.txt"
expect_error "missing corpus" "\[data\] 'files': text corpus: '$tmp/nope.txt' does not exist" -- \
  train "$examples/tiny.toml" --set "data.files=[\"$tmp/nope.txt\"]"
expect_error "heads not dividing embed" "\[model\] 'heads' \(5\) must be >= 1 and divide embed \(32\)" -- \
  train "$examples/tiny.toml" --set model.heads=5
expect_error "context longer than the corpus" "\[data\] 'context'.*too short for context 32" -- \
  train "$examples/tiny.toml" --set "data.files=[\"$tmp/short.txt\"]"
expect_error "data context over the model's" "\[data\] 'context' \(64\) must not exceed \[model\] context \(32\)" -- \
  train "$examples/tiny.toml" --set data.context=64

[ "$failures" -eq 0 ] && echo "all language-model CLI checks passed"
exit "$failures"
