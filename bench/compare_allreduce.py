#!/usr/bin/env python3
"""All-reduce bus bandwidth on one host, Loom (`loom bench allreduce`) side by
side with gloo from the current PyPI PyTorch (bench/gloo_allreduce.py run by
the `bench` reference environment, started by `loom launch`) and Open MPI
(../shared/reference/mpi_allreduce.c), N ranks, f32 sum, busbw as nccl-tests
(algbw x 2(n-1)/n). Two transports each: shared memory (Loom's default on one
host, Open MPI's vader) and TCP over loopback (Loom `--transport zmq
--insecure`, Open MPI `--mca btl tcp,self`, gloo always TCP). Every run
covers 1, 4, 16 and 64 MiB (1 MiB first, as warm-up for everyone). In each
round every configuration runs once, in an order that rotates from round to
round; the table gives medians over rounds (min-max).

    python3 bench/compare_allreduce.py [--ranks 4] [--rounds 3]

Open MPI: apt-get install -y --no-install-recommends openmpi-bin libopenmpi-dev.
All TCP traffic stays on loopback (Open MPI is told btl_tcp_if_include lo).
"""
import argparse
import os
import statistics
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

from reference import env_python, json_rows  # bench/reference.py: shared by the compare_* drivers
SIZES = [1 << 20, 4 << 20, 16 << 20, 64 << 20]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--mpi-binary", default="/tmp/loom_mpi_allreduce")
    args = ap.parse_args()
    n = str(args.ranks)
    loom = os.path.join(args.build, "bin", "loom")
    mpi_src = os.path.join(root, "..", "shared", "reference", "mpi_allreduce.c")
    subprocess.run(["mpicc", "-O2", mpi_src, "-o", args.mpi_binary], check=True, timeout=120)
    mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", n, "--mca", "oob_tcp_if_include", "lo"]
    sizes = ",".join(f"{s >> 20}M" for s in SIZES)
    cfgs = {
        "loom_shm": [loom, "bench", "allreduce", "--workers", n, "--sizes", sizes, "--transport", "shm"],
        "loom_tcp": [loom, "bench", "allreduce", "--workers", n, "--sizes", sizes, "--transport", "zmq", "--insecure"],
        "gloo_tcp": [loom, "launch", "--workers", n, "--insecure", "--", env_python("bench"),
                     os.path.join(here, "gloo_allreduce.py"), ",".join(str(s) for s in SIZES)],
        "mpi_shm": mpirun + ["--mca", "btl", "vader,self", args.mpi_binary],
        "mpi_tcp": mpirun + ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo", args.mpi_binary],
    }
    torch_v = subprocess.run([env_python("bench"), "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, timeout=120).stdout.strip()
    mpi_v = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    print(f"# gloo from torch {torch_v}; {mpi_v}", flush=True)
    res = {}
    names = list(cfgs)
    for rnd in range(args.rounds):
        for c in names[rnd % len(names):] + names[:rnd % len(names)]:
            for r in json_rows(cfgs[c], 600, keep="busbw"):
                res.setdefault((c, int(r["bytes"])), []).append(r["busbw_GBs"])

    def m(c, s):
        xs = res.get((c, s), [])
        return (statistics.median(xs), min(xs), max(xs)) if xs else None

    f = lambda x: f"{x[0]:.2f} ({x[1]:.2f}-{x[2]:.2f})" if x else "-"
    print(f"\n{args.ranks} ranks, busbw GB/s, median (min-max) of {args.rounds} rounds; gloo: torch {torch_v}\n")
    print("| size | Loom shm | Open MPI shm | Loom TCP | Open MPI TCP | gloo TCP | Loom shm / best reference | "
          "Loom TCP / best TCP reference |")
    print("|---|---|---|---|---|---|---|---|")
    for s in SIZES:
        ls, ms_, lt, mt, g = (m(c, s) for c in ("loom_shm", "mpi_shm", "loom_tcp", "mpi_tcp", "gloo_tcp"))
        best = max(x[0] for x in (ms_, mt, g) if x) if any((ms_, mt, g)) else None
        best_tcp = max(x[0] for x in (mt, g) if x) if any((mt, g)) else None
        print(f"| {s >> 20} MiB | {f(ls)} | {f(ms_)} | {f(lt)} | {f(mt)} | {f(g)} | "
              f"{ls[0] / best:.2f}x | {lt[0] / best_tcp:.2f}x |" if ls and lt and best and best_tcp else
              f"| {s >> 20} MiB | {f(ls)} | {f(ms_)} | {f(lt)} | {f(mt)} | {f(g)} | - | - |")


if __name__ == "__main__":
    sys.exit(main())
