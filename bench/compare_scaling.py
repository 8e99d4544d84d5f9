#!/usr/bin/env python3
"""Data-parallel weak scaling of the reference CNN: Loom (`loom train --workers N`)
side by side with PyTorch DDP over gloo (../shared/reference/pytorch_ddp_scaling.py),
same configuration, alternating the two frameworks.

Configuration (as the reference script): per-worker batch 128, SGD lr 0.01,
momentum 0.9, no weight decay, constant LR, 1 thread per worker. Loom's
data.batch_size is the GLOBAL batch, so it gets 128 * N.

Warm-up is excluded on both sides:
  - PyTorch: the reference script runs 3 untimed steps, then times --torch-steps
    steps between two barriers (rank 0's time).
  - Loom: `loom train` reports the wall time of its (only, partial) epoch,
    epoch_s, which includes the first steps (oneDNN primitive creation, cold
    allocator cache). Two runs with max_steps = S_short and S_long are made and
    the step time is (epoch_s(S_long) - epoch_s(S_short)) / (S_long - S_short),
    so start-up and warm-up cancel. Loom trains on the real Fashion-MNIST loader
    (shuffled, normalised); the PyTorch reference reuses one random batch.

The machine is shared: each run waits for a quiet machine, and a run during which
other processes used more than --max-foreign-load cores (from /proc/stat minus our
own children's CPU time) is measured again. Prints one JSON line per
(framework, N), with each round's step time and foreign load, then a Markdown
table of the medians over --rounds.

    flock /tmp/loom-cpu.lock python3 bench/compare_scaling.py [--build build] [--workers 1,2,4,8]
        [--loom-steps 5,30] [--torch-steps 5] [--rounds 3] [--python PY]

The PyTorch side runs with the current PyPI torch of the `bench` reference
environment (scripts/reference-env bench) unless --python names another.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ref = os.path.join(root, "..", "shared", "reference", "pytorch_ddp_scaling.py")
per_worker_batch = 128  # fixed by the reference script
train_samples = 60000   # Fashion-MNIST


def busy_cpu_s():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_for_quiet(max_load, window_s=5.0, give_up_s=900):
    """Waits until other processes use under `max_load` cores over a window (we run nothing meanwhile)."""
    deadline = time.time() + give_up_s
    while time.time() < deadline:
        b0 = busy_cpu_s()
        time.sleep(window_s)
        if (busy_cpu_s() - b0) / window_s < max_load:
            return
    print(f"# machine still busy after {give_up_s} s; measuring anyway", file=sys.stderr)


def measured(fn, max_load, retries):
    """Runs fn() until other processes used under `max_load` cores on average during the run.

    Returns (fn's result, the other processes' load during that run). The development
    machine is shared, and builds do not take the CPU lock that benchmarks take."""
    for attempt in range(retries + 1):
        wait_for_quiet(max_load)
        t, busy, own = time.time(), busy_cpu_s(), children_cpu_s()
        result = fn()
        wall = time.time() - t
        foreign = max(0.0, (busy_cpu_s() - busy) - (children_cpu_s() - own)) / wall
        if foreign < max_load or attempt == retries:
            return result, foreign
        print(f"# other processes used {foreign:.2f} cores during the run; measuring again", file=sys.stderr)


def loom_epoch_s(loom, job, n, steps):
    """Runs `steps` Loom steps with n workers; returns the epoch_s rank 0 reports."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = [loom, "train", job, "--workers", str(n), "--metrics-out", metrics,
               "--set", "train.threads=1", "--set", f"data.batch_size={per_worker_batch * n}",
               "--set", f"train.max_steps={steps}", "--set", "optimizer.lr=0.01",
               "--set", "optimizer.weight_decay=0.0", "--set", "schedule.name=constant"]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
        with open(metrics) as f:
            rec = json.loads(f.read().strip().splitlines()[-1])
    assert rec["step"] == steps, rec
    return rec["epoch_s"]


def loom_step_ms(loom, job, n, short, long):
    return (loom_epoch_s(loom, job, n, long) - loom_epoch_s(loom, job, n, short)) / (long - short) * 1e3


def torch_step_ms(python, reference, n, steps):
    out = subprocess.run([python, reference, str(n), "1", str(steps)], check=True,
                         capture_output=True, text=True, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])["step_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--job", default=os.path.join(root, "examples", "fashion_mnist", "cnn.toml"))
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--loom-steps", default="5,30", help="S_short,S_long: the difference is timed")
    ap.add_argument("--torch-steps", type=int, default=5, help="timed steps after the reference's 3 warm-up steps")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every (framework, N); medians are reported")
    ap.add_argument("--reference", default=ref)
    ap.add_argument("--max-foreign-load", type=float, default=0.15,
                    help="re-measure a run during which other processes used more cores than this")
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--python", default="", help="interpreter with torch for the reference; default: the current "
                    "PyPI torch of `scripts/reference-env --path bench` (Debian's /usr/bin/python3 has torch 1.13, "
                    "generic BLAS)")
    args = ap.parse_args()
    python = args.python or os.path.join(subprocess.run(
        [os.path.join(root, "scripts", "reference-env"), "--path", "bench"], check=True, capture_output=True,
        text=True, timeout=30).stdout.strip(), "bin", "python")
    torch_version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], check=True,
                                   capture_output=True, text=True, timeout=300).stdout.strip()
    loom = os.path.join(args.build, "bin", "loom")
    short, long = (int(s) for s in args.loom_steps.split(","))
    workers = [int(n) for n in args.workers.split(",")]
    for n in workers:
        # Both runs must stay inside one epoch, or epoch_s stops being a step count's time.
        if long > train_samples // (per_worker_batch * n):
            sys.exit(f"--loom-steps {long} is more than one epoch at {n} workers")

    t0 = time.time()
    frameworks = ("loom", "pytorch-ddp-gloo")
    runs = {(fw, n): [] for fw in frameworks for n in workers}   # step times, ms
    loads = {(fw, n): [] for fw in frameworks for n in workers}  # other processes' cores during each
    for r in range(args.rounds):
        # Every worker count in every round, and the two frameworks alternating, so that
        # a slow spell of the machine hits all of them rather than one cell of the table.
        for n in workers:
            for fw in frameworks:
                if fw == "loom":
                    fn = lambda: loom_step_ms(loom, args.job, n, short, long)
                else:
                    fn = lambda: torch_step_ms(python, args.reference, n, args.torch_steps)
                ms, load = measured(fn, args.max_foreign_load, args.retries)
                runs[(fw, n)].append(ms)
                loads[(fw, n)].append(load)
                print(f"# round {r + 1}: {fw} N={n}: {ms:.1f} ms/step, other load {load:.2f} cores", file=sys.stderr,
                      flush=True)
    step_ms = {k: statistics.median(v) for k, v in runs.items()}
    for n in workers:
        for fw in frameworks:
            ms = step_ms[(fw, n)]
            print(json.dumps({"framework": fw, "workers": n, "threads_per_worker": 1,
                              "timed_steps": f"{long}-{short}" if fw == "loom" else str(args.torch_steps),
                              "step_ms": round(ms, 2), "samples_s": round(per_worker_batch * n / ms * 1e3, 1),
                              "step_ms_runs": [round(x, 2) for x in runs[(fw, n)]],
                              "foreign_load_cores": [round(x, 2) for x in loads[(fw, n)]]}), flush=True)

    cores = os.cpu_count() or 1
    accepted = max(max(v) for v in loads.values())
    print(f"\nPyTorch {torch_version} ({python}); {cores} cores; per-worker batch {per_worker_batch}, 1 thread per worker; Loom timed steps "
          f"{long}-{short}, PyTorch timed steps {args.torch_steps} (after 3 warm-up); "
          f"median of {args.rounds} round(s); {time.time() - t0:.0f} s in all (with waits and re-runs); "
          f"other processes used at most {accepted:.2f} cores during a kept run\n")
    print("| workers | Loom samples/s | Loom speed-up (efficiency) | PyTorch samples/s "
          "| PyTorch speed-up (efficiency) | Loom / PyTorch step time |")
    print("|---|---|---|---|---|---|")
    sps = {k: per_worker_batch * k[1] / v * 1e3 for k, v in step_ms.items()}
    base = workers[0]
    for n in workers:
        cells = [str(n)]
        for fw in frameworks:
            # Weak scaling: speed-up of samples/s over the first worker count; efficiency = speed-up / (n / base).
            up = sps[(fw, n)] / sps[(fw, base)]
            cells += [f"{sps[(fw, n)]:.1f}", f"{up:.2f}x ({up * base / n:.0%})"]
        # Below 1.0: Loom is faster (the convention of docs/BENCHMARKS.md).
        cells.append(f"{step_ms[('loom', n)] / step_ms[('pytorch-ddp-gloo', n)]:.2f}x")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
