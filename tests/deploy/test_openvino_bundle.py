"""An OpenVINO IR candidate: built, measured through visionpipe's OpenVINO runtime, bundled, verified,
and run by the bundle's run.py (OpenVINO path) with visionpipe's detections."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visionpipe.deploy.deploy import deploy_model
from visionpipe.deploy.targets import Target
from visionpipe.deploy.verify import verify_bundle

from .conftest import GT, SMALL_MEASURE, manifest_of, val_photos
from .test_bundle import compare_with_pipeline

pytestmark = pytest.mark.real

SERVER = Target(
    name="test_openvino_server",
    max_size_mb=50,
    max_latency_ms=5000,
    max_memory_mb=2048,
    max_accuracy_loss=0.01,
    threads=1,
    formats=("openvino",),
    precisions=("fp32",),
    providers=("cpu", "openvino"),
    platform="amd64",
)


def test_openvino_candidate_is_measured_bundled_and_run(asset, tmp_path):
    result = deploy_model(
        asset("models/nanodet_m_320_coco.onnx"),
        SERVER,
        calibration_images=[],
        validation_images=val_photos(asset, 4),
        annotations=asset(GT),
        out_dir=tmp_path / "out",
        measure_settings=SMALL_MEASURE,
    )
    rows = {a.candidate.name: a for a in result.plan.assessments}
    assert "format onnx not allowed" in rows["fp32.onnx"].verdict
    ir = rows["fp32.openvino"]
    assert ir.measurement.error is None, ir.verdict
    # OpenVINO runs the same network: its mAP is ONNX Runtime's within the runtimes' rounding
    assert ir.accuracy_loss == pytest.approx(0.0, abs=0.01)
    assert result.bundle is not None, result.plan.to_markdown()
    folder = result.bundle.folder
    manifest = manifest_of(folder)
    assert manifest["model"]["format"] == "openvino" and manifest["model"]["companion_files"][0].endswith(".bin")
    assert any(line.startswith("openvino>=") for line in manifest["requirements"])
    assert verify_bundle(folder, latency_runs=3).ok
    photos = val_photos(asset, 4)
    out = tmp_path / "run.jsonl"
    proc = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), *map(str, photos), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    compare_with_pipeline(folder, photos, out, minimum=4)
