#!/usr/bin/env python3
"""MXNet 1.9.1 KVStore (ps-lite) push+pull throughput, the twin of
`loom bench ps` (docs/BENCHMARKS.md, "Parameter server: push+pull throughput").

W workers and S servers plus ps-lite's scheduler, started the way MXNet's own
launcher (tools/launch.py, dmlc-tracker) starts them: every process gets
DMLC_ROLE (scheduler / server / worker), DMLC_PS_ROOT_URI and
DMLC_PS_ROOT_PORT (the scheduler's address), DMLC_NUM_WORKER,
DMLC_NUM_SERVER, and DMLC_NODE_HOST (its own address). The scheduler and the
servers run `python -c "import mxnet"`: importing mxnet in a process whose
role is not worker runs the KVStore server loop (mxnet/kvstore/kvstore_server.py)
and exits when the workers finish. Each worker runs this script with --role
worker: for each size B it inits one key of B/4 f32 (or --keys K keys of
B/4/K), calls kv.pushpull(keys, grads, out=weights) twice to warm up, passes
a barrier, then times N calls (waiting for the pulled values each time), the
same N as `loom bench ps` (1e9 / 2B, clamped to 10..200). Worker 0 prints one
JSON line per size with the same fields: ms per call (mean), throughput_GBs
= 2B / ms per worker, aggregate_GBs, and p50/p90/p99 of the single calls.

No optimizer is set on the servers, so in dist_sync a key's value becomes the
sum of the workers' pushes (MXNet's default, and Loom's without an
optimizer). A key of more than MXNET_KVSTORE_BIGARRAY_BOUND elements is split
evenly over all servers; --bigarray-bound defaults to 2^20 + 1 so that the
split matches `loom bench ps`'s default --split-bound 2^20 (a 4 MiB key stays
on one server in both). Every process runs with OMP_NUM_THREADS=1 (a Loom
bench ps worker uses 1 kernel thread).

Hosts: without --hosts everything runs on loopback (DMLC_NODE_HOST=127.0.0.1,
DMLC_INTERFACE=lo). --hosts NS0,NS1,... names network namespaces (from
../shared/tools/netns-cluster, host i at 10.77.0.(i+1)): workers first, then
servers, as `loom bench ps --hosts`; the scheduler runs on the first host.
Each process is started with `ip netns exec NS`.

    $(scripts/reference-env --path mxnet)/bin/python bench/mxnet_kvstore.py --workers 2 --servers 2 --bytes 4M,16M,64M
    ... --hosts lmx0,lmx1,lmx2,lmx3 --link-gbit 1
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time


def parse_bytes(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s.strip())
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def pct(xs, q):  # nearest rank, as loom bench ps
    xs = sorted(xs)
    import math
    r = min(max(int(math.ceil(q * len(xs))), 1), len(xs))
    return xs[r - 1]


def worker(args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import mxnet as mx
    from mxnet import nd
    kv = mx.kv.create(args.type)
    next_key = 0
    for s in args.bytes.split(","):
        b = parse_bytes(s)
        n = b // 4 // args.keys
        keys = list(range(next_key, next_key + args.keys))
        next_key += args.keys
        grads = [nd.ones((n,)) for _ in keys]
        weights = [nd.zeros((n,)) for _ in keys]
        kv.init(keys, weights)
        moved = n * 4 * args.keys

        def call():
            kv.pushpull(keys, grads, out=weights)
            for w in weights:
                w.wait_to_read()

        for _ in range(2):
            call()
        iters = args.iters or int(min(max(1e9 / (2.0 * moved), 10), 200))
        kv._barrier()
        lat = []
        t0 = last = time.perf_counter()
        for _ in range(iters):
            call()
            now = time.perf_counter()
            lat.append(now - last)
            last = now
        dt = (last - t0) / iters
        kv._barrier()
        if kv.rank == 0:
            per_worker = 2.0 * moved / dt / 1e9
            out = {"framework": "mxnet " + mx.__version__, "workers": kv.num_workers, "servers": args.servers,
                   "bytes": moved, "keys": args.keys, "type": args.type, "op": "pushpull", "iters": iters,
                   "ms": round(dt * 1e3, 3), "throughput_GBs": round(per_worker, 3),
                   "aggregate_GBs": round(per_worker * kv.num_workers, 3),
                   "p50_ms": round(pct(lat, 0.5) * 1e3, 3), "p90_ms": round(pct(lat, 0.9) * 1e3, 3),
                   "p99_ms": round(pct(lat, 0.99) * 1e3, 3)}
            if args.link_gbit:
                # Same bound as loom bench ps: max(B, W * bytes on the busiest server) / link rate.
                S, W = args.servers, kv.num_workers
                held = [0.0] * S
                for k in keys:
                    if n > args.bigarray_bound:
                        for j in range(S):
                            held[j] += n * 4 / S
                    else:
                        held[k % S] += n * 4  # ps-lite's key range: approximately key mod S for small keys
                busiest = max(moved, W * max(held))
                bound = 2 * moved / (busiest / (args.link_gbit * 1e9 / 8)) / 1e9
                out.update({"link_gbit": args.link_gbit, "link_bound_GBs": round(bound, 3),
                            "of_link_bound": round(per_worker / bound, 3)})
            print(json.dumps(out), flush=True)
    del kv  # finalises ps-lite: the scheduler then stops the servers


def launch(args):
    py = args.python or sys.executable
    hosts = args.hosts.split(",") if args.hosts else []
    nproc = args.workers + args.servers
    if hosts and len(hosts) < nproc:
        sys.exit(f"--hosts names {len(hosts)} hosts, {nproc} needed (workers, then servers)")

    def addr(i):
        if not hosts:
            return "127.0.0.1"
        return "10.77.0.%d" % (int(re.search(r"(\d+)$", hosts[i]).group(1)) + 1)

    base = dict(os.environ)
    base.update({"DMLC_PS_ROOT_URI": addr(0), "DMLC_PS_ROOT_PORT": str(args.port),
                 "DMLC_NUM_WORKER": str(args.workers), "DMLC_NUM_SERVER": str(args.servers),
                 "OMP_NUM_THREADS": "1", "MXNET_KVSTORE_BIGARRAY_BOUND": str(args.bigarray_bound),
                 "PS_VERBOSE": "0"})
    if not hosts:
        base["DMLC_INTERFACE"] = "lo"
    procs = []

    def start(role, i, cmd):
        env = dict(base, DMLC_ROLE=role, DMLC_NODE_HOST=addr(i))
        full = (["ip", "netns", "exec", hosts[i]] if hosts else []) + cmd
        p = subprocess.Popen(full, env=env, stdout=subprocess.PIPE if role == "worker" else subprocess.DEVNULL,
                             stderr=subprocess.PIPE if role == "worker" else subprocess.DEVNULL, text=True,
                             start_new_session=True)
        procs.append((role, p))
        return p

    start("scheduler", 0, [py, "-c", "import mxnet"])
    for j in range(args.servers):
        start("server", args.workers + j, [py, "-c", "import mxnet"])
    me = os.path.abspath(__file__)
    wargs = ["--role", "worker", "--bytes", args.bytes, "--keys", str(args.keys), "--type", args.type,
             "--servers", str(args.servers), "--iters", str(args.iters), "--bigarray-bound", str(args.bigarray_bound)]
    if args.link_gbit:
        wargs += ["--link-gbit", str(args.link_gbit)]
    workers = [start("worker", i, [py, me] + wargs) for i in range(args.workers)]
    rc = 0
    try:
        # ps-lite numbers the workers in the order they register, so any of
        # them may be rank 0, the one that prints.
        deadline = time.time() + args.timeout
        for p in workers:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
            sys.stdout.write(out)
            sys.stdout.flush()
            if p.returncode != 0:
                sys.stderr.write(err[-3000:])
                rc = 1
        deadline = time.time() + 30
        for role, p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        sys.stderr.write("mxnet_kvstore: timed out\n")
        rc = 124
    finally:
        for role, p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
    return rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="launch", choices=["launch", "worker"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--bytes", default="4M,16M,64M")
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--type", default="dist_sync")
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--bigarray-bound", type=int, default=(1 << 20) + 1)
    ap.add_argument("--link-gbit", type=float, default=0)
    ap.add_argument("--hosts", default="", help="network namespaces, workers first, then servers")
    ap.add_argument("--port", type=int, default=9391)
    ap.add_argument("--python", default="", help="interpreter with mxnet (default: this one)")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if args.role == "worker":
        return worker(args)
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
