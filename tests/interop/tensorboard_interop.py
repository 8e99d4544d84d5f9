#!/usr/bin/env python3
"""TensorBoard's own reader reads the event file of a real `loom train`.

Run by ctest with the interop environment (with_interop_env.sh):

  tensorboard_interop.py LOOM JOB.toml [--set KEY=VALUE ...]

trains JOB with TensorBoard logging and a JSONL metrics log, loads the event
file with tensorboard.backend.event_processing.event_accumulator (its record
reader checks each record's CRCs and drops a record that fails, which shows
up here as a missing value), and requires every scalar to be the JSONL
metric of the same epoch: same step, value equal at float32 (TensorBoard's
simple_value). Then it nudges one JSONL value by one float32 ulp and
requires the comparison to notice, so that the check is known to be able to
fail. Exit status 0 when everything matches, 1 otherwise.
"""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorboard
from tensorboard.backend.event_processing import event_accumulator

TRAIN_TIMEOUT_S = 240
# JSONL key -> TensorBoard tag, as loom/train/trainer.cc writes them; test_X -> test/X.
TRAIN_TAGS = {"train_loss": "train/loss", "lr": "train/lr", "samples_per_s": "train/samples_per_s"}
NOT_IN_TENSORBOARD = {"epoch", "step", "epoch_s", "wall_s"}


def tag_of(key):
    if key in TRAIN_TAGS:
        return TRAIN_TAGS[key]
    if key.startswith("test_"):
        return "test/" + key[len("test_"):]
    return None


def expected_scalars(records):
    """{tag: [(step, float32 value or None for a NaN/inf that JSON wrote as null)]} from the JSONL records."""
    out = {}
    for rec in records:
        for key, value in rec.items():
            if key in NOT_IN_TENSORBOARD:
                continue
            out.setdefault(tag_of(key) or f"<no tag for JSONL key {key}>", []).append(
                (rec["step"], None if value is None else np.float32(value)))
    return out


def differences(expected, scalars):
    """Lines describing every way TensorBoard's scalars {tag: [(step, value)]} differ from `expected`."""
    problems = [f"{tag}: in the JSONL log, not in the event file" for tag in sorted(set(expected) - set(scalars))]
    problems += [f"{tag}: in the event file, not in the JSONL log" for tag in sorted(set(scalars) - set(expected))]
    for tag in sorted(set(expected) & set(scalars)):
        want, got = expected[tag], scalars[tag]
        if [s for s, _ in want] != [s for s, _ in got]:
            problems.append(f"{tag}: steps {[s for s, _ in got]}, JSONL has {[s for s, _ in want]}")
            continue
        for (step, w), (_, g) in zip(want, got):
            same = (not math.isfinite(g)) if w is None else np.float32(g).tobytes() == w.tobytes()
            if not same:
                problems.append(f"{tag} at step {step}: {g!r} in the event file, {w!r} (float32 of the JSONL value)")
    return problems


def main():
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    loom, job, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    print(f"tensorboard {tensorboard.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        tb_dir, jsonl = os.path.join(tmp, "tb"), os.path.join(tmp, "metrics.jsonl")
        cmd = [loom, "train", job, "--set", f"train.tensorboard_dir={tb_dir}", "--metrics-out", jsonl] + extra
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, timeout=TRAIN_TIMEOUT_S)
        files = glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))
        if len(files) != 1:
            print(f"FAILED: expected one event file in {tb_dir}, found {files}")
            return 1
        with open(jsonl) as f:
            records = [json.loads(line) for line in f]

        acc = event_accumulator.EventAccumulator(tb_dir, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[event_accumulator.SCALARS]}
        print(f"{os.path.basename(files[0])}: file_version {acc.file_version!r}, {len(scalars)} scalar tags, "
              f"{sum(len(v) for v in scalars.values())} values; {jsonl}: {len(records)} records")
        for tag, values in sorted(scalars.items()):
            print(f"  {tag}: {values}")

    expected = expected_scalars(records)
    problems = differences(expected, scalars)
    if not records:
        problems.append("the JSONL log is empty")
    if acc.file_version != 2.0:  # the accumulator parses the first event's "brain.Event:2"
        problems.append(f"file_version {acc.file_version!r}, expected 2.0 (from 'brain.Event:2')")

    # The comparison can fail: one float32 ulp on one value is reported.
    tag = "train/loss"
    if expected.get(tag) and expected[tag][0][1] is not None:
        nudged = {k: list(v) for k, v in expected.items()}
        step, value = nudged[tag][0]
        nudged[tag][0] = (step, np.nextafter(value, np.float32(np.inf), dtype=np.float32))
        caught = differences(nudged, scalars)
        print(f"self-check, {tag} at step {step} nudged by one ulp: {caught}")
        if len(caught) != 1:
            problems.append(f"a one-ulp change of {tag} was reported as {caught}")
    else:
        problems.append(f"no finite {tag} to run the self-check with")

    for p in problems:
        print(f"DIFFERENCE: {p}")
    print("FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
