#!/usr/bin/env python3
"""MXNet 1.9.1 Gluon twin of bench/step_time and bench/pytorch_step.py: one
training step (forward, softmax cross-entropy, backward, SGD-momentum update)
of the reference MLP (784-256-128-10) or CNN (conv5x5x32, pool, conv5x5x64,
pool, fc1024, fc10) on a fixed random batch, hybridized (static graph, MXNet's
fast path), median of per-step wall times. Each step ends with mx.nd.waitall()
so the asynchronous engine's work is inside the step.

Threads: MXNet's CPU operators (oneDNN, its own OpenMP kernels) take their
thread count from OMP_NUM_THREADS, and the engine runs operators on
MXNET_CPU_WORKER_NTHREADS worker threads (default 1). Both are read when
mxnet is imported, so this script sets them from --threads before importing:
OMP_NUM_THREADS=T, MXNET_CPU_WORKER_NTHREADS=1 (one operator at a time, each
with T threads, which is how Loom and PyTorch run a step).

    $(scripts/reference-env --path mxnet)/bin/python bench/mxnet_step.py --threads 1 [--models mlp,cnn]

Prints one JSON line per model, and with --features the mx.runtime.Features()
line first.
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01, help="as step_time and pytorch_cpu_step.py (no effect on time)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default mlp 200, cnn 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--features", action="store_true", help="print mx.runtime.Features() first")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MXNET_CPU_WORKER_NTHREADS"] = "1"
    import mxnet as mx
    from mxnet import autograd, gluon, nd
    from mxnet.gluon import nn

    if args.features:
        feats = mx.runtime.Features()
        on = sorted(k for k in feats.keys() if feats.is_enabled(k))
        print(json.dumps({"mxnet": mx.__version__, "features_enabled": on}))

    def mlp():
        net = nn.HybridSequential()
        net.add(nn.Dense(256, activation="relu"), nn.Dense(128, activation="relu"), nn.Dense(10))
        return net

    def cnn():
        net = nn.HybridSequential()
        net.add(nn.Conv2D(32, 5, padding=2, activation="relu"), nn.MaxPool2D(2),
                nn.Conv2D(64, 5, padding=2, activation="relu"), nn.MaxPool2D(2),
                nn.Flatten(), nn.Dense(1024, activation="relu"), nn.Dense(10))
        return net

    ctx = mx.cpu()
    mx.random.seed(0)
    for name in args.models.split(","):
        net = mlp() if name == "mlp" else cnn()
        net.initialize(mx.init.Xavier(), ctx=ctx)
        net.hybridize(static_alloc=True, static_shape=True)
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": args.lr, "momentum": 0.9})
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        x = nd.random.normal(shape=(args.batch, 1, 28, 28), ctx=ctx)
        y = nd.floor(nd.random.uniform(0, 10, shape=(args.batch,), ctx=ctx))

        def step():
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(args.batch)  # gradients of the summed loss / batch = mean loss
            nd.waitall()

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
        print(json.dumps({"framework": "mxnet", "mxnet": mx.__version__, "model": name, "batch": args.batch,
                          "threads": args.threads, "steps": n, "step_ms": round(med, 3),
                          "p10_ms": round(ms[len(ms) // 10], 3), "p90_ms": round(ms[len(ms) * 9 // 10], 3),
                          "samples_s": round(args.batch / med * 1e3, 1)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
