#!/usr/bin/env python3
"""MXNet 1.9.1 Gluon twin of bench/pytorch_fashion_mnist.py: the same model
(MLP 784-256-128-10 or CNN conv5x5x32, pool, conv5x5x64, pool, fc1024, fc10),
the same hyper-parameters (SGD lr 0.05, momentum 0.9, batch 128, last
incomplete batch dropped, inputs normalised with mean 0.2860 / std 0.3530,
optional weight decay and per-step cosine schedule down to 0), the same
initialisation rule as PyTorch's layers (weights and biases uniform in
+-1/sqrt(fan_in)), on the real Fashion-MNIST IDX files that Loom reads
(Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist). The
network is hybridized. Prints one JSON line per epoch: test accuracy and wall
time since the start of training (evaluation included).

Threads as in bench/mxnet_step.py: OMP_NUM_THREADS=THREADS,
MXNET_CPU_WORKER_NTHREADS=1, set before mxnet is imported.

    $(scripts/reference-env --path mxnet)/bin/python bench/mxnet_fashion_mnist.py mlp|cnn EPOCHS THREADS [--wd 5e-4] [--cosine]
"""
import argparse
import gzip
import json
import math
import os
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("model", choices=["mlp", "cnn"])
ap.add_argument("epochs", type=int)
ap.add_argument("threads", type=int)
ap.add_argument("--wd", type=float, default=0.0)
ap.add_argument("--cosine", action="store_true")
ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist/")
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

os.environ["OMP_NUM_THREADS"] = str(a.threads)
os.environ["MXNET_CPU_WORKER_NTHREADS"] = "1"
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402


def idx(name, off):
    return np.frombuffer(gzip.open(os.path.join(a.root, name)).read(), np.uint8, offset=off)


mean, std = 0.2860, 0.3530
xtr = ((idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255) - mean) / std
ytr = idx("train-labels-idx1-ubyte.gz", 8).astype(np.float32)
xte = ((idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255) - mean) / std
yte = idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)

mx.random.seed(a.seed)
rng = np.random.default_rng(a.seed)
ctx = mx.cpu()
net = nn.HybridSequential()
if a.model == "mlp":
    net.add(nn.Flatten(), nn.Dense(256, activation="relu", in_units=784), nn.Dense(128, activation="relu", in_units=256),
            nn.Dense(10, in_units=128))
else:
    net.add(nn.Conv2D(32, 5, padding=2, activation="relu", in_channels=1), nn.MaxPool2D(2),
            nn.Conv2D(64, 5, padding=2, activation="relu", in_channels=32), nn.MaxPool2D(2),
            nn.Flatten(), nn.Dense(1024, activation="relu", in_units=64 * 7 * 7), nn.Dense(10, in_units=1024))
net.initialize(mx.init.Zero(), ctx=ctx)
# PyTorch's default for Linear and Conv2d: kaiming_uniform(a=sqrt(5)) for the
# weight and U(+-1/sqrt(fan_in)) for the bias; both bounds are 1/sqrt(fan_in).
for block in net:
    if isinstance(block, (nn.Dense, nn.Conv2D)):
        w = block.weight.data()
        fan_in = int(np.prod(w.shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)
        block.weight.set_data(nd.array(rng.uniform(-bound, bound, w.shape).astype(np.float32)))
        block.bias.set_data(nd.array(rng.uniform(-bound, bound, block.bias.data().shape).astype(np.float32)))
net.hybridize(static_alloc=True, static_shape=True)

bs = 128
steps_per_epoch = len(xtr) // bs
opt_args = {"learning_rate": 0.05, "momentum": 0.9, "wd": a.wd}
if a.cosine:
    opt_args["lr_scheduler"] = mx.lr_scheduler.CosineScheduler(max_update=a.epochs * steps_per_epoch, base_lr=0.05,
                                                               final_lr=0.0)
trainer = gluon.Trainer(net.collect_params(), "sgd", opt_args)
loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
xte_nd = nd.array(xte)

t0 = time.time()
for ep in range(a.epochs):
    perm = rng.permutation(len(xtr))
    for i in range(steps_per_epoch):
        b = perm[i * bs:(i + 1) * bs]
        x, y = nd.array(xtr[b]), nd.array(ytr[b])
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(bs)  # gradient of the summed loss / batch = that of the mean loss
    correct = 0
    for i in range(0, len(xte), 1000):
        correct += int((net(xte_nd[i:i + 1000]).argmax(axis=1).asnumpy().astype(np.int64) == yte[i:i + 1000]).sum())
    print(json.dumps({"framework": "mxnet " + mx.__version__, "model": a.model, "epoch": ep + 1,
                      "test_accuracy": round(correct / len(xte), 4), "wall_s": round(time.time() - t0, 1)}),
          flush=True)
