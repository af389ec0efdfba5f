"""Ensemble spec files: members, weights and fusion settings in one file, accepted wherever a model
is. The fused output of ``Pipeline("ensemble.yaml")`` must equal that of the same ensemble given in
code (whose fusion tests/test_ensemble.py checks against hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests.test_ensemble import A_CLASSES, A_PLANTED, B_CLASSES, B_PLANTED, end2end_graph, frame, yolov8_graph
from visionpipe import Pipeline, SpecError
from visionpipe.models.ensemble_spec import EnsembleSpec, is_ensemble_file
from visionpipe.models.loader import load_model
from visionpipe.pipeline import FusionConfig


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two member specs and their models in one folder, referred to by relative paths."""
    root = tmp_path_factory.mktemp("ensemble_spec")
    yolov8_graph(root / "a.onnx", A_PLANTED, A_CLASSES, (64, 64), (0.5, 0.25))
    end2end_graph(root / "b.onnx", B_PLANTED, B_CLASSES, (32, 32), (0.25, 0.125))
    for name, family, classes in (("a", "yolov8", A_CLASSES), ("b", "end2end", B_CLASSES)):
        spec = {"model": f"{name}.onnx", "family": family, "classes": classes, "preprocess": {"resize": "stretch"}}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return root


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def detections(source, **kwargs):
    with Pipeline(source, **kwargs) as pipe:
        result = pipe.run([frame()])[0]
    assert result.ok, result.error
    return pipe, result.detections


SETTINGS = {"method": "wbf", "iou": 0.6, "conf": 0.0, "conf_type": "max"}


def test_spec_file_equals_the_same_ensemble_in_code(folder):
    spec = write(
        folder / "ensemble.yaml",
        {"members": [{"model": "a.yaml", "weight": 3}, {"model": "b.yaml", "weight": 1}], "fusion": SETTINGS},
    )
    assert is_ensemble_file(spec) and not is_ensemble_file(folder / "a.yaml")
    pipe, from_file = detections(spec)
    assert pipe.is_ensemble and [m.name for m in pipe.members] == ["a", "b"]
    assert pipe.fusion == FusionConfig(weights=(3.0, 1.0), **SETTINGS)
    _, in_code = detections(
        [str(folder / "a.yaml"), str(folder / "b.yaml")], fusion=FusionConfig(weights=(3, 1), **SETTINGS)
    )
    assert len(from_file) == len(in_code) > 0
    np.testing.assert_array_equal(from_file.xyxy, in_code.xyxy)
    np.testing.assert_array_equal(from_file.confidence, in_code.confidence)
    np.testing.assert_array_equal(from_file.class_id, in_code.class_id)
    # weights matter here: equal weights give another fused dog score
    _, equal = detections([str(folder / "a.yaml"), str(folder / "b.yaml")], fusion=FusionConfig(**SETTINGS))
    assert not np.array_equal(np.sort(equal.confidence), np.sort(from_file.confidence))


def test_arguments_override_the_spec_and_json_works(folder):
    spec = folder / "ensemble.json"
    spec.write_text(
        '{"members": [{"model": "a.yaml", "weight": 3}, {"model": "b.yaml"}], "fusion": {"iou": 0.6}}',
        encoding="utf-8",
    )
    with Pipeline(str(spec), weights=[1, 2], fusion="nms") as pipe:
        assert pipe.fusion.weights == (1.0, 2.0) and pipe.fusion.method.value == "nms"
        assert pipe.fusion.iou == 0.6  # from the file, not overridden
    with Pipeline(str(spec), fusion_iou=0.8) as pipe:
        assert pipe.fusion.weights == (3.0, 1.0) and pipe.fusion.iou == 0.8


def test_yaml_round_trip(folder):
    spec = EnsembleSpec.from_file(
        write(
            folder / "round.yaml",
            {"name": "pair", "members": [{"model": "a.yaml", "weight": 2.5}, {"model": "b.yaml"}]},
        )
    )
    again = EnsembleSpec.from_dict(yaml.safe_load(spec.to_yaml()))
    assert again == spec and again.weights == (2.5, 1.0) and again.name == "pair"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"members": [{"model": "a.yaml"}]}, "at least 2"),
        ({"members": [{"model": "a.yaml"}, {"model": "b.yaml"}], "fusion": {"iou": 2}}, "fusion.iou"),
        ({"members": [{"model": "a.yaml"}, {"model": "b.yaml"}], "fusion": {"iou_thr": 0.5}}, "fusion.iou_thr"),
        ({"members": [{"model": "a.yaml", "weight": 0}, {"model": "b.yaml", "weight": 0}]}, "weight above 0"),
        ({"members": [{"model": "a.yaml", "weight": -1}, {"model": "b.yaml"}]}, "members.0.weight"),
    ],
)
def test_bad_spec_is_one_clear_error(folder, data, says):
    with pytest.raises(SpecError, match=says):
        Pipeline(write(folder / "bad.yaml", data))


@pytest.mark.parametrize(("old", "new"), [("iou_threshold", "iou"), ("skip_box_threshold", "conf")])
def test_former_fusion_keys_are_refused_with_their_new_names(folder, old, new):
    """One name per setting: a file with ensemble-boxes' names is refused, naming the file, the key
    it uses and the key to write (never read silently, never ignored)."""
    path = write(folder / "old.yaml", {"members": [{"model": "a.yaml"}, {"model": "b.yaml"}], "fusion": {old: 0.6}})
    with pytest.raises(SpecError) as caught:
        Pipeline(path)
    message = str(caught.value)
    assert message == f"ensemble spec {path}: 'fusion.{old}' is now called 'fusion.{new}'; rename it"
    with pytest.raises(SpecError, match=f"'fusion.{old}' is now called 'fusion.{new}'"):
        EnsembleSpec.from_dict({"members": [{"model": "a.yaml"}, {"model": "b.yaml"}], "fusion": {old: 0.6}})


def test_a_single_model_loader_refuses_an_ensemble_plainly(folder):
    spec = write(folder / "pair.yaml", {"members": [{"model": "a.yaml"}, {"model": "b.yaml"}]})
    with pytest.raises(SpecError, match="describes an ensemble"):
        load_model(spec)
