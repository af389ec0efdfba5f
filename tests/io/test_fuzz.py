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


# -- 1,000 mutated real photos: header sizes and markers edited, truncated, random bytes ------------

PHOTO_FUZZ_SCRIPT = r"""
import glob, json, random, struct, sys, time
import cv2, numpy as np
from visionpipe.errors import ImageDecodeError
from visionpipe.io import DecodeLimits, decode_image

folder, seed, rounds, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
photos = [open(p, "rb").read() for p in sorted(glob.glob(folder + "/*/*.jpg"))[:24]]
# the same photos as PNG and WebP, so those headers are mutated too
others = [cv2.imencode(ext, cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
          for p, ext in zip(photos[:4], [".png", ".png", ".webp", ".bmp"])]

def segments(data):
    # (position, marker) of each JPEG segment before the first scan, by its lengths
    pos, out = 2, []
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        out.append((pos, marker))
        if marker == 0xDA:
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return out

def huge():
    return rng.choice([rng.randint(1, 65535), 65535, 60000, 40000, 20000, rng.randint(1, 4000)])

def edit_sof(data):
    data = bytearray(data)
    for pos, marker in segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, pos + 5, huge(), huge())
    return bytes(data)

def unusual_marker(data):
    # a marker Pillow does not parse (TEM, reserved, JPG) or a junk/fill byte run before the frame
    piece = rng.choice([b"\xff\x01", b"\xff\xff\xff\x01", b"\x00\x13\x37", b"\xff\xc8\x00\x04ab",
                        b"\xff\xf0\x00\x06abcd", b"\xff\xfe\x00\x05abc", b"\xff\x02\x00\x02"])
    cut = rng.choice([p for p, _ in segments(data)] or [2])
    return data[:cut] + piece + data[cut:]

def second_sof(data):
    # a second frame header declaring a huge size, before or after the real one
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", huge(), huge()) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    cut = rng.choice([p for p, _ in segments(data)] or [2])
    return data[:cut] + sof + data[cut:]

def edit_length(data):
    data = bytearray(data)
    segs = segments(data)
    if segs:
        pos, _ = rng.choice(segs)
        struct.pack_into(">H", data, pos + 2, rng.randint(0, 65535))
    return bytes(data)

def edit_other_header(data):
    data = bytearray(data)
    if data[:4] == b"\x89PNG":
        struct.pack_into(">II", data, 16, huge(), huge())
    elif data[:2] == b"BM":
        struct.pack_into("<ii", data, 18, huge(), -huge())
    else:  # WebP VP8/VP8L/VP8X: scribble over the size fields
        for i in range(20, 30):
            data[i] = rng.randrange(256)
    return bytes(data)

def truncate(data):
    return data[:rng.randrange(1, len(data))]

def flip(data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(min(len(data), 400))] ^= rng.randint(1, 255)
    return bytes(data)

def random_bytes(data):
    prefix = data[:rng.choice([0, 2, 3, 4, 8, 12])]
    return prefix + bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))

JPEG_MUTATIONS = [edit_sof, unusual_marker, second_sof, edit_length, truncate, flip, random_bytes]
OTHER_MUTATIONS = [edit_other_header, truncate, flip, random_bytes]

limits = DecodeLimits(max_pixels=limit)
counts = {"ok": 0, "error": 0}
bad, largest = [], 0
start = time.perf_counter()
for i in range(rounds):
    if i % 5 == 4:
        data, mutations = rng.choice(others), OTHER_MUTATIONS
    else:
        data, mutations = rng.choice(photos), JPEG_MUTATIONS
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(mutations)(data) or b"\xff"
    try:
        out = decode_image(data, limits)
    except ImageDecodeError as exc:
        counts["error"] += 1
        if not str(exc).startswith("cannot decode image <"):
            bad.append(f"#{i}: unnamed error {exc}")
        continue
    except BaseException as exc:
        bad.append(f"#{i}: {type(exc).__name__}: {exc}"[:300])
        continue
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3):
        bad.append(f"#{i}: invalid result {getattr(out, 'shape', None)}")
        continue
    largest = max(largest, out.shape[0] * out.shape[1])
    counts["ok"] += 1
hwm = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
print(json.dumps({"counts": counts, "bad": bad, "largest": largest, "hwm_kb": hwm,
                  "seconds": round(time.perf_counter() - start, 2)}))
"""


@pytest.mark.real
def test_a_thousand_mutated_real_photos_never_decode_above_the_pixel_limit(assets):
    """1,000 mutations of real COCO photos (and the same photos as PNG/WebP/BMP): edited declared
    sizes (up to 65535 x 65535), unusual markers and fill bytes before the frame header, second
    frame headers, bad segment lengths, truncations, flips and random bytes. Every input is a
    decoded image or a named ImageDecodeError; no decoded image exceeds the limit; the child's
    peak resident memory stays far below what one decode of a declared 60000 x 60000 frame costs."""
    limit = 1_000_000  # the photos are about 0.3 MP; a declared 65535 x 65535 is 4,300 MP
    env = dict(os.environ, OPENCV_LOG_LEVEL="SILENT")
    proc = subprocess.run(
        [sys.executable, "-c", PHOTO_FUZZ_SCRIPT, str(assets / "coco/images"), "7", "1000", str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"fuzz child died with code {proc.returncode}\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report | {"bad": len(report["bad"])})
    assert report["bad"] == [], "\n".join(report["bad"][:20])
    assert sum(report["counts"].values()) == 1000
    assert report["counts"]["ok"] > 20 and report["counts"]["error"] > 300, report["counts"]
    assert 0 < report["largest"] <= limit
    assert report["hwm_kb"] < 600 * 1024, report
