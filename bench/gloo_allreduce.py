#!/usr/bin/env python3
"""gloo all-reduce bus bandwidth, measured exactly as ../shared/reference/pytorch_gloo_allreduce.py,
but as one process per rank started by any launcher: `loom launch` (LOOM_* variables, e.g. across
network namespaces) or torchrun (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT). Rank 0 prints JSON lines.

    loom launch --workers 4 --hosts netns:lm0:1,netns:lm1:1,netns:lm2:1,netns:lm3:1 --insecure -- \
        $(scripts/reference-env --path bench)/bin/python bench/gloo_allreduce.py
"""
import json, os, sys, time
import torch, torch.distributed as dist

rank = int(os.environ.get("LOOM_RANK", os.environ.get("RANK", "0")))
n = int(os.environ.get("LOOM_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
if "LOOM_COORDINATOR" in os.environ:
    host, port = os.environ["LOOM_COORDINATOR"].rsplit(":", 1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(int(port) + 1)
# In a netns-cluster host lmI, gloo must use that host's link (lmhI), not the loopback its host name resolves to.
# netns-cluster names host PREFIX<i>'s link PREFIXh<i> (lm0 -> lmh0, lmx2 -> lmxh2).
host = os.environ.get("LOOM_HOST", "")
_m = __import__("re").fullmatch(r"([a-z]+?)(\d+)", host)
if _m and os.path.exists(f"/sys/class/net/{_m.group(1)}h{_m.group(2)}"):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", f"{_m.group(1)}h{_m.group(2)}")
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=rank, world_size=n)
sizes = [int(s) for s in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1 << 20, 4 << 20, 16 << 20, 64 << 20]
for s in sizes:
    x = torch.ones(s // 4)
    for _ in range(2): dist.all_reduce(x)
    dist.barrier(); it = max(3, min(50, int(2e9 / (s * n))))
    t = time.perf_counter()
    for _ in range(it): dist.all_reduce(x)
    dist.barrier(); dt = (time.perf_counter() - t) / it
    if rank == 0:
        algbw = s / dt / 1e9
        print(json.dumps({"framework": "gloo", "world": n, "bytes": s, "ms": round(dt * 1e3, 3),
                          "algbw_GBs": round(algbw, 3), "busbw_GBs": round(algbw * 2 * (n - 1) / n, 3)}), flush=True)
dist.destroy_process_group()
