"""``visionpipe models inspect`` on the asset models and on files that are not models.

Expected shapes, names and families are copied from the shared assets' MANIFEST.md, not from the
tool's output.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from .helpers import describe

# model file -> what the MANIFEST says about it
MANIFEST = {
    "yolox_nano_416_coco.onnx": {
        "family": "yolox",
        "inputs": {"images": [1, 3, 416, 416]},
        "outputs": {"output": [1, 3549, 85]},
        "dynamic_batch": False,
    },
    "nanodet_m_320_coco.onnx": {
        "family": "nanodet",
        "inputs": {None: [1, 3, 320, 320]},
        # "the output names of this file do not match their contents": compare shapes only,
        # class scores [N,80] and distributions [N,32] for N = 1600, 400, 100
        "outputs": {None: [[n, c] for c in (80, 32) for n in (1600, 400, 100)]},
        "dynamic_batch": False,
    },
    "fastestdet_352_coco.onnx": {
        "family": "fastestdet",
        "inputs": {"input.1": [1, 3, 352, 352]},
        "outputs": {None: [1, 85, 22, 22]},
        "dynamic_batch": False,
    },
    "yolov8n_random_dynamic.onnx": {
        "family": "yolov8",
        "inputs": {"images": ["batch", 3, "height", "width"]},
        "outputs": {"output0": ["batch", 84, "anchors"]},
        "dynamic_batch": True,
    },
}

pytestmark = pytest.mark.real


def _expected_tensors(spec: dict) -> list[tuple]:
    ((name, shapes),) = spec.items()
    if shapes and isinstance(shapes[0], list):
        return sorted((None, tuple(map(str, s))) for s in shapes)
    return [(name, tuple(map(str, shapes)))]


def _found_tensors(tensors: list[dict], with_names: bool) -> list[tuple]:
    return sorted((t["name"] if with_names else None, tuple(map(str, t["shape"]))) for t in tensors)


@pytest.mark.parametrize("model_file", sorted(MANIFEST))
def test_inspect_json_agrees_with_manifest(cli, asset, model_file):
    expected = MANIFEST[model_file]
    proc = cli("models", "inspect", asset(f"models/{model_file}"), "--json")
    assert proc.returncode == 0, describe(proc)
    info = json.loads(proc.stdout)
    assert info["family"] == expected["family"]
    assert info["dynamic_batch"] is expected["dynamic_batch"]
    assert info["classes"] == 80  # MANIFEST: every model outputs the 80 COCO classes
    for key in ("inputs", "outputs"):
        named = next(iter(expected[key])) is not None
        assert _found_tensors(info[key], named) == _expected_tensors(expected[key]), (key, info[key])
    assert all(t["dtype"] == "float32" for t in info["inputs"])  # MANIFEST: float32 inputs


def test_nanodet_output_shapes_are_the_manifests_multiset(cli, asset):
    """Six tensors, matched by shape: each (N, 80) and (N, 32) once."""
    info = json.loads(cli("models", "inspect", asset("models/nanodet_m_320_coco.onnx"), "--json").stdout)
    assert Counter(tuple(t["shape"]) for t in info["outputs"]) == Counter(
        (n, c) for c in (80, 32) for n in (1600, 400, 100)
    )


def test_yolov8_metadata_is_shown(cli, asset):
    """MANIFEST: the Ultralytics export carries metadata_props such as names, stride, imgsz, task."""
    info = json.loads(cli("models", "inspect", asset("models/yolov8n_random_dynamic.onnx"), "--json").stdout)
    assert {"names", "stride", "imgsz", "task"} <= set(info["metadata"])
    assert info["metadata"]["task"] == "detect"


@pytest.mark.parametrize("model_file", sorted(MANIFEST))
def test_inspect_text_mode_names_the_family(cli, asset, model_file):
    proc = cli("models", "inspect", asset(f"models/{model_file}"))
    assert proc.returncode == 0, describe(proc)
    family_lines = [line for line in proc.stdout.splitlines() if "family" in line]
    assert any(MANIFEST[model_file]["family"] in line for line in family_lines), proc.stdout
    dynamic = [line for line in proc.stdout.splitlines() if "dynamic batch" in line]
    assert dynamic, proc.stdout
    word = "yes" if MANIFEST[model_file]["dynamic_batch"] else "no"
    assert word in dynamic[0].replace("dynamic batch", ""), dynamic[0]


@pytest.fixture
def not_onnx_files(asset, tmp_path):
    text_model = tmp_path / "model.onnx"
    text_model.write_text("this is a text file pretending to be a model\n", encoding="utf-8")
    photo = tmp_path / "photo.jpg"
    shutil.copy(asset("images/text/french.jpg"), photo)
    return {"text named model.onnx": text_model, "JPEG photo": photo}


@pytest.mark.parametrize("which", ["text named model.onnx", "JPEG photo"])
def test_inspect_rejects_a_file_that_is_not_onnx_in_one_line(cli, not_onnx_files, which):
    path = not_onnx_files[which]
    proc = cli("models", "inspect", path)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message:\n{describe(proc)}"
    assert path.name in lines[0]
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("which", ["text named model.onnx", "JPEG photo"])
def test_inspect_with_debug_shows_the_traceback(cli, not_onnx_files, which):
    proc = cli("--debug", "models", "inspect", not_onnx_files[which])
    assert proc.returncode != 0, describe(proc)
    assert "Traceback (most recent call last)" in proc.stderr, describe(proc)
