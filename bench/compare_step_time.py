#!/usr/bin/env python3
"""Side-by-side training step time: Loom's bench/step_time vs PyTorch's reference
script (../shared/reference/pytorch_cpu_step.py), same models, batch 128, SGD
momentum, on the same machine in the same run. Prints a Markdown table.

    python3 bench/compare_step_time.py [--build build] [--threads 1,2] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
ref = os.path.join(here, "..", "..", "shared", "reference", "pytorch_cpu_step.py")


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(here, "..", "build"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--reference", default=ref)
    args = ap.parse_args()
    step_time = os.path.join(args.build, "bench", "step_time")
    rows = []
    for t in [int(x) for x in args.threads.split(",")]:
        loom = {"mlp": [], "cnn": []}
        torch = {"mlp": [], "cnn": []}
        for _ in range(args.rounds):
            # Alternate the two frameworks so drift in machine load hits both.
            r = run(["/usr/bin/python3", args.reference, str(t)])
            torch["mlp"].append(r["mlp_bs128_step_ms"])
            torch["cnn"].append(r["cnn_bs128_step_ms"])
            torch_version = r["torch"]
            for model in ("mlp", "cnn"):
                loom[model].append(run([step_time, "--model", model, "--threads", str(t)])["step_ms"])
        for model in ("mlp", "cnn"):
            lm, tm = statistics.median(loom[model]), statistics.median(torch[model])
            rows.append((model, t, lm, tm, lm / tm))
    print(f"PyTorch {torch_version}; medians of {args.rounds} alternating rounds\n")
    print("| model | threads | Loom step (ms) | PyTorch step (ms) | Loom / PyTorch |")
    print("|---|---|---|---|---|")
    for model, t, lm, tm, ratio in rows:
        print(f"| {model} | {t} | {lm:.2f} | {tm:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
