"""``visionpipe ensemble tune`` and ensemble spec files on the command line, on the shared assets.

The no-gain case is built so its answer is known without the code under test: an ensemble of a
model with itself fuses identical boxes, so no weight or fusion setting can beat that model alone.
"""

from __future__ import annotations

import json

import pytest
import yaml

from .helpers import describe

pytestmark = pytest.mark.real

GT = "coco/annotations/instances_val2017_dev64.json"
IMAGES = "coco/images/val2017"


def test_tune_says_plainly_when_nothing_beats_the_best_member(cli, asset, yolox_spec, tmp_path):
    photos = sorted(asset(IMAGES).glob("*.jpg"))[:8]
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(map(str, photos)) + "\n", encoding="utf-8")
    out = tmp_path / "ensemble.yaml"
    proc = cli(
        "ensemble", "tune", "-m", yolox_spec, "-m", yolox_spec,
        "--images", listing, "--annotations", asset(GT), "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    summary = json.loads(proc.stdout)
    assert summary["beats_best_member"] is False and summary["written"] is None
    assert "no setting beats the best member" in proc.stderr or "does not hold" in proc.stderr, proc.stderr
    assert not out.exists()
    assert summary["images"] == {"choose": 4, "confirm": 4}
    scores = list(summary["members"].values())
    assert scores[0] == scores[1]  # the same model twice
    assert "Traceback" not in proc.stderr


def test_tune_needs_two_models(cli, asset, yolox_spec, tmp_path):
    proc = cli("ensemble", "tune", "-m", yolox_spec, "--images", asset(IMAGES), "--annotations", asset(GT))
    assert proc.returncode == 1 and "at least two models" in proc.stderr, describe(proc)


def test_detect_and_eval_take_an_ensemble_spec_as_model(cli, asset, yolox_spec, tmp_path):
    spec = tmp_path / "pair.yaml"
    nanodet = tmp_path / "nanodet.yaml"
    nanodet.write_text(f"model: {asset('models/nanodet_m_320_coco.onnx')}\nfamily: nanodet\n", encoding="utf-8")
    spec.write_text(
        yaml.safe_dump(
            {
                "members": [{"model": str(yolox_spec), "weight": 3}, {"model": "nanodet.yaml", "weight": 1}],
                "fusion": {"method": "wbf", "iou": 0.7},
            }
        ),
        encoding="utf-8",
    )
    photo = sorted(asset(IMAGES).glob("*.jpg"))[0]
    proc = cli("detect", photo, "--model", spec, "--out", tmp_path / "out", "--format", "jsonl")
    assert proc.returncode == 0, describe(proc)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["model"] == "yolox_nano_416_coco+nanodet_m_320_coco"
    record = json.loads((tmp_path / "out" / "detections.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert record["error"] is None and record["detections"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("members:\n  - model: nanodet.yaml\n", encoding="utf-8")
    proc = cli("detect", photo, "--model", bad, "--out", tmp_path / "out2")
    assert proc.returncode == 1 and "invalid ensemble spec" in proc.stderr, describe(proc)
    assert "Traceback" not in proc.stderr

    # a former key name: one line naming the file, the old key and the new one; nothing written
    for name, text, old, new in [
        (
            "old_fusion.yaml",
            spec.read_text(encoding="utf-8").replace("iou:", "iou_threshold:"),
            "fusion.iou_threshold",
            "fusion.iou",
        ),
        (
            "old_model.yaml",
            f"model: {asset('models/nanodet_m_320_coco.onnx')}\nfamily: nanodet\nthresholds: {{score: 0.3}}\n",
            "thresholds.score",
            "thresholds.conf",
        ),
    ]:
        old_spec = tmp_path / name
        old_spec.write_text(text, encoding="utf-8")
        out = tmp_path / f"out_{name}"
        proc = cli("detect", photo, "--model", old_spec, "--out", out)
        assert proc.returncode == 1, describe(proc)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(old_spec) in lines[0] and f"'{old}' is now called '{new}'" in lines[0], describe(
            proc
        )
        assert not out.exists()
