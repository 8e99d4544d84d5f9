#!/usr/bin/env bash
# torchrun (Debian's python3-torch) starts a 2-worker Loom job unchanged:
#   torchrun --nproc_per_node 2 --no_python loom train JOB
# and its final weights equal the same job under `loom launch --workers 2`, bit for bit.
# Usage: torchrun.sh path/to/loom
source "$(dirname "$0")/common.sh" "$1"
torchrun=$(command -v torchrun || true)
[ -n "$torchrun" ] || skip "no torchrun (python3-torch; run scripts/setup)"

reference "$tmp/ref.safetensors" --workers 2

# Debian's torch 1.13 spells the options with underscores (--nproc_per_node;
# --nproc-per-node is torch >= 2). On Python 3.11 it also parses its default
# --redirects/--tee "0" to None (enum.Flag no longer lists the 0 member) and
# crashes before starting a worker; a mapping that names no local rank gives
# every rank the default (no redirection). Its default rendezvous is static:
# the agent's store holds MASTER_PORT and Loom's coordinator takes the next port.
port=$(free_port_pair)
timeout 120 "$torchrun" --nproc_per_node 2 --master_addr 127.0.0.1 --master_port "$port" \
  --redirects 9:0 --tee 9:0 --no_python \
  "$loom" train "$job" --save-final "$tmp/torchrun.safetensors" >"$tmp/torchrun.log" 2>&1 ||
  { fail "torchrun: exit status $?"; tail -20 "$tmp/torchrun.log"; }
same_weights "$tmp/ref.safetensors" "$tmp/torchrun.safetensors" "torchrun --nproc_per_node 2"

# --standalone: c10d rendezvous, MASTER_PORT is a free port the agent picked.
timeout 120 "$torchrun" --standalone --nproc_per_node 2 --redirects 9:0 --tee 9:0 --no_python \
  "$loom" train "$job" --save-final "$tmp/standalone.safetensors" >"$tmp/standalone.log" 2>&1 ||
  { fail "torchrun --standalone: exit status $?"; tail -20 "$tmp/standalone.log"; }
same_weights "$tmp/ref.safetensors" "$tmp/standalone.safetensors" "torchrun --standalone --nproc_per_node 2"

check_comparison_fails "$tmp/torchrun.safetensors" --workers 2
[ "$failures" -eq 0 ] && echo "torchrun: all checks passed"
exit "$failures"
