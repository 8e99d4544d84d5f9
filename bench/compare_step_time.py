#!/usr/bin/env python3
"""Side-by-side training step time of the reference MLP and CNN (batch 128,
SGD momentum 0.9): Loom's bench/step_time against

  - current PyPI PyTorch (MKL + oneDNN): bench/pytorch_step.py run by the
    `bench` reference environment (scripts/reference-env bench),
  - MXNet 1.9.1 Gluon, hybridized (oneDNN): bench/mxnet_step.py run by the
    `mxnet` reference environment,
  - Debian's python3-torch 1.13 (BLAS_INFO=generic, reference BLAS), for
    orientation only: bench/pytorch_step.py run by /usr/bin/python3.

Every framework reports the median of its per-step wall times after 3 warm-up
steps. In each round every (framework, thread count) runs once, interleaved
(Loom, PyTorch, MXNet, Debian torch, in an order that rotates from round to
round), so drift in machine load hits all of them; the table gives the median
over rounds and the min-max range. Ratios are Loom / reference step time
(below 1.0: Loom faster).

    python3 bench/compare_step_time.py [--build build] [--threads 1,2] [--rounds 5] [--no-debian]
        [--torch-python PY] [--mxnet-python PY] [--json-out FILE]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

from reference import env_python  # bench/reference.py: shared by the compare_* drivers


def run_lines(cmd, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def fmt(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--torch-python", default="", help="default: scripts/reference-env --path bench")
    ap.add_argument("--mxnet-python", default="", help="default: scripts/reference-env --path mxnet")
    ap.add_argument("--debian-python", default="/usr/bin/python3")
    ap.add_argument("--no-debian", action="store_true", help="skip Debian's torch 1.13 (generic BLAS)")
    ap.add_argument("--no-mxnet", action="store_true")
    ap.add_argument("--debian-cnn-steps", type=int, default=5, help="its CNN step takes ~0.7 s")
    ap.add_argument("--json-out", default="")
    args = ap.parse_args()
    step_time = os.path.join(args.build, "bench", "step_time")
    torch_py = args.torch_python or env_python("bench")
    mxnet_py = args.mxnet_python or env_python("mxnet")
    threads = [int(x) for x in args.threads.split(",")]
    pystep = os.path.join(here, "pytorch_step.py")
    mxstep = os.path.join(here, "mxnet_step.py")

    # Configuration lines: what each reference was built with.
    cfg = run_lines([torch_py, pystep, "--config", "--steps", "1", "--models", "mlp"], 300)[0]
    libs = [l.strip(" -") for l in cfg["config"].splitlines() if "Math Kernel" in l or "MKL-DNN" in l]
    print(f"# PyTorch {cfg['torch']} ({torch_py}): mkl={cfg['mkl']} mkldnn={cfg['mkldnn']} "
          f"{' '.join(re.findall(r'BLAS_INFO=[^,]*', cfg['config']))}")
    for l in libs:
        print(f"#   {l}")
    versions = {"torch": cfg["torch"]}
    if not args.no_mxnet:
        feat = run_lines([mxnet_py, mxstep, "--features", "--steps", "1", "--models", "mlp"], 300)[0]
        print(f"# MXNet {feat['mxnet']} ({mxnet_py}) features: {' '.join(feat['features_enabled'])}")
        versions["mxnet"] = feat["mxnet"]
    if not args.no_debian:
        dcfg = run_lines([args.debian_python, pystep, "--config", "--steps", "1", "--models", "mlp"], 300)[0]
        print(f"# Debian PyTorch {dcfg['torch']} ({args.debian_python}): mkl={dcfg['mkl']} "
              f"{' '.join(re.findall(r'BLAS_INFO=[^,]*', dcfg['config']))}")
        versions["debian_torch"] = dcfg["torch"]
    sys.stdout.flush()

    fws = ["loom", "torch"] + ([] if args.no_mxnet else ["mxnet"]) + ([] if args.no_debian else ["debian"])
    res = {(fw, m, t): [] for fw in fws for m in ("mlp", "cnn") for t in threads}

    def run_fw(fw, t):
        if fw == "loom":
            for m in ("mlp", "cnn"):
                res[("loom", m, t)].append(run_lines([step_time, "--model", m, "--threads", str(t)], 300)[-1]["step_ms"])
            return
        if fw == "torch":
            cmd = [torch_py, pystep, "--threads", str(t)]
        elif fw == "mxnet":
            cmd = [mxnet_py, mxstep, "--threads", str(t)]
        else:
            cmd = [args.debian_python, pystep, "--threads", str(t), "--models", "mlp"]
        for r in run_lines(cmd, 600):
            res[(fw, r["model"], t)].append(r["step_ms"])
        if fw == "debian":
            cmd = [args.debian_python, pystep, "--threads", str(t), "--models", "cnn", "--steps",
                   str(args.debian_cnn_steps)]
            for r in run_lines(cmd, 600):
                res[(fw, r["model"], t)].append(r["step_ms"])

    for rnd in range(args.rounds):
        order = fws[rnd % len(fws):] + fws[:rnd % len(fws)]
        for t in threads:
            for fw in order:
                run_fw(fw, t)
        print(f"# round {rnd + 1}/{args.rounds} done: " +
              " ".join(f"{fw}/{m}/{t}={res[(fw, m, t)][-1]:.2f}" for t in threads for m in ("mlp", "cnn")
                       for fw in fws), flush=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\nmedians of {args.rounds} interleaved rounds, ms per step (min-max over rounds)\n")
    head = f"| model | threads | Loom | PyTorch {versions['torch']} |"
    sep = "|---|---|---|---|"
    if "mxnet" in fws:
        head += f" MXNet {versions['mxnet']} |"
        sep += "---|"
    head += " Loom / PyTorch |"
    sep += "---|"
    if "mxnet" in fws:
        head += " Loom / MXNet |"
        sep += "---|"
    if "debian" in fws:
        head += f" PyTorch {versions['debian_torch']} Debian (generic BLAS) | Loom / Debian |"
        sep += "---|---|"
    print(head)
    print(sep)
    for m in ("mlp", "cnn"):
        for t in threads:
            line = f"| {m} | {t} | {fmt(res[('loom', m, t)])} | {fmt(res[('torch', m, t)])} |"
            if "mxnet" in fws:
                line += f" {fmt(res[('mxnet', m, t)])} |"
            line += f" **{med[('loom', m, t)] / med[('torch', m, t)]:.2f}x** |"
            if "mxnet" in fws:
                line += f" {med[('loom', m, t)] / med[('mxnet', m, t)]:.2f}x |"
            if "debian" in fws:
                line += f" {fmt(res[('debian', m, t)])} | {med[('loom', m, t)] / med[('debian', m, t)]:.3f}x |"
            print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"versions": versions, "rounds": args.rounds,
                       "runs": {f"{fw}/{m}/{t}": v for (fw, m, t), v in res.items()}}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
