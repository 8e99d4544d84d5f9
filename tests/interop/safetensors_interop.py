#!/usr/bin/env python3
"""Hugging Face's safetensors and Loom read each other's files, bit for bit.

Run by ctest with the interop environment (with_interop_env.sh); TOOL is
tests/interop/safetensors_bits.cc built (loom_safetensors_bits).

  safetensors_interop.py loom-writes TOOL   # safetensors (numpy and torch front ends) reads Loom's files
  safetensors_interop.py loom-reads TOOL    # Loom reads files written by both front ends
  safetensors_interop.py corrupt TOOL       # one flipped data byte makes both checks fail
  safetensors_interop.py check FILE EXPECTED_JSON   # one Loom-written file; exit 1 on a difference

Tensors are compared as bytes (NaN payloads, -0.0 and subnormals included),
with their dtype, shape and the file's metadata. Exit status 0 when
everything matches, 1 with one line per difference otherwise.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import ml_dtypes  # noqa: F401  gives numpy a bfloat16, so safe_open(framework="np") can return BF16
import numpy as np
import safetensors
import torch
from safetensors import safe_open
import safetensors.numpy
import safetensors.torch

NUMPY_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
                np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64",
                np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}
TORCH_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL"}
TIMEOUT_S = 60


def versions():
    return (f"safetensors {safetensors.__version__}, numpy {np.__version__}, torch {torch.__version__} "
            f"({os.path.dirname(torch.__file__)}), python {sys.version.split()[0]}")


def numpy_entry(a):
    return NUMPY_DTYPES[a.dtype], list(a.shape), np.ascontiguousarray(a).tobytes()


def torch_entry(t):
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return TORCH_DTYPES[t.dtype], list(t.shape), raw


# ---- what each reader saw: {name: (dtype, shape, bytes)} and the metadata ----

def read_with_numpy_load_file(path):
    return {k: numpy_entry(v) for k, v in safetensors.numpy.load_file(path).items()}, metadata_of(path, "np")


def read_with_numpy_safe_open(path):
    with safe_open(path, framework="np") as f:
        return {k: numpy_entry(f.get_tensor(k)) for k in f.keys()}, f.metadata() or {}


def read_with_torch_load_file(path):
    return {k: torch_entry(v) for k, v in safetensors.torch.load_file(path).items()}, metadata_of(path, "pt")


def metadata_of(path, framework):
    with safe_open(path, framework=framework) as f:
        return f.metadata() or {}


def read_with_loom(tool, path):
    out = subprocess.run([tool, "dump", path], check=True, capture_output=True, text=True, timeout=TIMEOUT_S).stdout
    doc = json.loads(out)
    tensors = {t["name"]: (t["dtype"], t["shape"], bytes.fromhex(t["hex"])) for t in doc["tensors"]}
    return tensors, doc["metadata"]


# ---- comparison ----

def differences(expected, expected_metadata, got, got_metadata):
    """Lines describing every way `got` differs from `expected` (both {name: (dtype, shape, bytes)})."""
    problems = []
    for name in sorted(set(expected) - set(got)):
        problems.append(f"{name}: missing")
    for name in sorted(set(got) - set(expected)):
        problems.append(f"{name}: not expected")
    for name in sorted(set(expected) & set(got)):
        (dtype, shape, raw), (got_dtype, got_shape, got_raw) = expected[name], got[name]
        if (dtype, list(shape)) != (got_dtype, list(got_shape)):
            problems.append(f"{name}: {got_dtype} {got_shape}, expected {dtype} {shape}")
        elif raw != got_raw:
            at = next((i for i in range(min(len(raw), len(got_raw))) if raw[i] != got_raw[i]), min(len(raw), len(got_raw)))
            problems.append(f"{name}: byte {at} of {len(got_raw)} is {got_raw[at:at + 1].hex() or 'missing'},"
                            f" expected {raw[at:at + 1].hex() or 'none'} (of {len(raw)})")
    if got_metadata != expected_metadata:
        problems.append(f"metadata {got_metadata!r}, expected {expected_metadata!r}")
    return problems


def load_expected(path):
    with open(path) as f:
        doc = json.load(f)
    return {t["name"]: (t["dtype"], t["shape"], bytes.fromhex(t["hex"])) for t in doc["tensors"]}, doc["metadata"]


def check_loom_file(path, expected_path, readers):
    """Runs each reader on a Loom-written file; returns the differences, each prefixed with the reader."""
    expected, expected_metadata = load_expected(expected_path)
    problems = []
    for label, reader in readers:
        try:
            got, got_metadata = reader(path)
        except Exception as e:  # a reader refusing the file is a difference too
            problems.append(f"{label}: cannot read {path}: {type(e).__name__}: {e}")
            continue
        found = [f"{label}: {p}" for p in differences(expected, expected_metadata, got, got_metadata)]
        dtypes = sorted({entry[0] for entry in got.values()})
        print(f"  {label}: {len(got)} tensors ({' '.join(dtypes)}) {'differ' if found else 'bit-exact'}")
        problems += found
    return problems


ALL_READERS = [("torch load_file", read_with_torch_load_file), ("numpy safe_open", read_with_numpy_safe_open)]
NUMPY_READERS = [("numpy load_file", read_with_numpy_load_file)]


def write_loom_files(tool, tmp):
    """Loom writes every dtype (all.safetensors) and every dtype numpy has (numpy.safetensors)."""
    files = []
    for name, extra, readers in [("all", [], ALL_READERS), ("numpy", ["--without", "BF16"], NUMPY_READERS)]:
        path, expected = os.path.join(tmp, f"{name}.safetensors"), os.path.join(tmp, f"{name}.expected.json")
        subprocess.run([tool, "write", path, expected] + extra, check=True, timeout=TIMEOUT_S)
        files.append((path, expected, readers))
    return files


def loom_writes(tool):
    print(f"safetensors reads Loom's files with {versions()}")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, expected, readers in write_loom_files(tool, tmp):
            print(f"{os.path.basename(path)}:")
            problems += check_loom_file(path, expected, readers)
    return problems


# ---- files written by safetensors, for Loom to read ----

def bits(dtype, patterns, shape):
    return np.array(patterns, dtype=dtype).reshape(shape)


def python_arrays():
    """numpy arrays of every dtype both sides have, with signed zeros, infinities, NaN payloads, subnormals."""
    f32 = bits(np.uint32, [0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00123,
                           0x00000001, 0x007fffff, 0x7f7fffff, 0x3dcccccd], (2, 5)).view(np.float32)
    f64 = bits(np.uint64, [0x8000000000000000, 0x7ff0000000000000, 0x7ff8000000000abc, 0x0000000000000001,
                           0x000fffffffffffff, 0x3fb999999999999a], (3, 2)).view(np.float64)
    f16 = bits(np.uint16, [0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7d01, 0x0001, 0x03ff, 0x7bff, 0x2e66], (9,)).view(np.float16)
    bf16 = bits(np.uint16, [0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fa1, 0x0001, 0x007f, 0x7f7f, 0x3dcd, 0xbf80], (2, 5))
    return {
        "f32": f32, "f64": f64, "f16": f16, "bf16_bits": bf16,
        "i32": np.array([-2**31, -1, 0, 2**31 - 1, 7], dtype=np.int32),
        "i64": np.array([[-2**63, -1], [2**53 + 1, 2**63 - 1]], dtype=np.int64),
        "u8": np.array([0, 1, 128, 255], dtype=np.uint8),
        "bool": np.array([[True, False, True], [False, False, True]]),
        "f32_scalar": np.array(-0.0, dtype=np.float32),
        "i64_empty": np.zeros((0, 4), dtype=np.int64),
    }


def write_python_files(tmp):
    """Files written by safetensors' torch and numpy front ends: [(path, expected tensors, metadata)]."""
    arrays = python_arrays()
    metadata = {"format": "pt", "written_by": "safetensors", "unicode": "\u03bb \u2713", "quotes": "a \"b\" \\"}
    torch_tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items() if k != "bf16_bits"}
    torch_tensors["bf16"] = torch.from_numpy(arrays["bf16_bits"].view(np.int16).copy()).view(torch.bfloat16)
    torch_path = os.path.join(tmp, "torch.safetensors")
    safetensors.torch.save_file(torch_tensors, torch_path, metadata=metadata)
    numpy_arrays = {k: v for k, v in arrays.items() if k != "bf16_bits"}  # numpy has no bfloat16
    numpy_path = os.path.join(tmp, "numpy.safetensors")
    safetensors.numpy.save_file(numpy_arrays, numpy_path, metadata=metadata)
    return [(torch_path, {k: torch_entry(v) for k, v in torch_tensors.items()}, metadata),
            (numpy_path, {k: numpy_entry(v) for k, v in numpy_arrays.items()}, metadata)]


def loom_reads(tool):
    print(f"Loom reads files written by {versions()}")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, expected, metadata in write_python_files(tmp):
            got, got_metadata = read_with_loom(tool, path)
            found = [f"{os.path.basename(path)}: {p}" for p in differences(expected, metadata, got, got_metadata)]
            dtypes = sorted({entry[0] for entry in expected.values()})
            print(f"  {os.path.basename(path)}: {len(got)} tensors ({' '.join(dtypes)}) "
                  f"{'differ' if found else 'bit-exact'}")
            problems += found
    return problems


# ---- the checks can fail ----

def tensor_spans(path):
    """{name: (first byte, end)} of each tensor's data, as offsets into the file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]) for k, v in header.items()}


def flip_one_byte(src, dst, name):
    begin, end = tensor_spans(src)[name]
    shutil.copyfile(src, dst)
    at = (begin + end) // 2  # the lowest bit of a byte in the middle of the tensor's data
    with open(dst, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x01]))
    return at


def corrupt(tool):
    """Flips one bit of one byte of each tensor's data in turn: every check must report that tensor, and only it."""
    print(f"flipping one bit in each tensor's data ({versions()})")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.safetensors")
        for path, expected, readers in write_loom_files(tool, tmp):
            for name, (begin, end) in tensor_spans(path).items():
                if begin == end:
                    continue
                at = flip_one_byte(path, bad, name)
                print(f"{os.path.basename(path)}, byte {at} (in {name}) flipped:")
                found = check_loom_file(bad, expected, readers)
                for label, _ in readers:
                    mine = [p for p in found if p.startswith(f"{label}: ")]
                    if not mine or any(not p.startswith(f"{label}: {name}: ") for p in mine):
                        problems.append(f"{label} after flipping byte {at} of {path} ({name}) reported {mine}")
                    else:
                        print(f"    caught: {mine[0]}")
        # End to end: the `check` command exits 1 on a corrupted Loom file.
        path, expected, _ = write_loom_files(tool, tmp)[0]
        flip_one_byte(path, bad, "f32")
        run = subprocess.run([sys.executable, __file__, "check", bad, expected], capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        print(f"`check` on a file with one byte of f32 flipped: exit {run.returncode}: {run.stdout.strip()!r}")
        if run.returncode != 1:
            problems.append(f"check exited {run.returncode} on a corrupted file, expected 1")
        # And the other way: a flipped byte in a file safetensors wrote shows up in what Loom reads.
        for path, expected, metadata in write_python_files(tmp):
            caught = 0
            for name, (begin, end) in tensor_spans(path).items():
                if begin == end:
                    continue
                at = flip_one_byte(path, bad, name)
                got, got_metadata = read_with_loom(tool, bad)
                found = differences(expected, metadata, got, got_metadata)
                if not found or any(not p.startswith(f"{name}: ") for p in found):
                    problems.append(f"Loom reading {path} with byte {at} ({name}) flipped: reported {found}")
                else:
                    caught += 1
            print(f"{os.path.basename(path)} (written by safetensors): a byte flipped in one tensor's data was "
                  f"seen in what Loom read for {caught} of its non-empty tensors")
    return problems


def main():
    args = sys.argv[1:]
    commands = {"loom-writes": loom_writes, "loom-reads": loom_reads, "corrupt": corrupt}
    if len(args) == 2 and args[0] in commands:
        problems = commands[args[0]](args[1])
    elif len(args) == 3 and args[0] == "check":
        problems = check_loom_file(args[1], args[2], ALL_READERS)
    else:
        sys.stderr.write(__doc__)
        return 2
    for p in problems:
        print(f"DIFFERENCE: {p}")
    print("FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
