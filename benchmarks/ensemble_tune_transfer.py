"""Do tuned ensemble settings beat the best member on photos the tuning never saw?

YOLOX-Nano + NanoDet-m-320: ``tune_ensemble`` (what ``visionpipe ensemble tune`` runs) on the 64
val2017 photos (chosen on 32, confirmed on the other 32), its choice then scored on the 128
train2017 photos; and the reverse (tuned on train2017, 64 + 64, scored on val2017). pycocotools
mAP@.5:.95; members at score 0.01, 300 detections each.

    python benchmarks/ensemble_tune_transfer.py [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from _common import ASSETS, header
from visionpipe import Pipeline
from visionpipe.ensemble_tune import tune_ensemble
from visionpipe.evaluation import evaluate_coco, load_annotations

SPLITS = {
    "val2017": ASSETS / "coco/annotations/instances_val2017_dev64.json",
    "train2017": ASSETS / "coco/annotations/instances_train2017.json",
}
MEMBERS = [
    {"model": ASSETS / "models/yolox_nano_416_coco.onnx", "family": "yolox"},
    {"model": ASSETS / "models/nanodet_m_320_coco.onnx", "family": "nanodet"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(header("ensemble tuning, checked on the other photo set", vars(args)))
    reports = {}
    for split, gt in SPLITS.items():
        photos = sorted((ASSETS / "coco/images" / split).glob("*.jpg"))
        specs = [_spec_file(m) for m in MEMBERS]
        reports[split] = tune_ensemble(specs, photos, load_annotations(gt), seed=args.seed)
        print(split, json.dumps(reports[split].summary()), flush=True)
    print()
    print(
        "| tuned on | chosen | choosing half: best member / ensemble | confirming half | other set | other set: best member / ensemble |"
    )
    print("|---|---|---|---|---|---|")
    for split, other in (("val2017", "train2017"), ("train2017", "val2017")):
        report = reports[split]
        photos = sorted((ASSETS / "coco/images" / other).glob("*.jpg"))
        with Pipeline([_spec_file(m) for m in MEMBERS], conf=0.01, max_det=300, fusion=report.chosen) as pipe:
            results = pipe.run(photos)
        members = {
            m.name: evaluate_coco(
                [dataclasses.replace(r, detections=r.members[m.name]) for r in results], SPLITS[other], pipe.class_names
            ).map_50_95
            for m in pipe.members
        }
        fused = evaluate_coco(results, SPLITS[other], pipe.class_names).map_50_95
        best = max(members.values())
        chosen = report.summary()["chosen"]
        label = f"{chosen['method']} {':'.join(f'{w:g}' for w in chosen['weights'])}, IoU {chosen['iou']:g}, {chosen['conf_type']}"
        bm = report.best_member
        print(
            f"| {split} | {label} | {report.member_map[bm['choose']]['choose']:.4f} / {report.ensemble_map['choose']:.4f} "
            f"| {report.member_map[bm['confirm']]['confirm']:.4f} / {report.ensemble_map['confirm']:.4f} "
            f"({report.gain['confirm']:+.4f}) | {other} | {best:.4f} / {fused:.4f} ({fused - best:+.4f}) |",
            flush=True,
        )


def _spec_file(member: dict) -> str:
    """A spec file for a member (tune_ensemble takes what --model takes)."""
    import tempfile
    from pathlib import Path

    path = Path(tempfile.gettempdir()) / f"visionpipe-bench-{member['family']}.yaml"
    path.write_text(f"model: {member['model']}\nfamily: {member['family']}\n", encoding="utf-8")
    return str(path)


if __name__ == "__main__":
    main()
