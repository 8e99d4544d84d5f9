"""Writes a small learnable data set as IDX files for the command-line tests.

    python3 tests/cli/synthetic_idx.py DIR N

DIR/img: N images of 8x8 bytes whose brightness depends on the class;
DIR/lab: N labels i % 3. Seeded: the same files every time.
"""
import random
import struct
import sys


def idx(path, dims, data):
    header = struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", x) for x in dims)
    with open(path, "wb") as f:
        f.write(header + bytes(data))


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    random.seed(0)
    labels = [i % 3 for i in range(n)]
    idx(f"{d}/img", [n, 8, 8], [min(255, random.randrange(128) + 40 * labels[i // 64]) for i in range(n * 64)])
    idx(f"{d}/lab", [n], labels)


if __name__ == "__main__":
    main()
