#!/usr/bin/env bash
# Parameter-server push+pull throughput beside all-reduce of the same bytes
# (docs/BENCHMARKS.md, "Parameter server: push+pull throughput").
#
#   bench/ps_throughput.sh [BUILD_DIR] [loopback|netns|all]      (default: build all)
#
# Prints the commands and the JSON lines of worker 0 (one per size). The netns
# part needs root: it makes 6 network namespaces lmps0..5 (10.77.0.1-6) joined
# by links shaped to 1 Gbit/s (../shared/tools/netns-cluster) and removes
# them at the end; ROUNDS=N repeats the main 2 + 2 single-key runs. Each timing run holds /tmp/loom-cpu.lock so that runs of
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
  "$netns_cluster" up 6 --rate 1gbit --prefix $prefix
  trap '"$netns_cluster" down --prefix $prefix' EXIT
  h() { local out="" i; for i in "$@"; do out="$out${out:+,}netns:${prefix}$i:1"; done; echo "$out"; }
  # What TCP itself delivers on these links, in the 2 + 2 pattern (8 flows, 2 in and 2 out of every host).
  python3 "$(dirname "$0")/tcp_pattern.py" --prefix $prefix --hosts 4 --mib 256
  # Workers first, then servers: 2 + 2 on lmps0-3, 1 + 1 on lmps0 and lmps2, 2 + 4 on lmps0-5.
  for security in "" --insecure; do   # CURVE (the default), then plaintext
    for round in $(seq "${ROUNDS:-1}"); do
      run "$loom" bench ps --workers 2 --servers 2 --hosts "$(h 0 1 2 3)" --bytes $shaped_sizes --link-gbit 1 $security
    done
    for keys in 8 128; do
      run "$loom" bench ps --workers 2 --servers 2 --hosts "$(h 0 1 2 3)" --bytes $shaped_sizes --link-gbit 1 --keys $keys $security
    done
    run "$loom" bench ps --workers 1 --servers 1 --hosts "$(h 0 2)" --bytes $shaped_sizes --link-gbit 1 $security
    run "$loom" bench ps --workers 2 --servers 4 --hosts "$(h 0 1 2 3 4 5)" --bytes $shaped_sizes --link-gbit 1 $security
    run "$loom" bench allreduce --workers 2 --hosts "$(h 0 1)" --sizes $shaped_sizes $security
  done
  run "$loom" bench ps --workers 2 --servers 2 --hosts "$(h 0 1 2 3)" --bytes $shaped_sizes --link-gbit 1 --type dist_async
fi
