"""Drift detection on the real assets: what each scenario flags, with the decisive p-values.

Reference: the 128 train2017 photos (image statistics). Current: the 64 val2017 photos as they are
(no drift expected) and darkened, blurred, JPEG-10, downscaled to 25 % and noised. Then YOLOX-Nano
predictions: the person clip's first half vs its second half (no drift expected), the person clip
vs the car clip, and fp32 vs its dynamic-int8 build on the 64 val photos. Clips use every 5th frame.

    python benchmarks/monitor_drift.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from _common import ASSETS, header
from visionpipe import Pipeline
from visionpipe.monitor import Monitor, check, freeze_reference
from visionpipe.optimize.quantize import quantize_dynamic_int8
from visionpipe.video.processor import VideoProcessor
from visionpipe.video.sources import open_source

rng = np.random.default_rng(11)
CHANGES = {
    "none": lambda im: im,
    "darkened x0.5": lambda im: (im * 0.5).astype(np.uint8),
    "blurred (Gaussian sigma 3)": lambda im: cv2.GaussianBlur(im, (0, 0), 3),
    "JPEG quality 10": lambda im: cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], 1),
    "downscaled to 25 %": lambda im: cv2.resize(im, (im.shape[1] // 4, im.shape[0] // 4), interpolation=cv2.INTER_AREA),
    "Gaussian noise sigma 20": lambda im: np.clip(im + rng.normal(0, 20, im.shape), 0, 255).astype(np.uint8),
}


def row(name: str, result) -> str:
    ks = sorted((r for r in result.results if r.p_value is not None), key=lambda r: r.p_value)
    top = ", ".join(f"{r.feature} ({r.test}) {r.p_value:.1e}" for r in ks[:3])
    drifted = ", ".join(result.drifted) or "none"
    return f"| {name} | {result.window['images']} | {drifted} | {top} |"


def main() -> None:
    print(header("Drift detection on the shared assets", {"alpha": 0.01, "correction": "Holm", "clip stride": 5}))
    print("\n| current window | images | drifting (decisive tests) | smallest p-values |\n|---|---:|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "m.db"
        photos = {
            s: [cv2.imread(str(p)) for p in sorted((ASSETS / f"coco/images/{s}").glob("*.jpg"))]
            for s in ("train2017", "val2017")
        }
        with Monitor(store) as monitor:
            for tag, images in [("train", photos["train2017"])] + [
                (n, [f(im) for im in photos["val2017"]]) for n, f in CHANGES.items()
            ]:
                monitor.tag = tag
                for i, image in enumerate(images):
                    monitor.observe(SimpleNamespace(image_id=f"{tag}-{i}"), image=image)
            monitor.flush()
            freeze_reference(monitor.store, "train", tag="train")
            for name in CHANGES:
                print(row(f"val photos, {name} (vs train)", check(monitor.store, reference="train", tag=name)))

        model = {"model": ASSETS / "models/yolox_nano_416_coco.onnx", "family": "yolox"}
        with Pipeline(model, conf=0.3) as pipe, Monitor(store, class_names=pipe.class_names) as monitor:
            pipe.monitor = monitor
            for tag, clip in (("person", "one-by-one-person-detection.mp4"), ("car", "car-detection.mp4")):
                monitor.tag = tag
                VideoProcessor(pipe, open_source(str(ASSETS / "video" / clip)), stride=5).run()
            monitor.tag = "fp32"
            pipe.run(photos["val2017"])
            monitor.flush()
            rows = monitor.store.records(tag="person")
            half = rows[len(rows) // 2][1]
            freeze_reference(monitor.store, "person-1st-half", tag="person", until=half)
            freeze_reference(monitor.store, "person", tag="person")
            freeze_reference(monitor.store, "fp32", tag="fp32")
            print(
                row(
                    "person clip, 2nd half (vs 1st half)",
                    check(monitor.store, reference="person-1st-half", tag="person", since=half),
                )
            )
            print(row("car clip (vs person clip)", check(monitor.store, reference="person", tag="car")))
            int8 = quantize_dynamic_int8(model["model"], Path(folder) / "yolox_int8.onnx")
            with Pipeline({"model": int8, "family": "yolox"}, conf=0.3) as broken:
                broken.monitor = monitor
                monitor.tag = "int8"
                broken.run(photos["val2017"])
                monitor.flush()
            print(row("YOLOX-Nano dynamic int8 on val (vs fp32)", check(monitor.store, reference="fp32", tag="int8")))


if __name__ == "__main__":
    main()
