"""Fuzzing decode_image with corrupted JPEG and PNG bytes.

Each corrupted input must give either an ImageDecodeError or a valid HxWx3 uint8 array: no other
exception, no native crash, no hang. The loop runs in a child process, so a segfault or an endless
decode fails this test instead of killing or hanging pytest; the child reports counts as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PHOTO = "coco/images/val2017/000000000139.jpg"

FUZZ_SCRIPT = r"""
import json, random, sys, zlib, struct
import numpy as np
from visionpipe.errors import ImageDecodeError
from visionpipe.io import decode_image

jpeg_path, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jpeg = open(jpeg_path, "rb").read()

def chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

# a small generated RGB PNG (gradient + noise, so the compressed stream is not trivial)
h, w = 48, 64
yy, xx = np.mgrid[0:h, 0:w]
pixels = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
pixels ^= np.random.default_rng(seed).integers(0, 16, pixels.shape, dtype=np.uint8)
raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

rng = random.Random(seed)

def flip(data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        # half the flips land in the first 300 bytes, where the headers are
        limit = min(len(data), 300) if rng.random() < 0.5 else len(data)
        data[rng.randrange(limit)] ^= rng.randint(1, 255)
    return bytes(data)

def truncate(data):
    return data[: rng.randrange(1, len(data))]

def insert(data):
    at = rng.randrange(len(data))
    if rng.random() < 0.5:
        piece = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    else:
        start = rng.randrange(len(data))
        piece = data[start : start + rng.randint(1, 2000)]
    return data[:at] + piece + data[at:]

def delete(data):
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 2000):]

def splice(data):
    other = png if data[:2] == b"\xff\xd8" else jpeg
    if rng.random() < 0.5:  # this file's header, the other file's body
        cut = rng.randint(2, min(len(data), 700))
        return data[:cut] + other[rng.randrange(len(other)):]
    cut = rng.randint(2, min(len(other), 700))  # the other file's header, this file's body
    return other[:cut] + data[rng.randrange(len(data)):]

def marker_noise(data):
    # plant JPEG/PNG-looking markers at random places
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) - 1)
        data[at:at + 2] = rng.choice([b"\xff\xd9", b"\xff\xda", b"\xff\xc0", b"\xff\xd8", b"\xff\xc4", b"\xff\xdb"])
    return bytes(data)

MUTATIONS = [flip, truncate, insert, delete, splice, marker_noise]

counts = {"ok": 0, "error": 0}
bad = []
for base_name, base in (("jpeg", jpeg), ("png", png)):
    for i in range(rounds):
        data = base
        for _ in range(rng.randint(1, 3)):
            data = rng.choice(MUTATIONS)(data)
            if not data:
                data = base[:1]
        try:
            out = decode_image(data)
        except ImageDecodeError:
            counts["error"] += 1
            continue
        except BaseException as exc:
            bad.append(f"{base_name} #{i}: {type(exc).__name__}: {exc}"[:300])
            continue
        valid = (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3
                 and out.shape[2] == 3 and out.shape[0] > 0 and out.shape[1] > 0)
        if valid:
            counts["ok"] += 1
        else:
            bad.append(f"{base_name} #{i}: invalid result {type(out).__name__} {getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")

print(json.dumps({"counts": counts, "bad": bad}))
"""


@pytest.mark.real
@pytest.mark.parametrize("seed", [1, 2])
def test_corrupted_inputs_give_a_decode_error_or_a_valid_image(asset, seed):
    env = dict(os.environ, OPENCV_LOG_LEVEL="ERROR")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", FUZZ_SCRIPT, str(asset(PHOTO)), str(seed), "150"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("decoding corrupted inputs hung (no result within 120 s)")
    assert proc.returncode == 0, f"fuzz child died with code {proc.returncode}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bad"] == [], "\n".join(report["bad"])
    counts = report["counts"]
    assert counts["ok"] + counts["error"] == 300
    assert counts["ok"] > 0 and counts["error"] > 0, counts
