#!/usr/bin/env python3
"""Fashion-MNIST time to accuracy, side by side: Loom (`loom train`), current
PyPI PyTorch (bench/pytorch_fashion_mnist.py, `bench` reference environment)
and MXNet 1.9.1 Gluon (bench/mxnet_fashion_mnist.py, `mxnet` environment),
same model, same hyper-parameters, same thread count, run one after the other
in the order given by --order. Prints test accuracy and wall time per epoch
as a Markdown table.

Loom's wall time is taken from its own output: the time since the process
started at which the line "epoch N/M: ... test accuracy" appeared (so it
includes loading the data set, which the Python scripts do before their
clock starts).

    python3 bench/compare_fashion_mnist.py mlp 10 1
    python3 bench/compare_fashion_mnist.py cnn 3 2 --wd 5e-4 --cosine
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

from reference import env_python  # bench/reference.py: shared by the compare_* drivers


def run_loom(args):
    toml = os.path.join(root, "examples", "fashion_mnist", f"{args.model}.toml")
    cmd = [os.path.join(args.build, "bin", "loom"), "train", toml, "--set", f"train.epochs={args.epochs}",
           "--set", f"train.threads={args.threads}", "--set", f"optimizer.weight_decay={args.wd}",
           "--set", f"schedule.name={'cosine' if args.cosine else 'constant'}"]
    print("# " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    out = []
    buf = ""
    while True:
        ch = p.stdout.read(1)  # the progress bar redraws with \r: read by character
        if not ch:
            break
        if ch in "\r\n":
            m = re.match(r"epoch (\d+)/\d+: .*test accuracy ([\d.]+)%", buf)
            if m:
                out.append({"epoch": int(m.group(1)), "test_accuracy": float(m.group(2)) / 100,
                            "wall_s": round(time.time() - t0, 1)})
                print("# loom " + json.dumps(out[-1]), flush=True)
            buf = ""
        else:
            buf += ch
    p.wait(timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"loom train failed ({p.returncode})")
    return out


def run_py(py, script, args, name):
    cmd = [py, os.path.join(here, script), args.model, str(args.epochs), str(args.threads), "--wd", str(args.wd)]
    if args.cosine:
        cmd.append("--cosine")
    print("# " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{p.stderr[-2000:]}")
    res = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    for r in res:
        print(f"# {name} " + json.dumps(r), flush=True)
    return res, res[0]["framework"] if res else name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["mlp", "cnn"])
    ap.add_argument("epochs", type=int)
    ap.add_argument("threads", type=int)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--cosine", action="store_true")
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--order", default="loom,torch,mxnet")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json-out", default="")
    args = ap.parse_args()
    res, names = {}, {"loom": "Loom"}
    for fw in args.order.split(","):
        if fw == "loom":
            res[fw] = run_loom(args)
        elif fw == "torch":
            res[fw], names[fw] = run_py(env_python("bench"), "pytorch_fashion_mnist.py", args, "torch")
        elif fw == "mxnet":
            res[fw], names[fw] = run_py(env_python("mxnet"), "mxnet_fashion_mnist.py", args, "mxnet")
    fws = list(res)
    print("\n| epoch | " + " | ".join(f"{names[f]} test acc | {names[f]} wall (s)" for f in fws) + " |")
    print("|---|" + "---|---|" * len(fws))
    for e in range(args.epochs):
        cells = []
        for f in fws:
            r = res[f][e] if e < len(res[f]) else None
            cells.append(f"{r['test_accuracy'] * 100:.2f}% | {r['wall_s']:.1f}" if r else " | ")
        print(f"| {e + 1} | " + " | ".join(cells) + " |")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"args": vars(args), "names": names, "results": res}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
