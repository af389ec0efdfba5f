"""COCO mAP of YOLOX-Nano + NanoDet-m-320 fused by each method, next to each model alone.

Scored by pycocotools on the 64 val2017 photos of the test assets (and, with --split train, on the
128 train2017 photos the pipeline's default fusion settings were chosen on). Members run with score
threshold 0.01, up to 300 detections each.

    python benchmarks/ensemble_accuracy.py [--split val|train]
"""

from __future__ import annotations

import argparse
import dataclasses

from _common import ASSETS, header
from visionpipe import Pipeline
from visionpipe.evaluation import evaluate_coco
from visionpipe.pipeline import FusionConfig

SPLITS = {
    "val": ("val2017", "instances_val2017_dev64.json"),
    "train": ("train2017", "instances_train2017.json"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="val")
    args = parser.parse_args()
    folder, annotations = SPLITS[args.split]
    photos = sorted((ASSETS / "coco" / "images" / folder).glob("*.jpg"))
    gt = ASSETS / "coco" / "annotations" / annotations
    members = [
        {"model": ASSETS / "models" / "yolox_nano_416_coco.onnx", "family": "yolox"},
        {"model": ASSETS / "models" / "nanodet_m_320_coco.onnx", "family": "nanodet"},
    ]
    defaults = FusionConfig()
    print(
        header(
            f"ensemble accuracy — {len(photos)} COCO {folder} photos",
            {"member conf": 0.01, "fusion defaults": defaults},
        )
    )
    print()
    print("| detections | mAP@.5:.95 | mAP@.5 |")
    print("|---|---|---|")
    with Pipeline(members, conf=0.01) as pipe:
        results = pipe.run(photos)  # members run once; every fusion below reuses their detections
        for member in pipe.members:
            alone = [dataclasses.replace(r, detections=r.members[member.name]) for r in results]
            scored = evaluate_coco(alone, gt, pipe.class_names)
            print(f"| {member.name} alone | {scored.map_50_95:.4f} | {scored.map_50:.4f} |")
        configs = {
            "WBF (defaults)": defaults,
            "WBF (ensemble-boxes defaults: IoU 0.55, no skip)": FusionConfig(iou=0.55, conf=0.0),
            "NMS across models": dataclasses.replace(defaults, method="nms"),
            "soft-NMS (gaussian)": dataclasses.replace(defaults, method="soft-nms"),
            "NMW": dataclasses.replace(defaults, method="nmw"),
            "vote (2 of 2 models)": dataclasses.replace(defaults, method="vote"),
        }
        for label, config in configs.items():
            pipe.fusion = config
            fused = [dataclasses.replace(r, detections=pipe.fuse(r.members, r.image_size)) for r in results]
            scored = evaluate_coco(fused, gt, pipe.class_names)
            print(f"| {label} | {scored.map_50_95:.4f} | {scored.map_50:.4f} |")


if __name__ == "__main__":
    main()
