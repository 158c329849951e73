"""st_read.py: the tensors of a safetensors file as numpy arrays, for the
shell checks' inline Python (`sys.path.insert(0, TESTS_HELPERS)`). F32 tensors
come back as float32 arrays of their shape; BF16 ones as None (the checks that
use this file read f32 checkpoints)."""
import json
import struct

import numpy as np


def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            out[k] = None
            continue
        if v["dtype"] != "F32":
            raise ValueError("%s: tensor %s has dtype %s" % (path, k, v["dtype"]))
        out[k] = np.frombuffer(raw[8 + n + a: 8 + n + b], dtype=np.float32).reshape(v["shape"])
    return out
