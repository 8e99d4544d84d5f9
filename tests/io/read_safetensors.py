#!/usr/bin/env python3
"""Reads a safetensors file without Loom and prints its content as JSON.

An independent check of Loom's writer: this parses the format from its
description (8-byte little-endian header length, JSON header, data section)
with the standard library only, checks the layout the way the reference
implementation does, and prints

  {"metadata": {...}, "tensors": [{"name", "dtype", "shape", "values"}, ...]}

with tensors in header order and values flattened in row-major order (16-bit
floats widened to float). With --torch it loads the file with
safetensors.torch.load_file instead and prints the same thing.

Usage: read_safetensors.py [--torch] FILE
"""
import json
import math
import struct
import sys

FORMATS = {"F32": ("f", 4), "F64": ("d", 8), "F16": ("e", 2), "BF16": ("H", 2),
           "I32": ("i", 4), "I64": ("q", 8), "U8": ("B", 1), "BOOL": ("?", 1)}


def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def read_plain(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    if 8 + n > len(blob):
        fail("header runs past the end of the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = []
    spans = []
    for name, info in header.items():
        fmt, size = FORMATS[info["dtype"]]
        shape = info["shape"]
        begin, end = info["data_offsets"]
        count = math.prod(shape)
        if end - begin != count * size:
            fail(f"{name}: {end - begin} bytes for {count} elements of {size}")
        raw = data[begin:end]
        values = list(struct.unpack("<" + fmt * count, raw))
        if info["dtype"] == "BF16":
            values = [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in values]
        tensors.append({"name": name, "dtype": info["dtype"], "shape": shape, "values": values})
        spans.append((begin, end))
    # The reference reader wants the data section exactly covered, without gaps.
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            fail(f"data section has a gap or overlap at byte {pos}")
        pos = end
    if pos != len(data):
        fail(f"data section has {len(data)} bytes, tensors cover {pos}")
    return {"metadata": metadata, "tensors": tensors}


def read_torch(path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    names = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8", torch.bool: "BOOL"}
    import numpy
    import safetensors
    sys.stderr.write(f"read_safetensors.py --torch: safetensors {safetensors.__version__}, torch {torch.__version__}, "
                     f"numpy {numpy.__version__} ({sys.executable})\n")
    loaded = load_file(path)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        order = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
    tensors = []
    for name in order:
        t = loaded[name]
        flat = t.flatten()
        if t.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        tensors.append({"name": name, "dtype": names[t.dtype], "shape": list(t.shape), "values": flat.tolist()})
    return {"metadata": metadata, "tensors": tensors}


def main():
    args = sys.argv[1:]
    use_torch = "--torch" in args
    args = [a for a in args if a != "--torch"]
    if len(args) != 1:
        fail(__doc__)
    result = read_torch(args[0]) if use_torch else read_plain(args[0])
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
