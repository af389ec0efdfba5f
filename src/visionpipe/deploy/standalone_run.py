"""Detect objects with this bundle's model: needs only numpy, opencv-python-headless and the model's
runtime (onnxruntime, openvino or ncnn, as requirements.txt names it).

Copied into every bundle as ``run.py`` (it never imports visionpipe)::

    python run.py photo.jpg photos/ --out detections.jsonl     # one JSON line per image
    python run.py --check                                      # checksums + golden input/output pair

Everything it needs to know — input layout, colour order, resize and padding, normalisation, the
output family, class names, thresholds, NMS — is read from ``manifest.json`` beside it. Its
detections equal visionpipe's for the same bundle (boxes in original-image pixels, float32).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


# ---------------------------------------------------------------------------------------------
# model


class Model:
    def __init__(self, bundle: Path, manifest: dict, threads: int = 0) -> None:
        self.manifest = manifest
        self.input = manifest["input"]
        self.decoder = manifest["decoder"]
        path = bundle / manifest["model"]["file"]
        if manifest["model"]["format"] == "openvino":
            import openvino as ov

            core = ov.Core()
            # f32 as planned: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
            config: dict = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self._compiled = core.compile_model(str(path), "CPU", config)
            self.input_name = self._compiled.inputs[0].get_any_name()
            self._run = lambda x: [self._compiled(x)[o] for o in self._compiled.outputs]
        elif manifest["model"]["format"] == "ncnn":
            self._run = ncnn_runner(bundle, manifest["model"], threads)
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_name = session.get_inputs()[0].name
            names = [o.name for o in session.get_outputs()]
            self._run = lambda x: session.run(names, {self.input_name: x})
        self.input_hw = tuple(self.input["size"])

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self._run(tensor)]

    def detect(self, image: np.ndarray, conf: float | None = None) -> dict:
        tensor, transform = preprocess(image, self.input_hw, self.input)
        outputs = self.forward(tensor[None])
        thresholds = dict(self.decoder["thresholds"])
        if conf is not None:
            thresholds["conf"] = conf
        boxes, scores, class_ids = decode(self.decoder, outputs, self.input_hw, thresholds)
        boxes = to_original(boxes.astype(np.float32, copy=False), transform)
        keep = nms(
            boxes,
            scores,
            thresholds["iou"],
            None if thresholds.get("agnostic") else class_ids,
            thresholds.get("top_k"),
            thresholds["max_det"],
        )
        return {"xyxy": boxes[keep], "confidence": scores[keep], "class_id": class_ids[keep]}


def ncnn_runner(bundle: Path, entry: dict, threads: int):
    """Run an NCNN model one image at a time in fp32 (as it was measured), batch axis put back."""
    import os

    import ncnn

    net = ncnn.Net()
    for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
        if hasattr(net.opt, name):
            setattr(net.opt, name, False)
    net.opt.num_threads = threads or os.cpu_count() or 1
    if (
        net.load_param(str(bundle / entry["file"])) != 0
        or net.load_model(str(bundle / entry["companion_files"][0])) != 0
    ):
        raise SystemExit(f"run.py: NCNN cannot load {entry['file']}")
    blobs = entry["ncnn_blobs"]

    def run(batch: np.ndarray) -> list[np.ndarray]:
        per_image = []
        for image in np.ascontiguousarray(batch, dtype=np.float32):
            with net.create_extractor() as extractor:
                extractor.input(blobs["input"], ncnn.Mat(image))
                per_image.append([np.array(extractor.extract(name)[1], dtype=np.float32) for name in blobs["outputs"]])
        return [np.stack(outputs) for outputs in zip(*per_image)]

    return run


# ---------------------------------------------------------------------------------------------
# preprocessing: the same integer arithmetic as visionpipe.preprocess


def preprocess(image: np.ndarray, input_hw: tuple[int, int], spec: dict) -> tuple[np.ndarray, tuple]:
    height, width = image.shape[:2]
    in_h, in_w = input_hw
    interpolation = INTERPOLATIONS[spec["interpolation"]]
    if spec["resize"] == "stretch":
        canvas = cv2.resize(image, (in_w, in_h), interpolation=interpolation)
        transform = (in_w / width, in_h / height, 0.0, 0.0, width, height)
    elif spec["resize"] == "letterbox":
        if in_w * height <= in_h * width:
            new_w, new_h = in_w, max(1, height * in_w // width)
        else:
            new_w, new_h = max(1, width * in_h // height), in_h
        left, top = (0, 0) if spec["anchor"] == "top_left" else ((in_w - new_w) // 2, (in_h - new_h) // 2)
        resized = (
            image
            if (new_w, new_h) == (width, height)
            else cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        )
        canvas = cv2.copyMakeBorder(
            resized,
            top,
            in_h - new_h - top,
            left,
            in_w - new_w - left,
            cv2.BORDER_CONSTANT,
            value=(spec["pad_value"],) * 3,
        )
        transform = (new_w / width, new_h / height, float(left), float(top), width, height)
    else:
        raise SystemExit(f"run.py: unsupported resize mode {spec['resize']!r}")
    if spec["color_order"] == "rgb":
        canvas = canvas[:, :, ::-1]
    tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)
    mean = np.asarray(spec["mean"], np.float32)
    std = np.asarray(spec["std"], np.float32)
    if spec["scale"] != 1.0:
        tensor *= np.float32(spec["scale"])
    if mean.any():
        tensor -= mean[:, None, None]
    if (std != 1).any():
        tensor /= std[:, None, None]
    return tensor, transform


def to_original(boxes: np.ndarray, transform: tuple) -> np.ndarray:
    sx, sy, ox, oy, width, height = transform
    scale = np.array([1 / sx, 1 / sy, 1 / sx, 1 / sy], dtype=boxes.dtype)
    offset = np.array([-ox / sx, -oy / sy, -ox / sx, -oy / sy], dtype=boxes.dtype)
    out = boxes * scale + offset
    clipped = np.empty_like(out)
    np.clip(out[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=clipped[:, 1::2])
    return clipped


# ---------------------------------------------------------------------------------------------
# decoding: one function per output family


def select_scores(scores: np.ndarray, t: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if t.get("classes") is not None:
        allowed = np.zeros(scores.shape[1], dtype=bool)
        allowed[[c for c in t["classes"] if 0 <= c < scores.shape[1]]] = True
        scores = np.where(allowed, scores, -np.inf)
    if t["multi_label"]:
        rows, cols = np.nonzero(scores > t["conf"])
        return rows, cols, scores[rows, cols]
    cols = scores.argmax(axis=1)
    best = np.take_along_axis(scores, cols[:, None], axis=1)[:, 0]
    rows = np.flatnonzero(best > t["conf"])
    return rows, cols[rows], best[rows]


def grid(input_hw: tuple[int, int], strides) -> tuple[np.ndarray, np.ndarray]:
    cells, cell_strides = [], []
    for stride in strides:
        h, w = math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)
        gy, gx = np.mgrid[0:h, 0:w]
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        cell_strides.append(np.full(h * w, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def decode_yolox(outputs, input_hw, options, t):
    pred = outputs[0][0]
    cells, strides = grid(input_hw, options.get("strides", (8, 16, 32)))
    live = np.flatnonzero(pred[:, 4] * pred[:, 5:].max(axis=1) > t["conf"])
    pred = pred[live]
    rows, class_ids, scores = select_scores(pred[:, 4:5] * pred[:, 5:], t)
    cell = live[rows]
    stride = strides[cell, None]
    centre = (pred[rows, 0:2] + cells[cell]) * stride
    half = np.exp(pred[rows, 2:4]) * stride / 2
    return np.concatenate([centre - half, centre + half], axis=1), scores, class_ids


def decode_nanodet(outputs, input_hw, options, t):
    strides = options.get("strides", (8, 16, 32))
    bins = options.get("reg_max", 7) + 1
    outs = [o[0] if o.ndim == 3 else o for o in outputs]  # some exports drop the batch axis
    by_cells: dict[int, dict[str, np.ndarray]] = {}
    for out in outs:
        by_cells.setdefault(out.shape[0], {})["boxes" if out.shape[1] == 4 * bins else "scores"] = out
    scores, dists, points, point_strides = [], [], [], []
    for stride in sorted(strides):
        h, w = math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)
        level = by_cells[h * w]
        scores.append(level["scores"])
        dists.append(level["boxes"])
        gy, gx = np.mgrid[0:h, 0:w]
        points.append(np.stack([gx.ravel(), gy.ravel()], axis=1) * stride + (stride - 1) / 2)
        point_strides.append(np.full(h * w, stride))
    score = np.concatenate(scores)
    dist = np.concatenate(dists)
    point = np.concatenate(points).astype(np.float32)
    point_stride = np.concatenate(point_strides).astype(np.float32)
    rows, class_ids, kept = select_scores(score, t)
    cells = np.unique(rows)
    logits = dist[cells].reshape(-1, 4, bins)
    logits = logits - logits.max(axis=2, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=2, keepdims=True)
    distance = (prob @ np.arange(bins, dtype=np.float32)) * point_stride[cells, None]
    corner = np.concatenate([point[cells], point[cells]], axis=1)
    boxes = corner + distance * np.array([-1, -1, 1, 1], np.float32)
    h, w = input_hw
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    return boxes[np.searchsorted(cells, rows)], kept, class_ids


def decode_fastestdet(outputs, input_hw, options, t):
    feature = outputs[0][0]
    channels, grid_h, grid_w = feature.shape
    cells = feature.reshape(channels, -1).T
    scores = (cells[:, 0:1] ** options.get("objectness_power", 0.6)) * (cells[:, 5:] ** options.get("class_power", 0.4))
    rows, class_ids, kept = select_scores(scores, t)
    box = cells[rows, 1:5]
    cx = (rows % grid_w + np.tanh(box[:, 0])) / grid_w
    cy = (rows // grid_w + np.tanh(box[:, 1])) / grid_h
    w = 1.0 / (1.0 + np.exp(-box[:, 2]))
    h = 1.0 / (1.0 + np.exp(-box[:, 3]))
    in_h, in_w = input_hw
    xyxy = np.stack([(cx - w / 2) * in_w, (cy - h / 2) * in_h, (cx + w / 2) * in_w, (cy + h / 2) * in_h], axis=1)
    return xyxy.astype(np.float32), kept.astype(np.float32), class_ids


def decode_yolov8(outputs, input_hw, options, t):
    pred = outputs[0][0].T
    rows, class_ids, scores = select_scores(pred[:, 4:], t)
    cx, cy, w, h = (pred[rows, i] for i in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), scores, class_ids


DECODERS = {"yolox": decode_yolox, "nanodet": decode_nanodet, "fastestdet": decode_fastestdet, "yolov8": decode_yolov8}


def decode(decoder: dict, outputs, input_hw, thresholds):
    family = decoder["family"]
    if family not in DECODERS:
        raise SystemExit(f"run.py: no decoder for family {family!r} (known: {', '.join(DECODERS)})")
    boxes, scores, class_ids = DECODERS[family](outputs, input_hw, decoder.get("options", {}), thresholds)
    return boxes, scores, class_ids.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# NMS: the textbook greedy loop (visit by descending score, ties in input order)


def nms(boxes, scores, iou, class_ids=None, top_k=None, max_det=None) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    ranked = boxes[order].astype(np.float64)
    classes = None if class_ids is None else class_ids[order]
    area = (ranked[:, 2] - ranked[:, 0]).clip(0) * (ranked[:, 3] - ranked[:, 1]).clip(0)
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        if max_det is not None and len(kept) >= max_det:
            break
        rest = np.arange(i + 1, len(order))
        if classes is not None:
            rest = rest[classes[rest] == classes[i]]
        rest = rest[~suppressed[rest]]
        if not len(rest):
            continue
        w = (np.minimum(ranked[i, 2], ranked[rest, 2]) - np.maximum(ranked[i, 0], ranked[rest, 0])).clip(0)
        h = (np.minimum(ranked[i, 3], ranked[rest, 3]) - np.maximum(ranked[i, 1], ranked[rest, 1])).clip(0)
        inter = w * h
        union = area[i] + area[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = np.where(union > 0, inter / union, 0.0)
        suppressed[rest[overlap > iou]] = True
    return order[np.asarray(kept, dtype=np.int64)]


# ---------------------------------------------------------------------------------------------
# checks and command line


def check_bundle(bundle: Path, manifest: dict) -> list[str]:
    """Problems found: changed files, and golden outputs out of tolerance (empty: all good)."""
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: does not match its sha256 (changed)")
    if problems:
        return problems
    golden = manifest["golden"]
    model = Model(bundle, manifest)
    got = model.forward(np.load(bundle / golden["input"]))
    want = np.load(bundle / golden["outputs"])
    for index, name in enumerate(golden["output_names"]):
        ref = want[name]
        out = got[index].reshape(ref.shape)
        if not np.allclose(out, ref, rtol=golden["rtol"], atol=golden["atol"]):
            problems.append(f"golden output {name}: max difference {float(np.abs(out - ref).max()):.3g}")
    return problems


def image_paths(sources: list[str]) -> list[Path]:
    paths = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Detect objects with this bundle's model.")
    parser.add_argument("images", nargs="*", help="image files or folders")
    parser.add_argument("--out", help="write JSON lines here instead of standard output")
    parser.add_argument("--conf", type=float, help="score threshold (default: the bundle's)")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: the runtime's default)")
    parser.add_argument("--check", action="store_true", help="verify checksums and the golden pair, then exit")
    args = parser.parse_args(argv)
    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    if args.check:
        problems = check_bundle(HERE, manifest)
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        print("bundle OK" if not problems else "bundle NOT OK", file=sys.stderr)
        return 1 if problems else 0
    if not args.images:
        parser.error("give images or folders (or --check)")
    model = Model(HERE, manifest, args.threads)
    names = manifest["decoder"]["class_names"]
    failed = 0
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext(sys.stdout) as sink:
        for path in image_paths(args.images):
            try:
                image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
            except OSError as exc:
                image, cause = None, str(exc)
            else:
                cause = "not a decodable image"
            if image is None:
                print(f"failed: {path}: {cause}", file=sys.stderr)
                failed += 1
                continue
            found = model.detect(image, args.conf)
            records = [
                {
                    "xyxy": [float(v) for v in box],
                    "confidence": float(c),
                    "class_id": int(k),
                    "class_name": names[int(k)],
                }
                for box, c, k in zip(found["xyxy"], found["confidence"], found["class_id"])
            ]
            sink.write(json.dumps({"image": str(path), "detections": records}) + "\n")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
