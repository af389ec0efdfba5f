"""Model spec files: the smallest spec loads each asset model; paths, names and mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import Pipeline, SpecError, UnknownOutputLayoutError, VisionpipeError

NAMES = ("cat", "dog", "bird")


def tiny_yolov8(path, nc=3, **kwargs):
    """A YOLOv8-layout graph with one box (class 0, score 0.9) and one (class 1, score 0.4)."""
    values = np.zeros((4 + nc, 16), np.float32)
    values[:4, 0] = (100, 150, 40, 60)
    values[4 + 0, 0] = 0.9
    values[:4, 1] = (200, 150, 40, 60)
    values[4 + 1, 1] = 0.4
    return constant_model(path, values, **kwargs)


@pytest.fixture
def coco80(asset):
    lines = asset("coco/coco80.names").read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() for line in lines if line.strip())
    assert len(names) == 80
    return names


@pytest.mark.real
@pytest.mark.parametrize(
    ("model_file", "size"),
    [("yolox_nano_416_coco.onnx", 416), ("nanodet_m_320_coco.onnx", 320), ("fastestdet_352_coco.onnx", 352)],
)
def test_two_line_spec_loads_each_asset_model(asset, tmp_path, coco80, model_file, size):
    spec = tmp_path / "model.yaml"
    spec.write_text(f"model: {asset('models/' + model_file)}\nfamily: {_family(model_file)}\n")
    model = visionpipe.load_model(spec)
    assert model.family == _family(model_file)
    assert model.input_hw == (size, size)
    assert model.class_names == coco80
    assert model.decoder.num_classes == 80
    assert model.name == model_file.removesuffix(".onnx")


def _family(model_file: str) -> str:
    return model_file.split("_")[0]


def test_relative_model_path_resolves_against_spec_folder(tmp_path, monkeypatch):
    model_path = tiny_yolov8(tmp_path / "graphs" / "tiny.onnx")
    spec = tmp_path / "specs" / "tiny.yaml"
    spec.parent.mkdir()
    spec.write_text("model: ../graphs/tiny.onnx\nfamily: yolov8\nnames_file: names.txt\n")
    (spec.parent / "names.txt").write_text("cat\n\ndog\nbird\n")  # blank lines are skipped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = visionpipe.load_model(spec)
    assert model.backend.path.resolve() == model_path.resolve()
    assert model.class_names == NAMES
    assert model.family == "yolov8"


def test_spec_file_given_as_relative_path(tmp_path, monkeypatch):
    tiny_yolov8(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.yml").write_text("model: tiny.onnx\nfamily: yolov8\nclasses: [cat, dog, bird]\n")
    monkeypatch.chdir(tmp_path)
    assert visionpipe.load_model("tiny.yml").class_names == NAMES


def test_json_spec_with_thresholds(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps({"model": "tiny.onnx", "classes": list(NAMES), "thresholds": {"conf": 0.5}}))
    model = visionpipe.load_model(spec)
    assert model.params.conf == 0.5
    image = np.zeros((320, 320, 3), np.uint8)
    with Pipeline(model) as pipe:
        assert pipe(image).class_id.tolist() == [0]  # the 0.4 box is below the spec's 0.5
    with Pipeline(model, conf=0.3) as pipe:  # an argument overrides the spec
        assert sorted(pipe(image).class_id.tolist()) == [0, 1]


def test_spec_threshold_classes_by_name(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nclasses: [cat, dog, bird]\nthresholds: {conf: 0.1, classes: [dog]}\n")
    model = visionpipe.load_model(spec)
    assert model.params.classes == (1,)
    with Pipeline(model) as pipe:
        assert pipe(np.zeros((320, 320, 3), np.uint8)).class_id.tolist() == [1]


def test_sidecar_spec_beside_model_is_used(tmp_path):
    path = tiny_yolov8(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.yaml").write_text("model: tiny.onnx\nfamily: yolov8\nclasses: [cat, dog, bird]\n")
    assert visionpipe.load_model(path).class_names == NAMES


def test_spec_input_size_for_dynamic_model(tmp_path, monkeypatch):
    tiny_yolov8(tmp_path / "tiny.onnx", input_hw=None)
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\ninput_size: [256, 384]\n")
    model = visionpipe.load_model(spec)
    assert model.input_hw == (256, 384)
    shapes = []
    original = model.backend.forward
    monkeypatch.setattr(model.backend, "forward", lambda t: shapes.append(t.shape) or original(t))
    with Pipeline(model) as pipe:
        pipe(np.zeros((100, 100, 3), np.uint8))
    assert shapes == [(1, 3, 256, 384)]


def test_dynamic_model_without_size_defaults_to_640(tmp_path):
    path = tiny_yolov8(tmp_path / "tiny.onnx", input_hw=None)
    assert visionpipe.load_model(path).input_hw == (640, 640)


def test_ultralytics_metadata_configures_tiny_graph(tmp_path):
    meta = {"names": "{0: 'cat', 1: 'dog', 2: 'bird'}", "task": "detect", "imgsz": "[320, 320]", "end2end": "False"}
    path = tiny_yolov8(tmp_path / "tiny.onnx", input_hw=None, metadata=meta)
    model = visionpipe.load_model(path)
    assert (model.family, model.class_names, model.input_hw) == ("yolov8", NAMES, (320, 320))


def test_spec_classes_take_precedence_over_metadata_names(tmp_path):
    meta = {"names": "{0: 'a', 1: 'b', 2: 'c'}", "task": "detect", "imgsz": "[320, 320]"}
    path = tiny_yolov8(tmp_path / "tiny.onnx", input_hw=None, metadata=meta)
    model = visionpipe.load_model({"model": path, "classes": list(NAMES), "input_size": [256, 256]})
    assert model.family == "yolov8"
    assert model.class_names == NAMES
    assert model.input_hw == (256, 256)


def test_ultralytics_end2end_metadata_selects_end2end(tmp_path):
    meta = {"names": "{0: 'cat', 1: 'dog'}", "task": "detect", "imgsz": "[320, 320]", "end2end": "True"}
    path = constant_model(tmp_path / "e2e.onnx", np.zeros((8, 6), np.float32), input_hw=None, metadata=meta)
    model = visionpipe.load_model(path)
    assert model.family == "end2end"
    assert model.class_names == ("cat", "dog")


def test_ultralytics_non_detect_task_is_rejected(tmp_path):
    meta = {"names": "{0: 'cat', 1: 'dog', 2: 'bird'}", "task": "segment", "imgsz": "[320, 320]"}
    path = tiny_yolov8(tmp_path / "tiny.onnx", metadata=meta)
    with pytest.raises(SpecError, match="segment"):
        visionpipe.load_model(path)


# -- mistakes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "model: tiny.onnx\nfamily: yolov8\nfamliy: yolox\n",  # unknown top-level key
        "model: tiny.onnx\nfamily: yolov8\nthresholds: {scroe: 0.5}\n",  # unknown nested key
        "model: tiny.onnx\nfamily: yolov8\npreprocess: {resise: stretch}\n",
        "family: yolov8\n",  # no model
        "model: tiny.onnx\nthresholds: {conf: 1.5}\n",  # out of range
    ],
)
def test_invalid_spec_content_raises_spec_error(tmp_path, text):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError):
        visionpipe.load_model(spec)


def test_unknown_key_is_named_in_the_message(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "bad.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\nfamliy: yolox\n")
    with pytest.raises(SpecError, match="famliy"):
        visionpipe.load_model(spec)


@pytest.mark.parametrize("text", ["model: [unclosed\n", "model: a\n  bad: indent\n x: y\n", "- just\n- a list\n", ""])
def test_bad_yaml_raises_spec_error(tmp_path, text):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError):
        visionpipe.load_model(spec)


def test_bad_json_raises_spec_error(tmp_path):
    spec = tmp_path / "bad.json"
    spec.write_text('{"model": "tiny.onnx",')
    with pytest.raises(SpecError, match="JSON"):
        visionpipe.load_model(spec)


def test_missing_spec_file_raises_spec_error(tmp_path):
    with pytest.raises(SpecError):
        visionpipe.load_model(tmp_path / "absent.yaml")


def test_class_names_count_mismatch(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\nclasses: [cat, dog]\n")
    with pytest.raises(SpecError, match="class"):
        visionpipe.load_model(spec)


def test_names_file_count_mismatch(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\nfish\n")
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: names.txt\n")
    with pytest.raises(SpecError):
        visionpipe.load_model(spec)


def test_classes_and_names_file_together(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\nclasses: [cat, dog, bird]\nnames_file: names.txt\n")
    with pytest.raises(SpecError, match="names_file"):
        visionpipe.load_model(spec)


def test_missing_names_file(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: no_such_names.txt\n")
    with pytest.raises(SpecError, match="no_such_names.txt"):
        visionpipe.load_model(spec)


def test_input_size_conflicting_with_fixed_model_input(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx", input_hw=(320, 320))
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model: tiny.onnx\nfamily: yolov8\ninput_size: 416\n")
    with pytest.raises(SpecError):
        visionpipe.load_model(spec)


def test_unknown_class_name_in_pipeline(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    model = visionpipe.load_model({"model": tmp_path / "tiny.onnx", "classes": list(NAMES)})
    with pytest.raises(SpecError, match="zebra"):
        Pipeline(model, classes=["zebra"])


def test_unknown_decoder_option_is_a_typed_error_naming_it(tmp_path):
    tiny_yolov8(tmp_path / "tiny.onnx")
    with pytest.raises(VisionpipeError, match="stridez"):
        visionpipe.load_model({"model": tmp_path / "tiny.onnx", "family": "yolov8", "decoder": {"stridez": [8]}})


def test_raw_anchors_not_matching_output_rows(tmp_path):
    # 16 rows cannot be 3 anchors x (40x40 + 20x20 + 10x10) cells
    path = constant_model(tmp_path / "v5.onnx", np.zeros((16, 8), np.float32))
    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    with pytest.raises(UnknownOutputLayoutError):
        visionpipe.load_model({"model": path, "family": "yolov5", "decoder": {"anchors": anchors}})
