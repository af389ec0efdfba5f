"""NCNN candidates: built with pnnx, measured through visionpipe's NCNN runtime, bundled, verified,
refused when tampered with, and run by the bundle's run.py (NCNN path) with visionpipe's detections."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visionpipe import Pipeline
from visionpipe.deploy.deploy import deploy_model
from visionpipe.deploy.targets import Target
from visionpipe.deploy.verify import verify_bundle
from visionpipe.errors import BundleIntegrityError

from .conftest import GT, SMALL_MEASURE, manifest_of, val_photos
from .test_bundle import compare_with_pipeline

pytestmark = pytest.mark.real

PHONE = Target(
    name="test_ncnn_phone",
    max_size_mb=3,  # the fp32 files (3.6 MiB) are over it: the fp16-weight NCNN file (1.8 MiB) is not
    max_latency_ms=5000,
    max_memory_mb=2048,
    max_accuracy_loss=0.05,
    threads=1,
    formats=("ncnn",),
    precisions=("fp32", "fp16"),
    providers=("cpu",),
    platform="arm",
)


@pytest.fixture(scope="module")
def ncnn_plan(asset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ncnn") / "out"
    result = deploy_model(
        asset("models/nanodet_m_320_coco.onnx"),
        PHONE,
        calibration_images=[],
        validation_images=val_photos(asset, 4),
        annotations=asset(GT),
        out_dir=out,
        measure_settings=SMALL_MEASURE,
    )
    return result, out


def test_ncnn_candidates_are_measured_on_the_ncnn_runtime(ncnn_plan):
    result, _ = ncnn_plan
    rows = {a.candidate.name: a for a in result.plan.assessments}
    assert {"fp32.ncnn", "fp16.ncnn"} <= set(rows), sorted(rows)
    fp32 = rows["fp32.ncnn"]
    assert fp32.measurement.error is None, fp32.verdict
    # the same network on another runtime: ONNX Runtime's mAP on the confirmation photos, exactly
    # to the rounding of two runtimes (0.3172 on all 64 photos, both runtimes)
    assert fp32.measurement.map_50_95 == pytest.approx(rows["fp32.onnx"].measurement.map_50_95, abs=0.002)
    assert "format onnx not allowed" in rows["fp32.onnx"].verdict  # measured: the loss baseline
    assert "size" in fp32.verdict  # 3.6 MiB over the 3 MiB limit
    half = rows["fp16.ncnn"]
    assert half.measurement.error is None, half.verdict
    assert half.measurement.size_bytes < 0.55 * fp32.measurement.size_bytes
    assert result.plan.chosen is half, result.plan.to_markdown()


def test_an_ncnn_bundle_verifies_refuses_tampering_and_runs_standalone(ncnn_plan, asset, tmp_path):
    result, _ = ncnn_plan
    assert result.bundle is not None, result.plan.to_markdown()
    folder = result.bundle.folder
    manifest = manifest_of(folder)
    model = manifest["model"]
    assert model["format"] == "ncnn"
    assert model["file"].endswith(".ncnn.param") and model["companion_files"][0].endswith(".ncnn.bin")
    assert model["weights_precision"] == "fp16" and model["inference_precision"] == "fp32"
    assert "Convolution" in model["required_layers"]
    assert any(line.startswith("ncnn>=") for line in manifest["requirements"])
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
    check = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stderr

    weights = folder / model["companion_files"][0]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    report = verify_bundle(folder, check_latency=False)
    assert not report.ok and model["companion_files"][0] in " ".join(f for c in report.checks for f in c.files)
    with pytest.raises(BundleIntegrityError, match=r"ncnn\.bin"):
        Pipeline(folder)
