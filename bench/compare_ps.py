#!/usr/bin/env python3
"""Parameter-server push+pull throughput, Loom (`loom bench ps`) side by side
with MXNet 1.9.1's KVStore over ps-lite (bench/mxnet_kvstore.py, run by the
`mxnet` reference environment): same W workers and S servers, same sizes,
one key per call, dist_sync, the same iteration counts. In each round the
frameworks run one after the other (Loom plaintext, Loom CURVE, MXNet, in an
order that rotates from round to round); the table gives medians over rounds
of the per-worker throughput (2B / mean time per call) and the min-max range.
ps-lite sends plaintext, so Loom / MXNet is taken against Loom's plaintext
(`--insecure`) run; Loom's default (CURVE-encrypted) is shown beside it. On
one host Loom's dense slices go through shared memory (ps/shm_staging.h);
the "socket only" column is Loom plaintext with `--no-shm`, what it does
without that path (and what it does across hosts).

    python3 bench/compare_ps.py [--workers 2 --servers 2] [--bytes 4M,16M,64M] [--rounds 3] [--netns]

--netns makes W+S network namespaces (../shared/tools/netns-cluster up N
--rate 1gbit --prefix lmx, hosts at 10.77.0.1..N), one process per host,
workers first, and removes them at the end (needs root).
"""
import argparse
import os
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

from reference import env_python, json_rows  # bench/reference.py: shared by the compare_* drivers
netns_cluster = os.path.join(root, "..", "shared", "tools", "netns-cluster")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--bytes", default="4M,16M,64M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--netns", action="store_true")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--prefix", default="lmx")
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--no-curve", action="store_true")
    args = ap.parse_args()
    loom = os.path.join(args.build, "bin", "loom")
    mx = env_python("mxnet")
    n = args.workers + args.servers
    common = ["--workers", str(args.workers), "--servers", str(args.servers), "--bytes", args.bytes]
    if args.iters:
        common += ["--iters", str(args.iters)]
    loom_cmd = [loom, "bench", "ps"] + common
    mx_cmd = [mx, os.path.join(here, "mxnet_kvstore.py")] + common
    if args.netns:
        subprocess.run([netns_cluster, "up", str(n), "--rate", args.rate, "--prefix", args.prefix], check=True,
                       timeout=60)
        hosts = [f"{args.prefix}{i}" for i in range(n)]
        gbit = float(args.rate.replace("gbit", "")) if args.rate.endswith("gbit") else 0
        loom_cmd += ["--hosts", ",".join(f"netns:{h}:1" for h in hosts)]
        mx_cmd += ["--hosts", ",".join(hosts)]
        if gbit:
            loom_cmd += ["--link-gbit", str(gbit)]
            mx_cmd += ["--link-gbit", str(gbit)]
    fws = {"loom_plain": loom_cmd + ["--insecure"], "mxnet": mx_cmd}
    if not args.no_curve:
        fws["loom_curve"] = loom_cmd
    if not args.netns:
        fws["loom_socket"] = loom_cmd + ["--insecure", "--no-shm"]
    res = {}
    try:
        names = list(fws)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for fw in order:
                for r in json_rows(fws[fw], 900):
                    res.setdefault((fw, r["bytes"]), []).append(r)
    finally:
        if args.netns:
            subprocess.run([netns_cluster, "down", "--prefix", args.prefix], timeout=60)

    def med(fw, b, f):
        xs = [r[f] for r in res.get((fw, b), [])]
        return (statistics.median(xs), min(xs), max(xs)) if xs else None

    where = f"netns {args.rate}" if args.netns else "loopback"
    print(f"\n{args.workers} workers + {args.servers} servers, {where}, dist_sync, one key; "
          f"GB/s per worker (2B / ms per call), median (min-max) of {args.rounds} rounds\n")
    extra = " | of link bound (Loom plain / MXNet)" if args.netns else ""
    sock = not args.netns
    print("| size | Loom plaintext | Loom CURVE | MXNet 1.9.1 (ps-lite) | ms per call Loom plain / MXNet | "
          "**Loom plain / MXNet** | Loom CURVE / MXNet" + extra +
          (" | Loom plaintext, socket only (--no-shm) | socket only / MXNet" if sock else "") + " |")
    print("|---|---|---|---|---|---|---|" + ("---|" if args.netns else "") + ("---|---|" if sock else ""))
    sizes = sorted({b for (_, b) in res})
    for b in sizes:
        lp, lc, m = med("loom_plain", b, "throughput_GBs"), med("loom_curve", b, "throughput_GBs"), med("mxnet", b, "throughput_GBs")
        f = lambda x: f"{x[0]:.3f} ({x[1]:.3f}-{x[2]:.3f})" if x else "-"
        lms, mms = med("loom_plain", b, "ms"), med("mxnet", b, "ms")
        line = (f"| {b >> 20} MiB | {f(lp)} | {f(lc)} | {f(m)} | "
                f"{lms[0]:.1f} / {mms[0]:.1f} | " if lms and mms else f"| {b >> 20} MiB | {f(lp)} | {f(lc)} | {f(m)} | - | ")
        line += f"**{lp[0] / m[0]:.2f}x** | " if lp and m else "- | "
        line += f"{lc[0] / m[0]:.2f}x |" if lc and m else "- |"
        if args.netns:
            ol, om = med("loom_plain", b, "of_link_bound"), med("mxnet", b, "of_link_bound")
            line += f" {ol[0] * 100:.1f}% / {om[0] * 100:.1f}% |" if ol and om else " - |"
        if sock:
            ls = med("loom_socket", b, "throughput_GBs")
            line += f" {f(ls)} | " + (f"{ls[0] / m[0]:.2f}x |" if ls and m else "- |")
        print(line)


if __name__ == "__main__":
    sys.exit(main())
