#!/usr/bin/env bash
# Runs a Python script of tests/interop with the interop reference environment
# (real third-party readers: safetensors, tensorboard, onnx, ...; see
# scripts/reference-env).
#
#   with_interop_env.sh SCRIPT [ARGS...]
#
# Without that environment (or with one built from an older
# scripts/reference-env.d/interop.txt) the test is skipped: exit 77, which
# CMake registers as SKIP_RETURN_CODE. With LOOM_REQUIRE_INTEROP=1 (CI) it
# fails instead, so that CI cannot pass by skipping.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: with_interop_env.sh SCRIPT [ARGS...]" >&2; exit 2; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$("$root/scripts/reference-env" --path interop)"
requirements="$root/scripts/reference-env.d/interop.txt"

problem=""
if [ ! -x "$venv/bin/python" ]; then
  problem="no interop environment in $venv"
elif [ "$(cat "$venv/.loom-requirements" 2>/dev/null)" != "$(sha256sum "$requirements" | cut -d' ' -f1)" ]; then
  problem="the interop environment in $venv was not built from the current $requirements"
fi
if [ -n "$problem" ]; then
  if [ "${LOOM_REQUIRE_INTEROP:-0}" = "1" ]; then
    echo "FAIL: $problem (LOOM_REQUIRE_INTEROP=1); run scripts/reference-env interop" >&2
    exit 1
  fi
  echo "SKIP: $problem; run scripts/reference-env interop to check Loom's files with real third-party readers"
  exit 77
fi
exec "$venv/bin/python" "$@"
