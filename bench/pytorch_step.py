#!/usr/bin/env python3
"""PyTorch twin of bench/step_time: one training step (zero_grad, forward,
cross-entropy, backward, SGD-momentum step, lr 0.01, momentum 0.9) of the
models of ../shared/reference/pytorch_cpu_step.py (MLP 784-256-128-10; CNN
conv5x5x32, pool, conv5x5x64, pool, fc1024, fc10) on a fixed random batch,
reported like step_time: the MEDIAN of per-step wall times after 3 warm-up
steps (the reference script reports the mean, which a single slow step on a
shared machine moves).

Runs with any interpreter that has torch: the current PyPI torch
($(scripts/reference-env --path bench)/bin/python) or Debian's 1.13
(/usr/bin/python3, BLAS_INFO=generic).

    PY bench/pytorch_step.py --threads 1 [--models mlp,cnn] [--config] [--profile cnn]

--config prints torch.__config__.show() (as one JSON string) first: it says
whether MKL / oneDNN are in. --profile MODEL prints torch.profiler's table of
the step's ops (self CPU time) to stderr.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default mlp 200, cnn 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--config", action="store_true")
    ap.add_argument("--profile", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.config:
        cfg = torch.__config__.show()
        print(json.dumps({"torch": torch.__version__, "mkl": torch.backends.mkl.is_available(),
                          "mkldnn": torch.backends.mkldnn.is_available(), "config": cfg}))
    for name in args.models.split(","):
        m = mlp() if name == "mlp" else cnn()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(args.batch, 1, 28, 28)
        y = torch.randint(0, 10, (args.batch,))

        def step():
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()

        for _ in range(args.warmup):
            step()
        n = args.steps or (200 if name == "mlp" else 20)
        ms = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            ms.append((time.perf_counter() - t0) * 1e3)
        ms.sort()
        med = ms[len(ms) // 2]
        print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "model": name, "batch": args.batch,
                          "threads": args.threads, "steps": n, "step_ms": round(med, 3),
                          "p10_ms": round(ms[len(ms) // 10], 3), "p90_ms": round(ms[len(ms) * 9 // 10], 3),
                          "samples_s": round(args.batch / med * 1e3, 1)}), flush=True)
        if args.profile == name:
            from torch.profiler import profile, ProfilerActivity
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
