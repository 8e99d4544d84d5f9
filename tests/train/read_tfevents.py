#!/usr/bin/env python3
"""Reads a TensorBoard event file without TensorFlow, to check TensorBoardWriter.

    read_tfevents.py FILE [--tensorboard]

Prints one JSON object per event:
    {"wall_time": 1.7e9, "step": 3, "file_version": "brain.Event:2"}
    {"wall_time": 1.7e9, "step": 3, "values": [{"tag": "loss", "simple_value": 0.25}]}
and exits with status 1 and a message on stderr if a record is truncated, a
CRC does not match, or the protobuf is malformed. The TFRecord framing, the
masked CRC-32C and the protobuf wire format are decoded here from their
specifications, independently of the C++ code.

With --tensorboard, also loads the file's folder with TensorBoard's
EventAccumulator (when the tensorboard package is importable) and checks that
it sees the same scalars; prints "tensorboard: not installed" otherwise.
"""
import json
import math
import struct
import sys


def crc32c(data):
    # Bit at a time over the reflected Castagnoli polynomial: slow, obviously right.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class FormatError(Exception):
    pass


def read_records(blob):
    pos = 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            raise FormatError("truncated record header at offset %d" % pos)
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if masked_crc32c(header) != length_crc:
            raise FormatError("length CRC mismatch at offset %d" % pos)
        pos += 12
        if len(blob) - pos < length + 4:
            raise FormatError("truncated record data at offset %d" % pos)
        data = blob[pos:pos + length]
        (data_crc,) = struct.unpack("<I", blob[pos + length:pos + length + 4])
        if masked_crc32c(data) != data_crc:
            raise FormatError("data CRC mismatch at offset %d" % pos)
        pos += length + 4
        yield data


def read_varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise FormatError("varint too long")


def parse_fields(buf):
    """Yields (field_number, wire_type, value) for a serialised message."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise FormatError("truncated fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise FormatError("truncated length-delimited field %d" % field)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise FormatError("truncated fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise FormatError("unsupported wire type %d" % wire)
        yield field, wire, value


def parse_value(buf):
    # tensorflow.Summary.Value: tag = 1 (string), simple_value = 2 (float)
    out = {}
    for field, wire, value in parse_fields(buf):
        if field == 1 and wire == 2:
            out["tag"] = value.decode("utf-8")
        elif field == 2 and wire == 5:
            (out["simple_value"],) = struct.unpack("<f", value)
    return out


def parse_event(buf):
    # tensorflow.Event: wall_time = 1 (double), step = 2 (int64),
    # file_version = 3 (string), summary = 5 (Summary { repeated Value value = 1 })
    event = {}
    for field, wire, value in parse_fields(buf):
        if field == 1 and wire == 1:
            (event["wall_time"],) = struct.unpack("<d", value)
        elif field == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= (1 << 63) else value
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode("utf-8")
        elif field == 5 and wire == 2:
            event["values"] = [parse_value(v) for f, w, v in parse_fields(value) if f == 1 and w == 2]
    event.setdefault("step", 0)
    return event


def json_number(x):
    # JSON has no NaN / Infinity; write them as strings the test understands.
    return x if math.isfinite(x) else repr(x)


def check_with_tensorboard(path, events):
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        print("tensorboard: not installed", file=sys.stderr)
        return
    import os
    acc = event_accumulator.EventAccumulator(os.path.dirname(os.path.abspath(path)))
    acc.Reload()
    expected = {}
    for e in events:
        for v in e.get("values", []):
            expected.setdefault(v["tag"], []).append((e["step"], v["simple_value"]))
    for tag, points in expected.items():
        got = [(s.step, s.value) for s in acc.Scalars(tag)]
        same = len(got) == len(points) and all(
            gs == es and (gv == ev or (math.isnan(gv) and math.isnan(ev)))
            for (gs, gv), (es, ev) in zip(got, points))
        if not same:
            raise FormatError("tensorboard reads %r as %r, expected %r" % (tag, got, points))
    print("tensorboard: ok", file=sys.stderr)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = args[0]
    try:
        with open(path, "rb") as f:
            blob = f.read()
        events = [parse_event(r) for r in read_records(blob)]
        for e in events:
            for v in e.get("values", []):
                if "simple_value" in v:
                    v["simple_value_json"] = json_number(v["simple_value"])
            printable = dict(e)
            printable["values"] = [{"tag": v.get("tag"), "simple_value": v.get("simple_value_json")}
                                   for v in e.get("values", [])]
            if "values" not in e:
                del printable["values"]
            print(json.dumps(printable))
        if "--tensorboard" in sys.argv:
            check_with_tensorboard(path, events)
    except (FormatError, UnicodeDecodeError, OSError) as err:
        print("read_tfevents: %s: %s" % (path, err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
