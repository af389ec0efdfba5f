"""A real bundle per model, planned once per session with small settings (few photos, few timed runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionpipe.deploy.targets import Target

GT = "coco/annotations/instances_val2017_dev64.json"
VAL_IMAGES = "coco/images/val2017"
# float only, so no int8 build: the planner's int8 path has its own test
TEST_TARGETS = {
    # ORT format only, naming NNAPI: the plan must reject the ONNX file and keep the portable variant
    "yolox_nano_416_coco.onnx": Target(
        name="test_phone",
        max_size_mb=10,
        max_latency_ms=5000,
        max_memory_mb=1024,
        max_accuracy_loss=0.02,
        threads=1,
        formats=("ort",),
        precisions=("fp32",),
        providers=("cpu", "nnapi"),
    ),
    "nanodet_m_320_coco.onnx": Target(
        name="test_board",
        max_size_mb=10,
        max_latency_ms=5000,
        max_memory_mb=1024,
        max_accuracy_loss=0.02,
        threads=1,
        formats=("onnx",),
        precisions=("fp32",),
        providers=("cpu",),
        platform="amd64",
    ),
}
SMALL_MEASURE = {"warmup": 1, "repeats": 3, "timing_images": 2}


def val_photos(asset, count: int) -> list[Path]:
    return sorted(asset(VAL_IMAGES).glob("*.jpg"))[:count]


@pytest.fixture(scope="session", params=sorted(TEST_TARGETS))
def planned(request, asset, tmp_path_factory):
    """(DeployResult, out folder, model file) for each test model, 4 validation photos (2 tune, 2 confirm)."""
    from visionpipe.deploy.deploy import deploy_model

    model = asset(f"models/{request.param}")
    out = tmp_path_factory.mktemp("deploy") / "out"
    result = deploy_model(
        model,
        TEST_TARGETS[request.param],
        calibration_images=[],
        validation_images=val_photos(asset, 4),
        annotations=asset(GT),
        out_dir=out,
        measure_settings=SMALL_MEASURE,
    )
    assert result.bundle is not None, result.plan.to_markdown()
    return result, out, model


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
