#!/usr/bin/env python3
"""How far float rounding differences grow while training the reference models,
measured in PyTorch alone (no Loom involved).

Two runs from the same initial weights over the same batches: run A in float32
with 1 thread, run B identical except for one perturbation of the size of float
rounding. The max relative difference of the weights is printed after each of
--checkpoints steps, with the metric of `loom inspect --diff`: per tensor
max |a - b| / max(|a|, |b|) over its elements, then the max over tensors.

Perturbations (--perturb, comma-separated; each is its own run B):
  threads  torch.set_num_threads(2) instead of 1
  halves   the batch's gradient summed from its two halves (two backward passes,
           each scaled by 1/2), as two data-parallel workers compute it
  ulp      every initial weight moved by one ulp (torch.nextafter), in a random direction

Models (as ../shared/reference/pytorch_ddp_scaling.py and loom/train/zoo.cc):
  cnn  conv5x5x32, ReLU, pool2, conv5x5x64, ReLU, pool2, fc 3136-1024, ReLU, fc 1024-10
  mlp  784-256, ReLU, 256-128, ReLU, 128-10
Real Fashion-MNIST, normalised (mean 0.2860, std 0.3530), batch 128 in one fixed
shuffled order, SGD lr 0.05, momentum 0.9, weight decay 5e-4 (as
examples/fashion_mnist/cnn.toml, without its cosine schedule, which over 15
epochs barely moves the LR in the first 100 steps). Prints one JSON line per
(model, perturbation, step), then a Markdown table.

    flock /tmp/loom-cpu.lock /usr/bin/python3 bench/rounding_sensitivity.py \
        [--models cnn,mlp] [--perturb threads,halves,ulp] [--checkpoints 1,10,30,100]
"""
import argparse
import gzip
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(root, images, labels):
    x = np.frombuffer(gzip.open(f"{root}/{images}").read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    y = np.frombuffer(gzip.open(f"{root}/{labels}").read(), np.uint8, offset=8)
    x = (torch.tensor(x, dtype=torch.float32) / 255 - 0.2860) / 0.3530
    return x, torch.tensor(y, dtype=torch.long)


def make_model(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5, padding=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def max_rel_diff(a, b):
    worst = 0.0
    for k in a:
        ta, tb = a[k].double(), b[k].double()
        scale = torch.maximum(ta.abs().max(), tb.abs().max()).item()
        if scale > 0:
            worst = max(worst, (ta - tb).abs().max().item() / scale)
    return worst


def train(name, init, x, y, order, checkpoints, perturb=None, batch=128):
    """Trains from `init` on the batches of `order`; returns {step: weights} at the checkpoints."""
    torch.set_num_threads(2 if perturb == "threads" else 1)
    model = make_model(name)
    state = {k: v.clone() for k, v in init.items()}
    if perturb == "ulp":
        g = torch.Generator().manual_seed(1)
        for k, v in state.items():
            toward = torch.where(torch.rand(v.shape, generator=g) < 0.5, torch.full_like(v, -np.inf),
                                 torch.full_like(v, np.inf))
            state[k] = torch.nextafter(v, toward)
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    snaps = {}
    for step in range(1, max(checkpoints) + 1):
        idx = order[(step - 1) * batch:step * batch]
        xb, yb = x[idx], y[idx]
        opt.zero_grad()
        if perturb == "halves":
            h = batch // 2
            for part in (slice(0, h), slice(h, batch)):
                (F.cross_entropy(model(xb[part]), yb[part]) * 0.5).backward()
        else:
            F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if step in checkpoints:
            snaps[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return snaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--perturb", default="threads,halves,ulp")
    ap.add_argument("--checkpoints", default="1,10,30,100")
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    checkpoints = sorted(int(s) for s in args.checkpoints.split(","))
    x, y = load(args.root, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    # One fixed batch order for every run.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert max(checkpoints) * 128 <= len(x)
    t0 = time.time()
    table = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        init = {k: v.detach().clone() for k, v in make_model(name).state_dict().items()}
        ref = train(name, init, x, y, order, checkpoints)
        for perturb in args.perturb.split(","):
            snaps = train(name, init, x, y, order, checkpoints, perturb)
            row = []
            for step in checkpoints:
                d = max_rel_diff(ref[step], snaps[step])
                row.append(d)
                print(json.dumps({"model": name, "perturb": perturb, "step": step, "max_rel_diff": d,
                                  "elapsed_s": round(time.time() - t0, 1)}), flush=True)
            table.append((name, perturb, row))
    print(f"\nPyTorch {torch.__version__}; max relative weight difference, run B vs run A (1 thread); "
          f"{time.time() - t0:.0f} s in all\n")
    print("| model | run B | " + " | ".join(f"after {s} step{'s' if s > 1 else ''}" for s in checkpoints) + " |")
    print("|---|---|" + "---|" * len(checkpoints))
    for name, perturb, row in table:
        print(f"| {name} | {perturb} | " + " | ".join(f"{d:.1e}" for d in row) + " |")


if __name__ == "__main__":
    sys.exit(main())
