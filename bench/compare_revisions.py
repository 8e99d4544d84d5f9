#!/usr/bin/env python3
"""Two builds of Loom side by side, in one run: the measures a refactor must
not slow down. Each round runs every measure with the "before" build and the
"after" build in turn (the order alternating from round to round), so drift
of a busy machine hits both alike; the table gives the median over rounds and
the min-max range, and after / before.

    python3 bench/compare_revisions.py --before ../base/build --after build [--rounds 3] [--netns]

Measures (each a program of the build, as a user runs it):
  allreduce  `loom bench allreduce --workers 4 --sizes 4M,16M,64M`: busbw GB/s
  ps         `loom bench ps --workers 2 --servers 2 --bytes 4M,16M,64M --insecure`: GB/s per worker
             (the after build also with --no-shm when it has that flag: its socket path alone)
  ps netns   the same across 4 network namespaces at 1 Gbit/s (--netns; needs root)
  cnn step   `bench/step_time --model cnn --threads 1`: ms per training step
  ctr        `loom launch --workers 2 --servers 2 -- loom_ctr --type dist_sync --steps 1000`: steps/s
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
netns_cluster = os.path.join(root, "..", "shared", "tools", "netns-cluster")


def run(cmd, timeout=900):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr


def json_lines(text):
    out = []
    for line in text.splitlines():
        i = line.find("{")
        if i < 0:
            continue
        try:
            out.append(json.loads(line[i:]))
        except json.JSONDecodeError:
            pass
    return out


def has_flag(loom, sub, flag):
    return flag in run([loom, "bench", sub, "--help"])


def measures(build, args, socket_only=False, socket_flag=True):
    """name -> function returning {label: value} for one run of this build."""
    loom = os.path.join(build, "bin", "loom")
    sizes = "4M,16M,64M"

    def allreduce():
        rows = json_lines(run([loom, "bench", "allreduce", "--workers", "4", "--sizes", sizes]))
        return {f"allreduce {r['bytes'] >> 20} MiB busbw GB/s": r["busbw_GBs"] for r in rows if "busbw_GBs" in r}

    def ps(extra, tag):
        def f():
            cmd = [loom, "bench", "ps", "--workers", "2", "--servers", "2", "--bytes", sizes, "--insecure"] + extra
            rows = json_lines(run(cmd))
            return {f"ps{tag} {r['bytes'] >> 20} MiB GB/s": r["throughput_GBs"] for r in rows if "throughput_GBs" in r}
        return f

    def cnn():
        rows = json_lines(run([os.path.join(build, "bench", "step_time"), "--model", "cnn", "--threads", "1",
                               "--steps", "20", "--warmup", "3"]))
        return {"cnn step ms (1 thread)": rows[-1]["step_ms"]}

    def ctr():
        text = run([loom, "launch", "--workers", "2", "--servers", "2", "--",
                    os.path.join(build, "bin", "loom_ctr"), "--type", "dist_sync", "--steps", "1000"])
        m = re.search(r"steps_per_s=([0-9.]+)", text)
        return {"ctr dist_sync steps/s": float(m.group(1))}

    out = {"allreduce": allreduce, "ps": ps([], ""), "cnn": cnn, "ctr": ctr}
    if socket_only:  # a build without the flag has no shared-memory path: plain ps is its socket path
        out["ps_socket"] = ps(["--no-shm"] if socket_flag else [], " socket only")
    if args.netns:
        hosts = ",".join(f"netns:{args.prefix}{i}:1" for i in range(4))
        out["ps_netns"] = ps(["--hosts", hosts], " netns 1 Gbit/s")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="build directory of the old revision")
    ap.add_argument("--after", default=os.path.join(root, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated measures (allreduce,ps,ps_socket,ps_netns,cnn,ctr)")
    ap.add_argument("--netns", action="store_true")
    ap.add_argument("--prefix", default="lrv")
    args = ap.parse_args()
    socket_flag = has_flag(os.path.join(args.after, "bin", "loom"), "ps", "--no-shm")
    before_flag = has_flag(os.path.join(args.before, "bin", "loom"), "ps", "--no-shm")
    builds = {"before": measures(args.before, args, socket_only=socket_flag, socket_flag=before_flag),
              "after": measures(args.after, args, socket_only=socket_flag)}
    names = [n for n in builds["after"] if not args.only or n in args.only.split(",")]
    res = {}
    if args.netns:
        subprocess.run([netns_cluster, "up", "4", "--rate", "1gbit", "--prefix", args.prefix], check=True, timeout=60)
    try:
        for rnd in range(args.rounds):
            order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
            for name in names:
                for b in order:
                    for label, v in builds[b][name]().items():
                        res.setdefault((label, b), []).append(v)
                    print(f"round {rnd + 1}: {name} {b} done", file=sys.stderr, flush=True)
    finally:
        if args.netns:
            subprocess.run([netns_cluster, "down", "--prefix", args.prefix], timeout=60)

    print(f"\nbefore: {args.before}  after: {args.after}  ({args.rounds} rounds, median (min-max))\n")
    print("| measure | before | after | after / before |")
    print("|---|---|---|---|")
    labels = []
    for (label, _) in res:
        if label not in labels:
            labels.append(label)
    for label in labels:
        b, a = res.get((label, "before"), []), res.get((label, "after"), [])
        f = lambda xs: f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "-"
        ratio = f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"
        print(f"| {label} | {f(b)} | {f(a)} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
