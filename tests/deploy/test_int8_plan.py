"""The planner's int8 path on a real model, kept small: 2 calibration photos, 4 validation photos."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from visionpipe.deploy.deploy import deploy_model
from visionpipe.deploy.targets import Target
from visionpipe.io.images import decode_image
from visionpipe.models.loader import load_model
from visionpipe.preprocess import preprocess

from .conftest import GT, SMALL_MEASURE, val_photos

pytestmark = pytest.mark.real

BOARD = Target(
    name="test_int8_board",
    max_size_mb=5,
    max_latency_ms=5000,
    max_memory_mb=1024,
    max_accuracy_loss=0.05,
    threads=1,
    formats=("ort",),
    precisions=("int8",),
    providers=("cpu",),
    platform="arm",
)


@pytest.fixture(scope="module")
def int8_plan(asset, tmp_path_factory):
    return deploy_model(
        asset("models/nanodet_m_320_coco.onnx"),
        BOARD,
        calibration_images=sorted(asset("coco/images/train2017").glob("*.jpg"))[:2],
        validation_images=val_photos(asset, 4),
        annotations=asset(GT),
        out_dir=tmp_path_factory.mktemp("int8") / "out",
        measure_settings=SMALL_MEASURE,
        int8_options={"max_measurements": 2, "max_attempts": 3, "initial_segments": 2},
    )


def test_int8_candidates_are_built_measured_and_float_is_only_the_reference(int8_plan):
    plan = int8_plan.plan
    rows = {a.candidate.name: a for a in plan.assessments}
    assert {"fp32.onnx", "int8-aware.onnx", "int8-aware.ort", "int8-all8.onnx", "int8-all8.ort"} <= set(rows)
    assert "precision fp32 not allowed" in rows["fp32.onnx"].verdict
    assert plan.baseline_map == rows["fp32.onnx"].measurement.map_50_95
    for name in ("int8-aware.ort", "int8-all8.ort"):
        m = rows[name].measurement
        assert m.error is None and m.size_bytes < rows["fp32.onnx"].measurement.size_bytes / 2
        assert rows[name].accuracy_loss == pytest.approx(plan.baseline_map - m.map_50_95)
    if plan.chosen is not None:
        assert plan.chosen.candidate.precision == "int8" and plan.chosen.candidate.format == "ort"
        assert int8_plan.bundle is not None
        manifest_build = int8_plan.bundle.manifest["provenance"]
        assert manifest_build["calibration_images"] == 2 and len(manifest_build["calibration_set_sha256"]) == 64
    else:
        assert int8_plan.exit_code == 2 and plan.nearest_miss is not None


def test_int8_ort_file_matches_its_onnx_file(int8_plan, asset):
    """For ARM the converter lets QDQ pairs become int8 kernels; outputs stay within int8 rounding."""
    rows = {a.candidate.name: a for a in int8_plan.plan.assessments}
    onnx_file, ort_file = rows["int8-all8.onnx"].candidate.path, rows["int8-all8.ort"].candidate.path
    model = load_model(asset("models/nanodet_m_320_coco.onnx"))
    tensor, _ = preprocess(decode_image(val_photos(asset, 1)[0]), model.input_hw, model.preprocess)

    def run(path, disabled=()):
        session = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled)
        )
        return session.run(None, {session.get_inputs()[0].name: tensor[None]})

    for got, want in zip(run(ort_file), run(onnx_file, ["NchwcTransformer"])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
