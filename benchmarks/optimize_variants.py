"""Optimized variants of YOLOX-Nano and NanoDet-m side by side: size, latency, throughput, mAP.

For each model this writes dynamic int8, static int8 (accuracy-aware, 32 train2017 calibration
photos; and everything 8-bit for comparison), fp16 and 30 %-pruned variants, then benchmarks them
with the original, each in its own process, on the 64 val2017 photos
(`visionpipe.optimize.benchmark`); the original runs twice, as baseline and as a noise control. The static int8 loop
validates either on the 64 val photos themselves (``--validate-on val``, the `visionpipe optimize
--validate` workflow) or on 96 held-out train2017 photos (``--validate-on train``), so the val
figure is then an honest check on images the choice never saw. A second table times
``yolov8n_random_dynamic.onnx`` (random weights: speed and format only) in fp32 and int8.

    python benchmarks/optimize_variants.py --out bench-optimize [--validate-on train] [--max-size-ratio 0.35]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ASSETS, header

MODELS = {"yolox": "yolox_nano_416_coco.onnx", "nanodet": "nanodet_m_320_coco.onnx"}


def variants(family: str, out: Path, args) -> tuple[list[Path], list[str], dict]:
    from visionpipe.models.loader import load_model
    from visionpipe.optimize.fp16 import convert_fp16
    from visionpipe.optimize.prune import prune_magnitude
    from visionpipe.optimize.quantize import (
        quantize_accuracy_aware,
        quantize_dynamic_int8,
        quantize_static_int8,
        write_sidecar_spec,
    )

    source = ASSETS / "models" / MODELS[family]
    model = load_model(source, family=family)
    train = sorted((ASSETS / "coco/images/train2017").glob("*.jpg"))
    val = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    if args.validate_on == "val":
        check_images, check_gt = val, ASSETS / "coco/annotations/instances_val2017_dev64.json"
    else:
        check_images, check_gt = train[32:128], ASSETS / "coco/annotations/instances_train2017.json"
    stem = source.stem
    dynamic = quantize_dynamic_int8(source, out / f"{stem}_int8_dynamic.onnx")
    write_sidecar_spec(model, dynamic)
    report = quantize_accuracy_aware(
        model,
        train[:32],
        check_images,
        check_gt,
        out / f"{stem}_int8.onnx",
        max_map_drop=0.01,
        max_size_ratio=args.max_size_ratio,
        max_attempts=args.max_attempts,
        progress=lambda message: print(f"  {family} int8: {message}", file=sys.stderr),
    )
    # the everything-8-bit model, calibrated the way the loop's first step found better
    plain = max((a for a in report.attempts if a.excluded_count == 0), key=lambda a: a.map_50_95)
    all_8bit = quantize_static_int8(
        model, train[:32], out / f"{stem}_int8_all8bit.onnx", moving_average=plain.moving_average
    )
    fp16 = convert_fp16(model, out / f"{stem}_fp16.onnx")
    pruned = prune_magnitude(model, out / f"{stem}_pruned30.onnx", 0.3)
    details = {
        "int8": {
            "validated_on": args.validate_on,
            "summary": report.summary(),
            "met": report.met_tolerance,
            "excluded_nodes": report.excluded_nodes,
            "attempts": [(a.reason, round(a.map_50_95, 4), a.size_bytes) for a in report.attempts],
        },
        "fp16": {"blocked": fp16.blocked_op_types, "notes": fp16.notes},
        "pruned": {"sparsity": pruned.sparsity},
    }
    # the source a second time: the spread between the two fp32 rows is the machine's noise
    paths = [source, dynamic, report.path, all_8bit.path, fp16.path, pruned.path, source]
    names = [
        f"{family} fp32",
        f"{family} int8 dynamic",
        f"{family} int8 static, accuracy-aware",
        f"{family} int8 static, all 8-bit",
        f"{family} fp16",
        f"{family} pruned 30%",
        f"{family} fp32 again (control)",
    ]
    return paths, names, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-optimize"))
    parser.add_argument("--validate-on", choices=("val", "train"), default="val")
    parser.add_argument("--max-size-ratio", type=float, default=0.35)
    parser.add_argument("--max-attempts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved benchmark passes (median-p50 pass reported)")
    parser.add_argument("--models", default="yolox,nanodet")
    parser.add_argument("--skip-yolov8", action="store_true")
    args = parser.parse_args()

    from visionpipe.optimize.benchmark import BenchmarkConfig, benchmark_models
    from visionpipe.optimize.quantize import quantize_dynamic_int8, quantize_static_int8

    print(header("optimized variants", vars(args)))
    val = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    config = BenchmarkConfig(
        images=[str(p) for p in val],
        annotations=str(ASSETS / "coco/annotations/instances_val2017_dev64.json"),
        batch_sizes=(1, 8),
        repeats=args.repeats,
        rounds=args.rounds,
    )
    details = {}
    for family in args.models.split(","):
        out = args.out / family
        out.mkdir(parents=True, exist_ok=True)
        paths, names, details[family] = variants(family, out, args)
        report = benchmark_models(paths, config, names=names)
        report.write(out)
        print(f"\n## {family}\n\n{report.to_markdown()}\n")
        print(json.dumps(details[family]["int8"], indent=1))

    if not args.skip_yolov8:
        from visionpipe.models.loader import load_model

        source = ASSETS / "models/yolov8n_random_dynamic.onnx"
        out = args.out / "yolov8n"
        out.mkdir(parents=True, exist_ok=True)
        dynamic = quantize_dynamic_int8(source, out / "yolov8n_int8_dynamic.onnx")
        static = quantize_static_int8(
            load_model(source), sorted((ASSETS / "coco/images/train2017").glob("*.jpg"))[:32], out / "yolov8n_int8.onnx"
        )
        timing = BenchmarkConfig(
            images=[str(p) for p in val[:16]], batch_sizes=(1, 8), repeats=args.repeats, rounds=args.rounds
        )
        report = benchmark_models(
            [source, dynamic, static.path],
            timing,
            names=["yolov8n fp32", "yolov8n int8 dynamic", "yolov8n int8 static"],
        )
        report.write(out)
        print(f"\n## yolov8n_random_dynamic (random weights: speed only)\n\n{report.to_markdown()}\n")


if __name__ == "__main__":
    main()
