"""Speed of visionpipe's box fusion vs the reference package ``ensemble-boxes``, same inputs.

Two workloads: (1) the real detections of YOLOX-Nano and NanoDet-m-320 (score >= 0.01, up to 300
boxes each) on the 64 COCO val2017 photos, fused image by image, and all 64 in one ``fuse_batch``
call (the reference has no batch form, so it runs per image in both rows); (2) a synthetic case
of 5 models x 3,000 boxes over 80 classes. Before timing, every method's output is checked to agree with the
reference to 1e-5 (boxes, scores, labels). Needs ``pip install ensemble-boxes``.

    python benchmarks/fusion_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings

import numpy as np

from _common import ASSETS, header, timed_rounds
from visionpipe import Pipeline
from visionpipe.postprocess.fusion import fuse_batch, nms_fusion, non_maximum_weighted, weighted_boxes_fusion

IOU = 0.55


def real_case() -> list[tuple[list, list, list]]:
    files = sorted((ASSETS / "coco" / "images" / "val2017").glob("*.jpg"))
    members = [
        {"model": ASSETS / "models" / "yolox_nano_416_coco.onnx", "family": "yolox"},
        {"model": ASSETS / "models" / "nanodet_m_320_coco.onnx", "family": "nanodet"},
    ]
    with Pipeline(members, conf=0.01) as pipe:
        results = pipe.run(files)
    cases = []
    for r in results:
        h, w = r.image_size
        scale = np.array([w, h, w, h], np.float64)
        dets = [r.members[m.name] for m in pipe.members]
        cases.append(
            (
                [d.xyxy / scale for d in dets],
                [d.confidence.astype(np.float64) for d in dets],
                [d.class_id for d in dets],
            )
        )
    return cases


def synthetic_case(seed: int = 0) -> list[tuple[list, list, list]]:
    rng = np.random.default_rng(seed)
    boxes, scores, labels = [], [], []
    for _ in range(5):
        corner = rng.random((3000, 2)) * 0.9
        size = rng.random((3000, 2)) * 0.1 + 0.005
        boxes.append(np.concatenate([corner, corner + size], axis=1))
        scores.append(rng.random(3000))
        labels.append(rng.integers(0, 80, 3000))
    return [(boxes, scores, labels)]


def agree(ours, ref) -> bool:
    def canon(boxes, scores, labels):
        order = np.lexsort((boxes[:, 1], boxes[:, 0], scores, labels))
        return boxes[order], scores[order], labels[order]

    a, b = canon(ours.boxes, ours.scores, ours.labels.astype(float)), canon(*(np.asarray(x, float) for x in ref))
    return len(a[0]) == len(b[0]) and all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b))


def main() -> None:
    from ensemble_boxes import nms as ref_nms
    from ensemble_boxes import non_maximum_weighted as ref_nmw
    from ensemble_boxes import weighted_boxes_fusion as ref_wbf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    methods = {
        "WBF": (
            lambda b, s, l: weighted_boxes_fusion(b, s, l, iou=IOU),
            lambda b, s, l: ref_wbf(b, s, l, iou_thr=IOU),
        ),
        "NMS": (lambda b, s, l: nms_fusion(b, s, l, iou=IOU), lambda b, s, l: ref_nms(b, s, l, iou_thr=IOU)),
        "NMW": (
            lambda b, s, l: non_maximum_weighted(b, s, l, iou=IOU),
            lambda b, s, l: ref_nmw(b, s, l, iou_thr=IOU),
        ),
    }
    workloads = {"real: YOLOX+NanoDet, 64 photos": real_case(), "synthetic: 5 models x 3,000 boxes": synthetic_case()}
    print(header("box fusion — visionpipe vs ensemble-boxes", {"rounds": args.rounds, "iou": IOU}))
    print()
    print("| workload | method | identical output | ensemble-boxes ms | visionpipe ms | speed-up |")
    print("|---|---|---|---|---|---|")
    quiet = contextlib.redirect_stdout(io.StringIO())  # the reference prints warnings per call
    batched = {
        "WBF": lambda cases: fuse_batch(weighted_boxes_fusion, cases, iou=IOU),
        "NMS": lambda cases: fuse_batch(nms_fusion, cases, iou=IOU),
    }
    for workload, cases in workloads.items():
        for method, (ours, ref) in methods.items():
            # default arguments bind this iteration's values (the lambdas run within it anyway)
            rows = [("per image", lambda ours=ours, cases=cases: [ours(*c) for c in cases])]
            if method in batched and len(cases) > 1:
                rows.append(("one batch", lambda method=method, cases=cases: batched[method](cases)))
            for label, run_ours in rows:
                with quiet, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ok = all(agree(o, ref(*c)) for o, c in zip(run_ours(), cases))
                    ref(*cases[0])  # compile the reference's numba kernels before timing
                    rates = timed_rounds(
                        {
                            "ref": lambda ref=ref, cases=cases: [ref(*c) for c in cases] and 1,
                            "ours": lambda run_ours=run_ours: run_ours() and 1,
                        },
                        args.rounds,
                    )
                ref_ms, our_ms = 1000 / rates["ref"], 1000 / rates["ours"]
                name = f"{workload} ({label})" if len(cases) > 1 else workload
                print(
                    f"| {name} | {method} | {'yes' if ok else 'NO'} | {ref_ms:.1f} | {our_ms:.1f} | {ref_ms / our_ms:.1f}x |"
                )


if __name__ == "__main__":
    main()
