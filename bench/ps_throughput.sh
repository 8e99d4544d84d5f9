#!/usr/bin/env bash
# Parameter-server push+pull throughput beside all-reduce of the same bytes
# (docs/BENCHMARKS.md, "Parameter server: push+pull throughput").
#
#   bench/ps_throughput.sh [BUILD_DIR] [loopback|netns|all]      (default: build all)
#
# Prints the commands and the JSON lines of worker 0 (one per size). The netns
# part needs root: it makes 4 network namespaces lmps0..3 (10.77.0.1-4) joined
# by links shaped to 1 Gbit/s (../shared/tools/netns-cluster) and removes
# them at the end. Each timing run holds /tmp/loom-cpu.lock so that runs of
# different people on the same machine do not overlap.
set -euo pipefail
build=${1:-build}
part=${2:-all}
loom=$build/bin/loom
netns_cluster=${NETNS_CLUSTER:-$(dirname "$0")/../../shared/tools/netns-cluster}
prefix=lmps
sizes=1M,4M,16M,64M
shaped_sizes=4M,16M,64M

# Runs one benchmark: the JSON lines, then wall and CPU seconds of all its processes.
run() {
  echo "\$ $*"
  flock /tmp/loom-cpu.lock /usr/bin/time -f "# %e s wall, %U s user, %S s sys (all processes)" \
      timeout 600 "$@" 2>&1 | grep -E '^\[worker 0\] \{|^# |rror' | sed 's/^\[worker 0\] //'
}

if [ "$part" = loopback ] || [ "$part" = all ]; then
  for ws in "1 1" "2 2" "4 2"; do
    set -- $ws
    run "$loom" bench ps --workers "$1" --servers "$2" --bytes $sizes
    run "$loom" bench ps --workers "$1" --servers "$2" --bytes $sizes --insecure
  done
  run "$loom" bench ps --workers 2 --servers 2 --bytes $sizes --keys 8
  run "$loom" bench allreduce --workers 2 --sizes $sizes                          # shared memory
  run "$loom" bench allreduce --workers 2 --sizes $sizes --transport zmq          # TCP, CURVE
  run "$loom" bench allreduce --workers 2 --sizes $sizes --transport zmq --insecure
fi

if [ "$part" = netns ] || [ "$part" = all ]; then
  "$netns_cluster" up 4 --rate 1gbit --prefix $prefix
  trap '"$netns_cluster" down --prefix $prefix' EXIT
  # Workers on lmps0 and lmps1, servers on lmps2 and lmps3 (servers take the slots after the workers').
  hosts=netns:${prefix}0:1,netns:${prefix}1:1,netns:${prefix}2:1,netns:${prefix}3:1
  for security in "" --insecure; do   # CURVE (the default), then plaintext
    for keys in 1 8 32 128; do
      run "$loom" bench ps --workers 2 --servers 2 --hosts $hosts --bytes $shaped_sizes --link-gbit 1 --keys $keys $security
    done
    run "$loom" bench allreduce --workers 2 --hosts netns:${prefix}0:1,netns:${prefix}1:1 --sizes $shaped_sizes $security
  done
  # 4 MiB is one key of 2^20 elements, not above the split bound: it lives whole on one server.
  run "$loom" bench ps --workers 2 --servers 2 --hosts $hosts --bytes 4M --link-gbit 1 --split-bound 262144 --insecure
  run "$loom" bench ps --workers 2 --servers 2 --hosts $hosts --bytes $shaped_sizes --link-gbit 1 --type dist_async --insecure
fi
