"""`visionpipe detect --shard-size`, `merge` and `eval --detections` from the shell, on the real
val2017 photos: stored detections score exactly as `visionpipe eval` running the model scores them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .helpers import describe


def visionpipe(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "visionpipe", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.real
def test_sharded_detect_merge_and_eval_score_like_eval(tmp_path, asset):
    images = asset("coco/images/val2017")
    gt = asset("coco/annotations/instances_val2017_dev64.json")
    job = tmp_path / "job"
    ran = visionpipe("detect", images, "--out", job, "--shard-size", 16, "--workers", 2, "--conf", 0.01, "-q")
    assert ran.returncode == 0, describe(ran)
    assert "64/64 images in 4 shards" in ran.stderr
    merged = visionpipe("merge", job, "-f", "coco-results", "-f", "jsonl", "-f", "coco", "--annotations", gt)
    assert merged.returncode == 0, describe(merged)

    scored = {}
    for name in ("detections.json", "detections.jsonl", "coco.json"):
        result = visionpipe("eval", "--detections", job / "merged" / name, "--annotations", gt)
        assert result.returncode == 0, describe(result)
        scored[name] = json.loads(result.stdout)
    reference = visionpipe("eval", "--images", images, "--annotations", gt, "--conf", 0.01, "-q")
    assert reference.returncode == 0, describe(reference)
    expected = json.loads(reference.stdout)
    assert expected["map_50_95"] > 0.3  # YOLOX-Nano on these photos: a real score, not an empty one
    compared = [k for k in expected if k not in ("model", "annotations", "conf")]
    assert len(compared) > 10
    for name, got in scored.items():
        for key in compared:
            assert got[key] == pytest.approx(expected[key], abs=1e-9), (name, key)


def test_job_usage_errors_are_one_line(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("a.jpg\n")
    ran = visionpipe("detect", listing, "--out", tmp_path / "job", "--shard-size", 1, "--save-images")
    assert ran.returncode == 1 and "--save-images" in ran.stderr and "Traceback" not in ran.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    ran = visionpipe("detect", listing, "--out", tmp_path / "busy", "--resume")
    assert ran.returncode == 1 and ran.stderr.startswith("error: ") and "not empty" in ran.stderr
    ran = visionpipe("merge", tmp_path / "busy")
    assert ran.returncode == 1 and "holds no job" in ran.stderr and "Traceback" not in ran.stderr
    ran = visionpipe("eval", "--annotations", listing)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
