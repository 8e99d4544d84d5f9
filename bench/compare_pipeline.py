#!/usr/bin/env python3
"""Pipeline parallelism on a GPT (issue 12): `loom train --set distributed.mode=pipeline`
side by side with torch.distributed.pipelining (bench/pytorch_pipeline_gpt.py:
the same untied GPT, the same stage cut, AdamW, gloo), one CPU process per
stage and one thread per process on both sides, the same global batch and
micro-batches, tokens/s.

Every Loom run is

    loom train JOB --set model.tied=false --set distributed.mode=pipeline
        --set distributed.stages=S --set distributed.schedule=gpipe|1f1b|interleaved|zb-h1
        --set distributed.virtual_stages=V --set train.microbatches=M --set data.batch_size=B --set train.threads=1
        --set train.max_steps=W+N --set train.log_interval=1 [config overrides]

and its time is the wall time between the arrival of rank 0's progress line
for step W and the one for step W+N (lines are stamped as they arrive; the
start-up, the first W steps and the final evaluation are outside it). The
reference runs W untimed steps, then times N between two barriers. tokens/s =
B * context * N / time. V is 2 for the interleaved schedule (the reference:
ScheduleInterleaved1F1B with 2 chunks per rank) and 1 for the others (zb-h1's
reference: ScheduleInterleavedZeroBubble with one chunk per rank). Each round runs every (config, stages, schedule) for
both frameworks, which one goes first alternating from round to round; the
table gives medians and the min-max over rounds. Both run under
`nice -n -15` (root) so that concurrent builds take less of their time; each
run records the load average and the cores other processes used during it.

    python3 bench/compare_pipeline.py [--configs small,mid] [--stages 2,4] [--schedules gpipe,1f1b,interleaved,zb-h1]
        [--rounds 3] [--json-out FILE] [--loom build/bin/loom] [--python PY]
    python3 bench/compare_pipeline.py --merge a.json b.json   # one table of both files' rounds
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, here)
from reference import env_python  # noqa: E402

GPT_SMALL = os.path.join(root, "examples", "lm", "gpt_small.toml")
# name -> (job, overrides, global batch, micro-batches, warm-up steps, timed steps, context)
CONFIGS = {
    # gpt_small's model (8 blocks, width 384, 6 heads, context 256; 14.5M parameters untied), batch 16
    # instead of 64 so that a run takes under a minute on 2 cores.
    "small": (GPT_SMALL, [], 16, 4, 1, 3, 256),
    # 4 blocks, width 256, 4 heads, context 128 (3.3M parameters untied).
    "mid": (GPT_SMALL, ["model.blocks=4", "model.embed=256", "model.heads=4", "model.context=128"], 32, 4, 2, 6, 128),
    # gpt_small as the job has it: batch 64 (4 micro-batches of 16 windows), on a larger file of the corpus
    # (`computers`, 238 KB: 14 steps an epoch), 2 timed steps after 1 (a run takes about a minute).
    "job": (GPT_SMALL, ['data.files=["/usr/share/games/fortunes/computers"]'], 64, 4, 1, 2, 256),
}
# Both sides train on one 39 KB file of the corpus (`zippy`): an epoch is then 9 steps, and rank 0's
# progress lines, which come every 10% of an epoch (or 30 s), come after every step. The held-out
# tail is 1% (a short final evaluation), and the pipeline's receive deadline is long enough for it.
COMMON = ['data.files=["/usr/share/games/fortunes/zippy"]', "model.tied=false", "data.val_fraction=0.01",
          "distributed.timeout_s=900"]
VIRTUAL_STAGES = 2  # model chunks per rank of the interleaved schedule
PARTS = {"small": 10, "mid": 6, "job": 10}  # what a stage cut works with: embedding, the blocks, the head
PROGRESS = re.compile(r"\[worker 0\] epoch \d+/\d+ (\d+)/\d+ \(")
NICE = ["nice", "-n", "-15"]


def busy_cpu_s():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(fn):
    """fn()'s result, the 1-minute load average before it, and the cores other processes used during it."""
    load = os.getloadavg()[0]
    t, busy, own = time.time(), busy_cpu_s(), children_cpu_s()
    result = fn()
    wall = time.time() - t
    return result, load, max(0.0, (busy_cpu_s() - busy) - (children_cpu_s() - own)) / wall


def loom_tokens_s(loom, name, stages, schedule, timeout):
    job, overrides, batch, m, warmup, steps, context = CONFIGS[name]
    sets = COMMON + overrides + [
        "distributed.mode=pipeline", f"distributed.stages={stages}", f"distributed.schedule={schedule}",
        f"distributed.virtual_stages={VIRTUAL_STAGES if schedule == 'interleaved' else 1}",
        f"train.microbatches={m}", f"data.batch_size={batch}", f"data.test_batch_size={batch}", "train.threads=1",
        f"train.max_steps={warmup + steps}", "train.log_interval=1"]
    cmd = NICE + [loom, "train", job] + [a for s in sets for a in ("--set", s)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stamps, tail, t0 = {}, [], time.time()
    for line in p.stdout:
        now = time.perf_counter()
        tail = (tail + [line])[-30:]
        mt = PROGRESS.search(line)
        if mt:
            stamps.setdefault(int(mt.group(1)), now)
        if time.time() - t0 > timeout:
            p.kill()
    # Rank 0 prints a progress line each 10% of the epoch (or 30 s): every step with COMMON's data file.
    first = min((k for k in stamps if k >= warmup), default=None)
    if p.wait() != 0 or first is None or max(stamps) != warmup + steps or first == warmup + steps:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}, steps seen {sorted(stamps)}:\n{''.join(tail)}")
    timed = warmup + steps - first
    return batch * context * timed / (stamps[warmup + steps] - stamps[first]), " ".join(cmd)


def torch_tokens_s(python, name, stages, schedule, timeout):
    job, overrides, batch, m, warmup, steps, context = CONFIGS[name]
    cmd = NICE + [python, os.path.join(here, "pytorch_pipeline_gpt.py"), "--job", job, "--stages", str(stages),
                  "--schedule", schedule, "--virtual-stages", str(VIRTUAL_STAGES), "--microbatches", str(m), "--batch", str(batch), "--threads", "1",
                  "--warmup", str(warmup), "--steps", str(steps)]
    cmd += [a for s in COMMON + overrides for a in ("--set", s)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not rows:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}:\n{p.stderr[-2000:]}")
    return rows[-1]["tokens_s"], " ".join(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loom", default=os.path.join(root, "build", "bin", "loom"))
    ap.add_argument("--python", default="", help="interpreter with torch (default: the `bench` reference environment)")
    ap.add_argument("--configs", default="small,mid")
    ap.add_argument("--stages", default="2,4")
    ap.add_argument("--schedules", default="gpipe,1f1b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json-out")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only print the table of saved --json-out files' "
                    "rounds together")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge)
    python = args.python or env_python("bench")
    torch_version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], check=True,
                                   capture_output=True, text=True, timeout=300).stdout.strip()
    configs, stages = args.configs.split(","), [int(s) for s in args.stages.split(",")]
    schedules = args.schedules.split(",")
    # Every stage needs a part (embedding, a block, the head): 4 x 2 chunks do not fit mid's 6 parts.
    cells = [(c, s, sch) for c in configs for s in stages for sch in schedules
             if s * (VIRTUAL_STAGES if sch == "interleaved" else 1) <= PARTS[c]]
    runs = {}  # (config, stages, schedule, framework) -> [(tokens/s, load average, other cores)]
    commands = {}
    t0 = time.time()
    print(f"# start {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for c, s, sch in cells:
            order = ("loom", "pytorch") if r % 2 == 0 else ("pytorch", "loom")
            for fw in order:
                fn = loom_tokens_s if fw == "loom" else torch_tokens_s
                (tps, cmd), load, other = measured(
                    lambda: fn(args.loom if fw == "loom" else python, c, s, sch, args.timeout))
                runs.setdefault((c, s, sch, fw), []).append((tps, load, other))
                commands[(c, s, sch, fw)] = cmd
                print(f"# round {r + 1}/{args.rounds} {c} stages {s} {sch} {fw}: {tps:.0f} tokens/s "
                      f"(load average {load:.1f}, other processes {other:.2f} cores)", file=sys.stderr, flush=True)
                if args.json_out:  # so far, in case a later run fails
                    with open(args.json_out + ".partial", "w") as f:
                        json.dump({"runs": [[list(k), v] for k, v in runs.items()]}, f)

    rows = table(runs, commands, cells, torch_version,
                 f"median of {args.rounds} round(s), {time.time() - t0:.0f} s in all")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"torch": torch_version, "rounds": args.rounds, "rows": rows}, f, indent=1)


def table(runs, commands, cells, torch_version, how):
    """Prints the Markdown table of runs[(config, stages, schedule, framework)] = [(tokens/s, load, other cores)];
    returns its rows for --json-out."""
    loads = [x[1] for v in runs.values() for x in v]
    others = [x[2] for v in runs.values() for x in v]
    print(f"\nPyTorch {torch_version}; {os.cpu_count()} cores; 1 thread per stage process; {how}; load average "
          f"{min(loads):.1f}-{max(loads):.1f}, other processes used {min(others):.2f}-{max(others):.2f} cores "
          f"during a run\n")
    # The ratio of the medians, and each round's own ratio (its two runs were back to back, so they
    # saw much the same load; their median is the steadier figure on a busy machine).
    print("| config | stages | schedule | batch x context (M) | Loom tokens/s | PyTorch tokens/s "
          "| Loom / PyTorch (medians) | each round's Loom / PyTorch (median) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for c, s, sch in cells:
        _, _, batch, m, warmup, steps, context = CONFIGS[c]
        lo = [x[0] for x in runs[(c, s, sch, "loom")]]
        pt = [x[0] for x in runs[(c, s, sch, "pytorch")]]
        ratio = statistics.median(lo) / statistics.median(pt)
        paired = [a / b for a, b in zip(lo, pt)]
        print(f"| {c} | {s} | {sch} | {batch} x {context} ({m}) | {statistics.median(lo):.0f} "
              f"({min(lo):.0f}-{max(lo):.0f}) | {statistics.median(pt):.0f} ({min(pt):.0f}-{max(pt):.0f}) "
              f"| {ratio:.2f}x | {', '.join(f'{x:.2f}' for x in paired)} ({statistics.median(paired):.2f}x) |")
        rows.append({"config": c, "stages": s, "schedule": sch, "batch": batch, "microbatches": m,
                     "context": context, "warmup_steps": warmup, "timed_steps": steps,
                     "loom_tokens_s": lo, "pytorch_tokens_s": pt, "ratio": ratio, "paired_ratios": paired,
                     "loads": [x[1] for fw in ("loom", "pytorch") for x in runs[(c, s, sch, fw)]],
                     "other_cores": [x[2] for fw in ("loom", "pytorch") for x in runs[(c, s, sch, fw)]],
                     "loom_command": commands[(c, s, sch, "loom")],
                     "pytorch_command": commands[(c, s, sch, "pytorch")]})
    return rows


def merge(paths):
    """The table of the rounds of several --json-out files together (runs of one session split in parts)."""
    runs, commands, cells, version = {}, {}, [], ""
    for path in paths:
        with open(path) as f:
            saved = json.load(f)
        version = saved["torch"]
        for row in saved["rows"]:
            cell = (row["config"], row["stages"], row["schedule"])
            if cell not in cells:
                cells.append(cell)
            n = len(row["loom_tokens_s"])
            for fw, tps, part in (("loom", row["loom_tokens_s"], slice(0, n)),
                                  ("pytorch", row["pytorch_tokens_s"], slice(n, None))):
                runs.setdefault(cell + (fw,), []).extend(zip(tps, row["loads"][part], row["other_cores"][part]))
                commands[cell + (fw,)] = row[f"{fw}_command"]
    rounds = len(runs[cells[0] + ("loom",)])
    table(runs, commands, cells, version, f"median of {rounds} round(s) from {', '.join(paths)}")


if __name__ == "__main__":
    sys.exit(main())
