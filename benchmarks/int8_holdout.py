"""Does the accuracy-aware int8 loop's choice hold on photos it never saw?

For each model: the loop (``quantize_accuracy_aware``) calibrates on the first 64 train2017 photos,
chooses on one half of the 64 val2017 photos (tolerance ``--max-map-drop`` less each attempt's
bootstrap margin) and confirms on the other half; the chosen file is then scored on the other 64
train2017 photos, seen neither by the calibration nor by the choice. Each drop is given with its
bootstrap standard error over images. Then fp32 and int8 are timed on preprocessed input
at batch 1, interleaved (``--rounds``), as a ratio measured in the same run.

    python benchmarks/int8_holdout.py --out bench-int8 [--models yolox,nanodet] [--max-measurements 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ASSETS, header

MODELS = {"yolox": "yolox_nano_416_coco.onnx", "nanodet": "nanodet_m_320_coco.onnx"}
VAL_GT = ASSETS / "coco/annotations/instances_val2017_dev64.json"
TRAIN_GT = ASSETS / "coco/annotations/instances_train2017.json"


def latency_ratio(fp32: Path, int8: Path, rounds: int, repeats: int = 30) -> tuple[float, float]:
    """Median batch-1 latency (ms) of each model on one preprocessed input, interleaved rounds."""
    import numpy as np
    import onnxruntime as ort

    sessions = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one core each: the shared machine's other core stays free
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = sessions["fp32"].get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in first.shape]
    tensor = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for name, session in sessions.items():
            feed = {session.get_inputs()[0].name: tensor}
            for _ in range(5):
                session.run(None, feed)
            start = time.perf_counter()
            for _ in range(repeats):
                session.run(None, feed)
            times[name].append((time.perf_counter() - start) / repeats * 1000)
    return statistics.median(times["fp32"]), statistics.median(times["int8"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="yolox,nanodet")
    parser.add_argument("--max-map-drop", type=float, default=0.01)
    parser.add_argument("--max-size-ratio", type=float, default=0.35)
    parser.add_argument("--max-measurements", type=int, default=24)
    parser.add_argument("--max-attempts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from visionpipe.evaluation import image_ids_of, load_annotations
    from visionpipe.models.loader import load_model
    from visionpipe.optimize.graph import evaluate_model, with_weights
    from visionpipe.optimize.margin import ResampledScores
    from visionpipe.optimize.quantize import quantize_accuracy_aware

    train = [str(p) for p in sorted((ASSETS / "coco/images/train2017").glob("*.jpg"))]
    val = [str(p) for p in sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))]
    calibration, holdout = train[:64], train[64:]
    print(header("int8 choice held out", {**vars(args), "calibration": "train2017[:64]", "holdout": "train2017[64:]"}))
    print()
    print("| model | calibration | 16-bit nodes | size x | drop ± s.e. (+ margin), choosing half (32 val) "
          "| drop ± s.e., confirming half (32 val) | drop ± s.e., 64 train photos | b1 ms fp32 / int8 (x) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for family in args.models.split(","):
        source = ASSETS / "models" / MODELS[family]
        model = load_model(source, family=family)
        report = quantize_accuracy_aware(
            model,
            calibration,
            val,
            VAL_GT,
            args.out / f"{source.stem}_int8.onnx",
            max_map_drop=args.max_map_drop,
            max_size_ratio=args.max_size_ratio,
            max_measurements=args.max_measurements,
            max_attempts=args.max_attempts,
            seed=args.seed,
            progress=lambda message, f=family: print(f"  {f} int8: {message}", file=sys.stderr, flush=True),
        )
        train_gt = load_annotations(TRAIN_GT)
        fp32_scored = evaluate_model(model, holdout, train_gt, 0.01, 8)
        int8_scored = evaluate_model(with_weights(model, report.path), holdout, train_gt, 0.01, 8)
        fp32_train, int8_train = fp32_scored.map_50_95, int8_scored.map_50_95
        train_reference = ResampledScores(fp32_scored.detections, train_gt, image_ids_of(holdout, train_gt))
        train_spread = train_reference.drop_spread(int8_scored.detections)
        fp32_ms, int8_ms = latency_ratio(source, report.path, args.rounds)
        row = {
            "model": family,
            "summary": report.summary(),
            "calibration": report.calibration,
            "kept_16bit": len(report.excluded_nodes),
            "size_ratio": report.size_ratio,
            "drop_choose": report.map_drop,
            "se_choose": report.spread,
            "margin": report.margin,
            "met_tolerance": report.met_tolerance,
            "drop_confirm": report.confirm_map_drop,
            "se_confirm": report.confirm_spread,
            "drop_train": fp32_train - int8_train,
            "se_train": train_spread,
            "fp32_train": fp32_train,
            "int8_train": int8_train,
            "fp32_ms": fp32_ms,
            "int8_ms": int8_ms,
            "attempts": [(a.reason, round(a.map_50_95, 4), round(a.margin, 4)) for a in report.attempts],
        }
        rows.append(row)
        print(
            f"| {family} | {row['calibration']} | {row['kept_16bit']} | {row['size_ratio']:.2f} | "
            f"{row['drop_choose']:+.4f} ± {report.spread:.4f} (+ {report.margin:.4f}) | "
            f"{row['drop_confirm']:+.4f} ± {report.confirm_spread:.4f} | {row['drop_train']:+.4f} ± {train_spread:.4f} | "
            f"{fp32_ms:.1f} / {int8_ms:.1f} ({fp32_ms / int8_ms:.2f}x) |",
            flush=True,
        )
    (args.out / "int8_holdout.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
