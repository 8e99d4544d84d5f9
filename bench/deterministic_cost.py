#!/usr/bin/env python3
"""What deterministic data parallelism costs (issue 20): the step time of
`loom train` with [distributed] deterministic = true against the same run
without it, for the reference MLP and CNN (examples/fashion_mnist, global
batch 128) at 1, 2 and 4 workers, one thread each.

Every run is

    loom train examples/fashion_mnist/{mlp,cnn}.toml --workers N --set train.threads=1
        --set train.max_steps=STEPS --set distributed.deterministic=true|false
        [--set distributed.deterministic_atoms=A]

and its step time is the global batch over the samples/s of the epoch line
rank 0 prints ("epoch 1/E: step S, train loss L, X samples/s"; the epoch's
wall time, data loading of the first batch included, evaluation excluded).
With one worker, normal mode is the local strategy, which is what a user of one
process gets. In each round every (model, workers, mode) runs once, normal and
deterministic back to back, so drift in machine load hits both; the table gives
the median over rounds and the ratio deterministic / normal (the issue's goal:
at most 1.25).

    python3 bench/deterministic_cost.py [--loom build/bin/loom] [--models mlp,cnn] [--workers 1,2,4]
        [--steps 60] [--rounds 3] [--atoms A] [--json-out FILE]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tomllib

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+: step (\d+), train loss [^,]+, (\d+) samples/s")


def step_ms(loom, job, workers, steps, deterministic, atoms, timeout):
    cmd = [loom, "train", job, "--workers", str(workers), "--set", "train.threads=1",
           "--set", f"train.max_steps={steps}", "--set", f"distributed.deterministic={str(deterministic).lower()}"]
    if atoms and deterministic:
        cmd += ["--set", f"distributed.deterministic_atoms={atoms}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-2000:]}")
    found = [m for m in EPOCH_LINE.finditer(p.stdout + p.stderr)]
    if not found:
        raise RuntimeError(f"{' '.join(cmd)}: no epoch line in its output:\n{(p.stdout + p.stderr)[-2000:]}")
    epoch, step, samples_per_s = int(found[-1].group(1)), int(found[-1].group(2)), int(found[-1].group(3))
    if epoch != 1:
        # The epoch line's rate is that epoch's: with more steps than one epoch
        # it would time only the last, partial one.
        raise RuntimeError(f"{' '.join(cmd)}: {steps} steps run into epoch {epoch}; use at most one epoch of steps")
    if step != steps:
        raise RuntimeError(f"{' '.join(cmd)}: stopped at step {step}, expected {steps}")
    with open(job, "rb") as f:
        batch = tomllib.load(f)["data"]["batch_size"]
    return 1000.0 * batch / samples_per_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom", default=os.path.join(root, "build", "bin", "loom"))
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--atoms", type=int, default=0, help="deterministic_atoms (default: the job's, 8)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    models = args.models.split(",")
    workers = [int(w) for w in args.workers.split(",")]

    times = {}  # (model, workers, deterministic) -> [ms]
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for model in models:
            job = os.path.join(root, "examples", "fashion_mnist", f"{model}.toml")
            for n in workers:
                # Alternate which mode goes first, so a slow spell does not always hit the same one.
                for det in ((False, True) if r % 2 == 0 else (True, False)):
                    ms = step_ms(args.loom, job, n, args.steps, det, args.atoms, args.timeout)
                    times.setdefault((model, n, det), []).append(ms)
                    print(f"round {r + 1}/{args.rounds}: {model} workers {n} "
                          f"{'deterministic' if det else 'normal'}: {ms:.1f} ms/step", file=sys.stderr, flush=True)

    atoms = args.atoms or 8
    load_after = os.getloadavg()
    # The machine's load (1-minute average, this script's own runs included): paired ratios
    # survive a loaded machine better than the absolute times do.
    print(f"\n{args.steps} steps, global batch 128, train.threads=1 per worker, median of {args.rounds} rounds "
          f"(deterministic_atoms = {atoms}); load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| model | workers | normal ms/step | deterministic ms/step | ratio |")
    print("|---|---|---|---|---|")
    rows = []
    for model in models:
        for n in workers:
            normal = statistics.median(times[(model, n, False)])
            det = statistics.median(times[(model, n, True)])
            rows.append({"model": model, "workers": n, "normal_ms": normal, "deterministic_ms": det,
                         "ratio": det / normal, "normal_all": times[(model, n, False)],
                         "deterministic_all": times[(model, n, True)]})
            print(f"| {model} | {n} | {normal:.1f} | {det:.1f} | {det / normal:.2f}x |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"steps": args.steps, "rounds": args.rounds, "atoms": atoms, "rows": rows,
                       "load_average": [load_before[0], load_after[0]]}, f, indent=1)


if __name__ == "__main__":
    main()
