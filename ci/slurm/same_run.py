#!/usr/bin/env python3
"""same_run.py A B: the two checkpoints of `train` hold the same run, bit for bit: every tensor's
dtype, shape and bytes, the run's settings, normalisation and epoch count, and the metrics history
but for the seconds each epoch took. Exits 1 naming the first difference. Standard library only."""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    tensors = {
        name: (t["dtype"], t["shape"], body[t["data_offsets"][0] : t["data_offsets"][1]])
        for name, t in header.items()
    }
    return tensors, meta


def without_seconds(csv):
    return [line.rsplit(",", 1)[0] for line in csv.splitlines()]


def main(a, b):
    (ta, ma), (tb, mb) = read(a), read(b)
    if sorted(ta) != sorted(tb):
        sys.exit(f"{a} and {b} hold different tensors: {sorted(set(ta) ^ set(tb))}")
    for name in sorted(ta):
        if ta[name] != tb[name]:
            sys.exit(f"tensor {name} differs between {a} and {b}")
    for key in ["run", "normalization", "epoch", "format"]:
        if ma.get(key) != mb.get(key):
            sys.exit(f"metadata `{key}` differs: {ma.get(key)!r} vs {mb.get(key)!r}")
    if without_seconds(ma["metrics_csv"]) != without_seconds(mb["metrics_csv"]):
        sys.exit(f"metrics differ:\n{ma['metrics_csv']}\nvs\n{mb['metrics_csv']}")
    for path, meta in [(a, ma), (b, mb)]:
        if "partial_epoch" in meta:
            sys.exit(f"{path} is within an epoch, not at the run's end")
    print(f"same run, bit for bit: {len(ta)} tensors, {ma['epoch']} epochs ({a} = {b})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: same_run.py A.safetensors B.safetensors")
    main(sys.argv[1], sys.argv[2])
