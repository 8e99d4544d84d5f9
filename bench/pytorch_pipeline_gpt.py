#!/usr/bin/env python3
"""PyTorch twin of `loom train examples/lm/gpt_small.toml --set distributed.mode=pipeline`:
the same byte-level GPT (nn::Gpt, untied: token + position embeddings and
dropout, N pre-norm blocks x + drop(attn(ln_1(x))), x + drop(proj(gelu(fc(ln_2(x))))),
causal multi-head attention with one [3E, E] input projection, exact-erf GELU,
final LayerNorm, LM head without bias), cut into the same stages, trained
with AdamW by torch.distributed.pipelining (PipelineStage + ScheduleGPipe,
Schedule1F1B, ScheduleInterleaved1F1B with --virtual-stages chunks per rank,
or ScheduleInterleavedZeroBubble with one chunk per rank, which is ZB-H1)
over gloo, one CPU process per stage (torch.multiprocessing),
torch.set_num_threads(--threads) in each.

The data are the job's: the corpus files (globs sorted by path, read as one
byte stream, as data::read_byte_corpus does), cut into windows of `context`
bytes, the last val_fraction held out; each step takes `batch` shuffled
windows (input bytes [s, s + T), target bytes [s + 1, s + T + 1), s a
multiple of T, as data::split_byte_windows serves them) and the schedule
cuts them into `microbatches` micro-batches; the loss is the mean
cross-entropy of each micro-batch and gradients are averaged over them
(scale_grads), as gradient accumulation does. Only throughput is compared:
the shuffle, the initial draws and dropout's draws are PyTorch's own.

Stages are cut as Loom's PipelineStrategy cuts by parameter count: the parts
(embedding, block 0..N-1, head) into `stages` x v contiguous ranges (chunks;
v = 1 except for the interleaved schedule) that minimise the largest
range's parameter count; rank r holds chunks r, r + stages, ... (for the
configurations of bench/compare_pipeline.py the optimum is unique, so the
cut is Loom's).

Rank 0 prints one JSON line: the wall time of steps warmup+1..warmup+steps
(a barrier before and after; start-up and the first steps excluded), ms per
step and tokens/s (batch * context tokens a step).

    PY bench/pytorch_pipeline_gpt.py --job examples/lm/gpt_small.toml --stages 2
        --schedule gpipe|1f1b|interleaved|zb-h1 [--virtual-stages 2] --microbatches 4 [--batch 16] [--threads 1] [--warmup 1] [--steps 4] [--set model.blocks=4 ...]
"""
import argparse
import glob
import json
import math
import os
import sys
import time
import tomllib

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


class Embedding(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab"], c["embed"])
        self.wpe = nn.Embedding(c["context"], c["embed"])
        self.drop = nn.Dropout(c["dropout"])

    def forward(self, tokens):  # i64 [B, T] -> [B, T, E]
        pos = torch.arange(tokens.size(1), device=tokens.device)
        return self.drop(self.wte(tokens) + self.wpe(pos))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        e = c["embed"]
        self.heads, self.p = c["heads"], c["dropout"]
        self.ln_1 = nn.LayerNorm(e)
        self.in_proj = nn.Linear(e, 3 * e)
        self.out_proj = nn.Linear(e, e)
        self.ln_2 = nn.LayerNorm(e)
        self.fc = nn.Linear(e, c["mlp_ratio"] * e)
        self.proj = nn.Linear(c["mlp_ratio"] * e, e)
        self.drop = nn.Dropout(c["dropout"])

    def attn(self, x):
        b, t, e = x.shape
        q, k, v = self.in_proj(x).view(b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, e))

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln_2(x)))))


class Head(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_f = nn.LayerNorm(c["embed"])
        self.lm_head = nn.Linear(c["embed"], c["vocab"], bias=False)

    def forward(self, x):
        return self.lm_head(self.ln_f(x))


def parts(c):
    """The pipeline's units in forward order, initialised as GPT-2 (and nn::Gpt)."""
    out = [Embedding(c)] + [Block(c) for _ in range(c["blocks"])] + [Head(c)]
    residual_std = 0.02 / math.sqrt(2 * c["blocks"])
    for p in out:
        for name, m in p.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, residual_std if name in ("out_proj", "proj") else 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
    return out


def cut(counts, stages):
    """First part of each stage: contiguous ranges minimising the largest sum (DP)."""
    n = len(counts)
    prefix = [0]
    for x in counts:
        prefix.append(prefix[-1] + x)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]  # best[s][i]: first i parts in s stages
    arg = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                v = max(best[s - 1][j], prefix[i] - prefix[j])
                if v < best[s][i]:
                    best[s][i], arg[s][i] = v, j
    starts, i = [], n
    for s in range(stages, 0, -1):
        i = arg[s][i]
        starts.append(i)
    return starts[::-1]


def load_config(job, overrides):
    with open(job, "rb") as f:
        j = tomllib.load(f)
    for o in overrides:
        key, value = o.split("=", 1)
        section, name = key.split(".")
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            pass
        j.setdefault(section, {})[name] = value
    m, d = j["model"], j["data"]
    c = {"vocab": 256, "context": m["context"], "blocks": m["blocks"], "heads": m["heads"], "embed": m["embed"],
         "mlp_ratio": m.get("mlp_ratio", 4), "dropout": m.get("dropout", 0.0)}
    c["window"] = d.get("context", 0) or c["context"]
    c["files"] = d["files"]
    c["val_fraction"] = d.get("val_fraction", 0.1)
    c["lr"] = j["optimizer"].get("lr", 1e-3)
    c["betas"] = (j["optimizer"].get("beta1", 0.9), j["optimizer"].get("beta2", 0.999))
    c["weight_decay"] = j["optimizer"].get("weight_decay", 0.01)
    c["seed"] = j.get("train", {}).get("seed", 0)
    return c


def read_corpus(patterns):
    paths = []
    for p in patterns:
        paths += sorted(glob.glob(p)) if any(ch in p for ch in "*?[") else [p]
    return b"".join(open(p, "rb").read() for p in paths)


def windows(c):
    """Training windows i64 [N, window + 1] (input and its next-byte target) every `window` bytes of the
    corpus minus its held-out tail."""
    data = read_corpus(c["files"])
    train = torch.frombuffer(bytearray(data[: len(data) - int(len(data) * c["val_fraction"])]), dtype=torch.uint8)
    return train.long().unfold(0, c["window"] + 1, c["window"])


def run(rank, args, c, port):
    from torch.distributed.pipelining import (PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B,
                                              ScheduleInterleavedZeroBubble)

    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=args.stages)
    torch.manual_seed(c["seed"])
    units = parts(c)  # every rank builds the whole model (same seed, same weights) and keeps its range
    v = args.virtual_stages if args.schedule == "interleaved" else 1
    chunks = args.stages * v
    starts = cut([sum(p.numel() for p in u.parameters()) for u in units], chunks) + [len(units)]
    mine = list(range(rank, chunks, args.stages))  # Megatron-LM's placement, as Loom's
    modules = [nn.Sequential(*units[starts[k]:starts[k + 1]]) for k in mine]
    del units
    for m in modules:
        m.train()

    mb = args.batch // args.microbatches
    t = c["window"]
    stages = [PipelineStage(m, k, chunks, torch.device("cpu"),
                            input_args=(torch.zeros(mb, t, dtype=torch.long) if k == 0 else torch.zeros(mb, t, c["embed"]),))
              for k, m in zip(mine, modules)]

    def loss_fn(logits, target):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    if args.schedule in ("gpipe", "1f1b"):
        schedule_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[args.schedule]
        schedule = schedule_cls(stages[0], args.microbatches, loss_fn=loss_fn)
    else:
        schedule_cls = {"interleaved": ScheduleInterleaved1F1B, "zb-h1": ScheduleInterleavedZeroBubble}[args.schedule]
        schedule = schedule_cls(stages, args.microbatches, loss_fn=loss_fn)
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=c["lr"], betas=c["betas"], weight_decay=c["weight_decay"])

    first, last = rank == 0, rank == args.stages - 1
    data = windows(c) if first or last else None
    g = torch.Generator().manual_seed(c["seed"])
    order = torch.randperm(data.size(0), generator=g) if data is not None else None

    losses_seen = []

    def step(i):
        opt.zero_grad(set_to_none=True)
        if data is not None:
            rows = data[order[(i * args.batch) % (data.size(0) - args.batch):][: args.batch]]
            x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
        if first and last:
            raise SystemExit("one stage: use loom train without a pipeline")
        if first:
            schedule.step(x)
        elif last:
            losses = []
            schedule.step(target=y, losses=losses)
            losses_seen.append(float(torch.stack(losses).detach().mean()))
        else:
            schedule.step()
        opt.step()

    for i in range(args.warmup):
        step(i)
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    dist.barrier()
    wall = time.perf_counter() - t0
    # The last stage's loss of the last step, to rank 0 (a sanity check that it learns).
    loss = torch.tensor([losses_seen[-1] if last else 0.0])
    dist.broadcast(loss, src=args.stages - 1)
    if first:
        tokens = args.batch * c["window"]
        print(json.dumps({"framework": "pytorch-pipelining", "torch": torch.__version__, "stages": args.stages,
                          "schedule": args.schedule, "virtual_stages": v, "microbatches": args.microbatches, "batch": args.batch,
                          "context": c["window"], "threads": args.threads, "cut": starts[:-1],
                          "params": sum(p.numel() for p in parts(c) for p in p.parameters()),
                          "warmup_steps": args.warmup, "timed_steps": args.steps,
                          "step_ms": round(wall / args.steps * 1e3, 1),
                          "tokens_s": round(tokens * args.steps / wall, 1), "last_loss": round(loss.item(), 4)}),
              flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "lm",
                                                  "gpt_small.toml"))
    ap.add_argument("--set", action="append", default=[], help="section.key=value, as loom train --set")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved", "zb-h1"), default="1f1b")
    ap.add_argument("--virtual-stages", type=int, default=2, help="chunks per rank of the interleaved schedule")
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--batch", type=int, default=0, help="global batch (default: the job's data.batch_size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    c = load_config(args.job, args.set)
    if not args.batch:
        with open(args.job, "rb") as f:
            args.batch = tomllib.load(f)["data"]["batch_size"]
    if args.batch % args.microbatches:
        sys.exit(f"--batch {args.batch} must be a multiple of --microbatches {args.microbatches}")
    port = args.port
    if not port:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    mp.spawn(run, args=(args, c, port), nprocs=args.stages, join=True)


if __name__ == "__main__":
    sys.exit(main())
