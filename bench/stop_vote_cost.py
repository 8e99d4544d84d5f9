#!/usr/bin/env python3
"""What the per-step stop vote costs (issue: preemption): whole `loom train`
runs of a 2-worker parameter-server job (dist_sync, 1 server; the MLP of
tests/cli/preempt_job.toml on its synthetic data, 1500 steps of about 4 ms) with
the vote on (the default `[train] stop_signals`) and off
(`stop_signals = []`), run in pairs whose order alternates; per pair the
ratios of wall time and of CPU time (the children's user + system), then
min / median / max over the pairs. With --baseline, a second binary's runs
with the vote on are paired with the first's too (after / before).

    nice -n -15 python3 bench/stop_vote_cost.py [--loom build/bin/loom] [--baseline OTHER_LOOM] [--pairs 6]
        [--mode dist_sync] [--steps 1500]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)



def run(cmd):
    """Wall and CPU seconds of one whole command (and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pairs(a, b, n):
    """n pairs of (a, b), the order alternating; the ratios a/b of wall and CPU time."""
    walls, cpus = [], []
    for i in range(n):
        if i % 2 == 0:
            ra = run(a)
            rb = run(b)
        else:
            rb = run(b)
            ra = run(a)
        walls.append(ra[0] / rb[0])
        cpus.append(ra[1] / rb[1])
    return walls, cpus


def spread(v):
    return f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom", default=os.path.join(root, "build", "bin", "loom"))
    ap.add_argument("--baseline", default="", help="another loom binary: its votes-on runs against --loom's")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--mode", default="dist_sync")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(root, "tests", "cli", "synthetic_idx.py"), tmp, "2048"], check=True,
                       stdout=subprocess.DEVNULL)
        job = os.path.join(tmp, "job.toml")
        with open(os.path.join(root, "tests", "cli", "preempt_job.toml")) as f:
            text = f.read().replace("@ROOT@", tmp)
        with open(job, "w") as f:
            f.write(text)

        def cmd(loom, votes):
            c = [loom, "train", job, "--workers", "2", "--set", f"distributed.mode={args.mode}", "--set",
                 "distributed.servers=1", "--set", f"train.max_steps={args.steps}", "--set",
                 "train.checkpoint_every_steps=0"]
            return c if votes else c + ["--set", "train.stop_signals=[]"]

        print(f"# load average {os.getloadavg()[0]:.2f}; A/B per pair, min / median / max")
        print("| A against B | wall A/B | cpu A/B |")
        print("|---|---|---|")
        rows = [("votes on / off", cmd(args.loom, True), cmd(args.loom, False))]
        if args.baseline:
            rows.append(("baseline: votes on / off", cmd(args.baseline, True), cmd(args.baseline, False)))
            rows.append(("votes on: loom / baseline", cmd(args.loom, True), cmd(args.baseline, True)))
        for name, a, b in rows:
            walls, cpus = pairs(a, b, args.pairs)
            print(f"| {name} | {spread(walls)} | {spread(cpus)} |", flush=True)
        print(f"# load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
