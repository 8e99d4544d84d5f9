#!/usr/bin/env python3
"""Writes the seed corpora of csv_fuzz, kvstore_state_fuzz and checkpoint_fuzz
(fuzz/corpus/{csv,kvstore_state,checkpoint}): small valid inputs of each
format, plus a few near misses, plus regression seeds: inputs that crashed a
target until their fix (docs/BENCHMARKS.md "Fuzzing").
Standard library only.

    python3 fuzz/make_seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FMT = {"F32": "f", "F64": "d", "I64": "q"}


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, values)] -> bytes of a safetensors file."""
    header, data = {}, b""
    for name, dtype, shape, values in tensors:
        blob = struct.pack("<%d%s" % (len(values), FMT[dtype]), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(corpus, name, blob):
    d = os.path.join(HERE, "corpus", corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


def csv_seeds():
    # First byte: bit 0 header; bits 1-2 label none/0/-1/"label"; bits 3-4 delimiter , \t ; space; bit 5 f32 targets.
    write("csv", "header_label_name", b"\x07a,b,label\n1,2,0\n3.5,-4e2,1\n")
    write("csv", "plain_no_label", b"\x001,2\n3,4\n")
    write("csv", "tab_last_label_f32", b"\x2c1\t2\t0.5\n3\t4\t-1.25\n")
    write("csv", "semicolon_quotes_blank", b'\x13"y";"x1";"x2"\n 1 ; nan ; inf \n\n2;"3";+4\r\n')
    write("csv", "space_delimited", b"\x181 2 3\n4 5 6\n")
    write("csv", "ragged", b"\x02" + b"1,2,3\n4,5\n")
    write("csv", "bad_label", b"\x031,2\n0.5,3\n")


def kvstore_seeds():
    # The fuzzer's store: key 0 f32 [4], key 1 f64 [2, 3], key 2 f32 scalar.
    keys = [(0, "F32", [4], 4), (1, "F64", [2, 3], 6), (2, "F32", [], 1)]

    def state(slots, only=None, updates=3):
        tensors, meta = [], {"format": "loom-kvstore-state-v1"}
        for key, dtype, shape, n in keys:
            if only is not None and key not in only:
                continue
            tensors.append(("key%d" % key, dtype, shape, [0.5 * (i + 1) for i in range(n)]))
            for j in range(slots):
                tensors.append(("key%d.state%d" % (key, j), dtype, shape, [0.01 * (i + j) for i in range(n)]))
            meta["key%d.updates" % key] = str(updates)
            meta["key%d.slots" % key] = str(slots)
        return safetensors(tensors, meta)

    write("kvstore_state", "no_optimizer", state(0))
    write("kvstore_state", "sgd_momentum", state(1))
    write("kvstore_state", "adam", state(2, updates=17))
    write("kvstore_state", "one_key", state(2, only=[1], updates=1))
    write("kvstore_state", "no_format", safetensors([("key0", "F32", [4], [1, 2, 3, 4])], {"key0.updates": "1"}))


CKPT_PARAMS = [("bn.weight", [2], 2), ("bn.bias", [2], 2), ("fc.weight", [3, 2], 6), ("fc.bias", [3], 3)]


def ckpt_model(num_batches_tracked=("I64", 5)):
    model = [("model." + n, "F32", s, [0.1 * (i + 1) for i in range(k)]) for n, s, k in CKPT_PARAMS]
    return model + [("model.bn.running_mean", "F32", [2], [0.0, 0.5]), ("model.bn.running_var", "F32", [2], [1.0, 2.0]),
                    ("model.bn.num_batches_tracked", num_batches_tracked[0], [], [num_batches_tracked[1]])]


def checkpoint_seeds():
    # The fuzzer's model: bn (BatchNorm2d, 2 channels) and fc (Linear 2 -> 3).
    params = CKPT_PARAMS
    model = ckpt_model()
    meta = {"loom.step": "5", "loom.loader_epoch": "0", "loom.loader_batch": "5"}

    def optim(slots, step):
        out = []
        for n, s, k in params:
            for slot in slots:
                out.append(("optim.%s.%s" % (n, slot), "F32", s, [0.01 * i for i in range(k)]))
            out.append(("optim.%s.step" % n, "I64", [], [step]))
        return out + [("optim.step", "I64", [], [step]), ("optim.lr", "F64", [], [0.01])]

    write("checkpoint", "sgd_momentum", safetensors(model + optim(["momentum_buffer"], 5), meta))
    write("checkpoint", "adam", safetensors(model + optim(["exp_avg", "exp_avg_sq"], 5), meta))
    write("checkpoint", "fresh_optimizer", safetensors(model + [("optim.step", "I64", [], [0]),
                                                                ("optim.lr", "F64", [], [0.1])], meta))
    write("checkpoint", "model_only", safetensors(model, {"format": "pt"}))
    # The old parameter-server layout (train/legacy_checkpoint.h): servers.key<k> per parameter, in order.
    servers, smeta = [], {"servers.format": "loom-kvstore-state-v1", "loom.step": "5"}
    for k, (n, s, num) in enumerate(params):
        servers.append(("servers.key%d" % k, "F32", s, [0.2 * (i + 1) for i in range(num)]))
        servers.append(("servers.key%d.state0" % k, "F32", s, [0.01 * i for i in range(num)]))
        smeta["servers.key%d.updates" % k] = "5"
        smeta["servers.key%d.slots" % k] = "1"
    write("checkpoint", "legacy_servers_sgd",
          safetensors(model + servers + [("optim.step", "I64", [], [0]), ("optim.lr", "F64", [], [0.1])], smeta))


def regression_seeds():
    def crash(target, name, blob):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)

    big = 2**63 - 1
    fresh = [("optim.step", "I64", [], [0]), ("optim.lr", "F64", [], [0.1])]
    # Shard::set_state takes any update count >= 0; the next push overflows updates_ + 1 (shard.cc).
    crash("kvstore_state", "updates_int64_max",
          safetensors([("key0", "F32", [4], [1, 2, 3, 4])],
                      {"format": "loom-kvstore-state-v1", "key0.updates": str(big), "key0.slots": "0"}))
    # Optimizer::load_state_dict reads "step" with item<int64_t>() whatever its dtype: 1e30 as f64 is a
    # float-to-int overflow (tensor.h cast_value).
    crash("checkpoint", "optim_step_f64_1e30",
          safetensors(ckpt_model() + [("optim.step", "F64", [], [1e30]), ("optim.lr", "F64", [], [0.1])]))
    # ... and takes step = INT64_MAX; the next step() overflows (optimizer.cc).
    crash("checkpoint", "optim_step_int64_max",
          safetensors(ckpt_model() + [("optim.step", "I64", [], [big]), ("optim.lr", "F64", [], [0.1])]))
    # Module::load_state_dict copies num_batches_tracked = INT64_MAX; the next training forward
    # overflows count += 1 (normalization.cc).
    crash("checkpoint", "bn_count_int64_max", safetensors(ckpt_model(("I64", big)) + fresh))
    # ... and copies an f64 1e30 into that i64 buffer: a float-to-int overflow in the copy kernel.
    crash("checkpoint", "bn_count_f64_1e30", safetensors(ckpt_model(("F64", 1e30)) + fresh))
    # An old-layout file whose metadata says servers.key0.slots = 1 but holds no servers.key0.state0:
    # upgrade_legacy_server_state reads k.slots.rbegin() of an empty map (legacy_checkpoint.cc, ASan SEGV).
    old = [("servers.key%d" % k, "F32", s, [0.5] * num) for k, (n, s, num) in enumerate(CKPT_PARAMS)]
    old_meta = {"servers.format": "loom-kvstore-state-v1"}
    for k in range(len(CKPT_PARAMS)):
        old_meta["servers.key%d.updates" % k] = "1"
        old_meta["servers.key%d.slots" % k] = "1"
    crash("checkpoint", "legacy_slots_without_state", safetensors(ckpt_model() + old + fresh, old_meta))


if __name__ == "__main__":
    csv_seeds()
    kvstore_seeds()
    checkpoint_seeds()
    regression_seeds()
