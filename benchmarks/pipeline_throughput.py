"""Images/s of the visionpipe Pipeline vs raw inference and vs a naive tutorial-style loop.

(a) raw ``session.run`` on tensors prepared in advance (ONNX Runtime defaults, one image per run:
    the model is fixed at batch 1) — the ceiling for the model alone;
(b) ``Pipeline.run`` from the JPEG files on disk (decode, preprocess, infer, decode, NMS, map back);
(c) the classic tutorial loop: one image at a time, per-box Python objects, Python-loop NMS.
All use score threshold 0.01, multi-label, top 1000 candidates, per-class NMS at IoU 0.65 and at
most 300 detections, so (b) and (c) compute the same detections (checked before timing).

    python benchmarks/pipeline_throughput.py [--rounds 3] [--batch-size 1]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import onnxruntime as ort

from _common import ASSETS, header, timed_rounds
from visionpipe import Pipeline
from visionpipe.preprocess import preprocess

CONF, IOU, TOP_K, MAX_DET = 0.01, 0.65, 1000, 300


def naive_detect(session: ort.InferenceSession, path: str) -> list[dict]:
    """Tutorial-style YOLOX inference: Python objects per box and a Python NMS loop."""
    image = cv2.imread(path)
    h, w = image.shape[:2]
    r = min(416 / h, 416 / w)
    canvas = np.full((416, 416, 3), 114, dtype=np.uint8)
    canvas[: int(h * r), : int(w * r)] = cv2.resize(image, (int(w * r), int(h * r)))
    blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    output = session.run(None, {"images": blob})[0][0]

    boxes = []
    index = 0
    for stride in (8, 16, 32):
        size = 416 // stride
        for gy in range(size):
            for gx in range(size):
                row = output[index]
                index += 1
                scores = row[4] * row[5:]
                for cls in np.nonzero(scores > CONF)[0]:
                    cx, cy = (row[0] + gx) * stride, (row[1] + gy) * stride
                    bw, bh = np.exp(row[2]) * stride, np.exp(row[3]) * stride
                    sx, sy = int(w * r) / w, int(h * r) / h
                    boxes.append(
                        {
                            "box": [
                                min(max((cx - bw / 2) / sx, 0), w),
                                min(max((cy - bh / 2) / sy, 0), h),
                                min(max((cx + bw / 2) / sx, 0), w),
                                min(max((cy + bh / 2) / sy, 0), h),
                            ],
                            "score": float(scores[cls]),
                            "class": int(cls),
                        }
                    )
    boxes.sort(key=lambda b: -b["score"])
    boxes = boxes[:TOP_K]
    kept: list[dict] = []
    for candidate in boxes:
        if all(k["class"] != candidate["class"] or iou(k["box"], candidate["box"]) <= IOU for k in kept):
            kept.append(candidate)
            if len(kept) == MAX_DET:
                break
    return kept


def iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()

    model = ASSETS / "models" / "yolox_nano_416_coco.onnx"
    files = sorted(str(p) for p in (ASSETS / "coco" / "images" / "val2017").glob("*.jpg"))
    if not files or not model.is_file():
        raise SystemExit(f"assets not found under {ASSETS} (set VISIONPIPE_ASSETS)")

    pipeline = Pipeline({"model": model, "family": "yolox"}, conf=CONF, iou=IOU, top_k=TOP_K, max_det=MAX_DET)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    tensors = [preprocess(cv2.imread(f), (416, 416), pipeline.model.preprocess)[0][None] for f in files]

    # (b) and (c) must agree before their speeds mean anything.
    ours = pipeline.run(files[:8])
    for result, path in zip(ours, files[:8]):
        naive = naive_detect(session, path)
        assert len(naive) == len(result.detections), (path, len(naive), len(result.detections))
        assert np.allclose([b["box"] for b in naive], result.detections.xyxy, atol=1e-2), path

    def raw() -> int:
        for tensor in tensors:
            session.run(None, {"images": tensor})
        return len(tensors)

    def pipe() -> int:
        return sum(r.ok for r in pipeline.run(files, batch_size=args.batch_size))

    def tutorial() -> int:
        for path in files:
            naive_detect(session, path)
        return len(files)

    print(
        header(
            "pipeline throughput — YOLOX-Nano 416 on the 64 COCO val2017 photos",
            {
                "rounds": args.rounds,
                "batch_size": args.batch_size,
                "conf": CONF,
                "pipeline lanes": pipeline.concurrency,
                "pipeline workers": pipeline.workers,
            },
        )
    )
    rates = timed_rounds({"a": raw, "b": pipe, "c": tutorial}, args.rounds)
    print()
    print("| path | what | images/s |")
    print("|---|---|---|")
    print(f"| (a) | raw session.run on prepared tensors | {rates['a']:.1f} |")
    print(f"| (b) | Pipeline.run from files on disk | {rates['b']:.1f} |")
    print(f"| (c) | naive loop: per-box objects, Python NMS | {rates['c']:.1f} |")
    print()
    print(f"b/a = {rates['b'] / rates['a']:.2f}   (goal >= 0.90)")
    print(f"b/c = {rates['b'] / rates['c']:.1f}   (goal >= 3)")
    pipeline.close()


if __name__ == "__main__":
    main()
