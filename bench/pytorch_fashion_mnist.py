#!/usr/bin/env python3
"""PyTorch side of the Fashion-MNIST time-to-accuracy comparison: the reference
script (../shared/reference/pytorch_fashion_mnist.py) extended with the two
settings Loom's examples/fashion_mnist/cnn.toml adds (weight decay and a
per-step cosine schedule), so both frameworks run the same model and
hyper-parameters. Prints one JSON line per epoch.

    /usr/bin/python3 bench/pytorch_fashion_mnist.py mlp|cnn EPOCHS THREADS [--wd 5e-4] [--cosine]
"""
import argparse, gzip, json, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("model", choices=["mlp", "cnn"])
ap.add_argument("epochs", type=int)
ap.add_argument("threads", type=int)
ap.add_argument("--wd", type=float, default=0.0)
ap.add_argument("--cosine", action="store_true")
ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist/")
a = ap.parse_args()

def idx(name, off): return np.frombuffer(gzip.open(a.root + name).read(), np.uint8, offset=off)
xtr = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
ytr = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8), dtype=torch.long)
xte = torch.tensor(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255
yte = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8), dtype=torch.long)
mean, std = 0.2860, 0.3530
xtr, xte = (xtr - mean) / std, (xte - mean) / std
torch.set_num_threads(a.threads); torch.manual_seed(0)
if a.model == "mlp":
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
else:
    m = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5, padding=2),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=a.wd)
steps_per_epoch = len(xtr) // 128
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * steps_per_epoch) if a.cosine else None
t0 = time.time()
for ep in range(a.epochs):
    m.train(); perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr) - 127, 128):
        b = perm[i:i + 128]; opt.zero_grad(); F.cross_entropy(m(xtr[b]), ytr[b]).backward(); opt.step()
        if sched: sched.step()
    m.eval()
    with torch.no_grad(): acc = (m(xte).argmax(1) == yte).float().mean().item()
    print(json.dumps({"framework": "pytorch " + torch.__version__, "model": a.model, "epoch": ep + 1,
                      "test_accuracy": round(acc, 4), "wall_s": round(time.time() - t0, 1)}), flush=True)
