"""YOLOX-Nano and NanoDet-m planned for every built-in target (and a 1 MiB target nothing meets).

For each model and target this runs the planner as ``visionpipe deploy`` does (32 train2017
calibration photos; the 64 val2017 photos split alternately: 32 tune the accuracy-aware int8 build,
32 confirm every candidate), then checks each bundle the way a user would: ``bundle verify`` on this
machine (checksums, golden pair, latency against the target) and the bundle's mAP through
``Pipeline("bundle/")`` on the confirmation photos, as ``visionpipe eval`` scores it, against the
manifest's. Builds and measurements are cached per model, so targets share what they can.

    python benchmarks/deploy_targets.py --out bench-deploy [--repeats 20] [--int8-measurements 12]

Latency here is a host proxy (this machine, shared with other work): it ranks candidates; the
device's own ``bundle verify`` gives the real figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ASSETS, header

MODELS = {"YOLOX-Nano": "yolox_nano_416_coco.onnx", "NanoDet-m": "nanodet_m_320_coco.onnx"}
TARGETS = ("mobile", "embedded", "edge_server", "tiny_1mb")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-deploy"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--int8-measurements", type=int, default=12)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = parser.parse_args()

    from visionpipe.deploy.deploy import deploy_model
    from visionpipe.deploy.targets import BUILTIN_TARGETS
    from visionpipe.deploy.verify import verify_bundle

    print(
        header(
            "Deployment plans for the built-in targets",
            {"repeats": args.repeats, "calibration": args.calibration, "int8_measurements": args.int8_measurements},
        )
    )
    gt = ASSETS / "coco/annotations/instances_val2017_dev64.json"
    val = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    calibration = sorted((ASSETS / "coco/images/train2017").glob("*.jpg"))[: args.calibration]
    targets = dict(BUILTIN_TARGETS)
    targets["tiny_1mb"] = BUILTIN_TARGETS["mobile"].model_copy(update={"name": "tiny_1mb", "max_size_mb": 1.0})

    rows, plans = [], {}
    for label in args.models:
        for name in args.targets:
            out = args.out / f"{Path(MODELS[label]).stem}-{name}"
            result = deploy_model(
                ASSETS / "models" / MODELS[label],
                targets[name],
                calibration_images=calibration,
                validation_images=val,
                annotations=gt,
                out_dir=out,
                cache_dir=args.out / f"cache-{Path(MODELS[label]).stem}",
                measure_settings={"repeats": args.repeats},
                int8_options={"max_measurements": args.int8_measurements},
                progress=lambda message, label=label, name=name: print(
                    f"  [{label} {name}] {message}", file=sys.stderr
                ),
            )
            plans[(label, name)] = result.plan.to_markdown()
            if result.bundle is None:
                rows.append(f"| {label} | {name} | exit 2 — {result.plan.nearest_miss_text()} | | | | | | |")
                continue
            m = result.plan.chosen.measurement
            report = verify_bundle(result.bundle.folder, latency_runs=args.repeats)
            eval_map = _bundle_map(result.bundle.folder, out / "confirmation_images.txt", gt)
            rows.append(
                f"| {label} | {name} | {result.plan.chosen.candidate.name} | {m.size_mb:.2f} | {m.p90_ms:.1f} | "
                f"{m.map_50_95:.4f} | {result.plan.chosen.accuracy_loss:+.4f} | "
                f"{report.latency.get('p90_ms', float('nan')):.1f} ({'ok' if report.ok else 'FAIL'}) | {eval_map:.4f} |"
            )
    print()
    print("| model | target | chosen | size MiB | plan p90 ms | plan mAP | loss | verify p90 ms | eval mAP on bundle |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    for (label, name), text in plans.items():
        print(f"\n## {label} → {name}\n\n{text}")
    (args.out / "plans.json").write_text(json.dumps({f"{k[0]} {k[1]}": v for k, v in plans.items()}, indent=1))
    return 0


def _bundle_map(bundle: Path, image_list: Path, gt: Path) -> float:
    """mAP@.5:.95 of the bundle through Pipeline("bundle/"), scored as `visionpipe eval` does (conf 0.01)."""
    from visionpipe import Pipeline
    from visionpipe.evaluation import evaluate_coco

    photos = [line for line in image_list.read_text().splitlines() if line]
    with Pipeline(bundle, conf=0.01) as pipe:
        results = pipe.run(photos)
    return evaluate_coco(results, gt, pipe.class_names).map_50_95


if __name__ == "__main__":
    sys.exit(main())
