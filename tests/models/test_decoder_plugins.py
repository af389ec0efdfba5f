"""Decoder families register themselves; plugins come by import path, registration or entry point.

The README's plugin, evaluated with ``visionpipe eval``, is tested in tests/cli/test_decoder_plugin_cli.py.
"""

from __future__ import annotations

import re
import sys
import textwrap
import warnings

import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe.errors import SpecError, UnknownOutputLayoutError
from visionpipe.models import decoders
from visionpipe.models.decoders import (
    DECODERS,
    FAMILY_ALIASES,
    Candidates,
    Decoder,
    available_decoders,
    canonical_family,
    register_decoder,
)


@pytest.fixture
def clean_registry():
    """Restore the registry after a test that registers families."""
    saved, aliases, loaded = dict(DECODERS), dict(FAMILY_ALIASES), decoders._entry_points_loaded
    yield
    DECODERS.clear()
    DECODERS.update(saved)
    FAMILY_ALIASES.clear()
    FAMILY_ALIASES.update(aliases)
    decoders._entry_points_loaded = loaded


def test_every_builtin_family_registered_itself_with_its_preset_and_aliases():
    families = available_decoders()
    assert {"yolox", "nanodet", "fastestdet", "yolov8", "yolov5", "end2end", "dbnet"} <= set(families)
    assert canonical_family("YOLO11") == "yolov8" and canonical_family("ppocr") == "dbnet"
    assert families["yolox"].preset.params.iou == 0.65
    assert families["dbnet"].point_keys == ("polygon",)
    assert families["yolox"].point_keys == ()


def write_plugin(folder, module: str, source: str) -> None:
    (folder / f"{module}.py").write_text(textwrap.dedent(source))


KEYPOINT_PLUGIN = """
    import numpy as np
    from visionpipe.models.decoders import Candidates, DecodeParams, Decoder, FamilyPreset, LayoutMismatch
    from visionpipe.preprocess import PreprocessConfig


    class CornerDecoder(Decoder):
        '''(B, N, 5): x1, y1, x2, y2, score in input pixels; each box's corners as "keypoints".'''

        family = "corners"
        aliases = ("corner-points",)
        summary = "(B, N, 5) boxes with their corners as keypoints"
        preset = FamilyPreset(PreprocessConfig(resize="stretch"), DecodeParams(conf=0.5), ("thing",))
        point_keys = ("keypoints",)
        applies_nms = False

        def _bind(self, outputs):
            if len(outputs) != 1 or outputs[0].shape[-1] != 5:
                raise LayoutMismatch("corners expects (B, N, 5)")
            return 1

        def decode(self, outputs, params):
            found = []
            for rows in outputs[0]:
                rows = rows[rows[:, 4] > params.conf]
                corners = np.stack([rows[:, 0:2], rows[:, 2:4]], axis=1)
                found.append(Candidates(rows[:, :4], rows[:, 4], np.zeros(len(rows), np.int64), {"keypoints": corners}))
            return found
"""


def test_a_decoder_declares_which_data_hold_points_and_they_are_mapped_back(tmp_path, monkeypatch):
    write_plugin(tmp_path, "corner_plugin", KEYPOINT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    boxes = np.array([[8, 16, 32, 48, 0.9], [0, 0, 4, 4, 0.1]], np.float32)
    path = constant_model(tmp_path / "boxes.onnx", boxes, input_hw=(64, 64))
    spec = {"model": path, "decoder": {"class": "corner_plugin:CornerDecoder"}}
    with visionpipe.Pipeline(spec) as pipe:
        assert pipe.model.family == "corners" and pipe.model.class_names == ("thing",)
        detections = pipe(np.zeros((128, 256, 3), np.uint8))  # stretch: x * 4, y * 2
    np.testing.assert_allclose(detections.xyxy, [[32, 32, 128, 96]])
    np.testing.assert_allclose(detections.data["keypoints"], [[[32, 32], [128, 96]]])


def test_register_decoder_by_call_or_decorator_and_refuses_a_taken_name(tmp_path, monkeypatch, clean_registry):
    write_plugin(tmp_path, "corner_plugin2", KEYPOINT_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    from corner_plugin2 import CornerDecoder

    register_decoder(CornerDecoder)
    assert canonical_family("Corner-Points") == "corners" and DECODERS["corners"] is CornerDecoder
    boxes = np.array([[8, 16, 32, 48, 0.9]], np.float32)
    model = visionpipe.load_model({"model": constant_model(tmp_path / "b.onnx", boxes), "family": "corner-points"})
    assert type(model.decoder) is CornerDecoder

    with pytest.raises(SpecError, match="'yolox' is taken by .*YoloxDecoder"):

        @register_decoder
        class Impostor(CornerDecoder):
            family = "yolox"

    assert DECODERS["yolox"].__name__ == "YoloxDecoder"
    with pytest.raises(SpecError, match="not a visionpipe Decoder"):
        register_decoder(int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("class_path", "message"),
    [
        ("no_such_module_xyz:Thing", "cannot import decoder module 'no_such_module_xyz'"),
        ("json:JSONDecoder", "'json:JSONDecoder' is not a visionpipe Decoder subclass"),
        ("justaname", "must look like 'package.module:ClassName'"),
    ],
)
def test_a_bad_decoder_class_in_a_spec_is_a_clear_spec_error(tmp_path, class_path, message):
    path = constant_model(tmp_path / "m.onnx", np.zeros((3, 5), np.float32))
    with pytest.raises(SpecError, match=re.escape(message)):
        visionpipe.load_model({"model": path, "decoder": {"class": class_path}})


def test_an_unknown_family_names_the_known_ones(tmp_path):
    path = constant_model(tmp_path / "m.onnx", np.zeros((3, 5), np.float32))
    with pytest.raises(UnknownOutputLayoutError, match="unknown decoder family 'nope'.*known families: .*yolox"):
        visionpipe.load_model({"model": path, "family": "nope"})


def test_installed_plugins_are_found_by_entry_point_and_a_broken_one_is_skipped(tmp_path, monkeypatch, clean_registry):
    write_plugin(tmp_path, "corner_plugin3", KEYPOINT_PLUGIN)
    dist = tmp_path / "corner_plugin3-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: corner-plugin3\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[visionpipe.decoders]\ncorners = corner_plugin3:CornerDecoder\nbroken = corner_plugin3:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    decoders._entry_points_loaded = False
    DECODERS.pop("corners", None)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert canonical_family("corners") == "corners"
    assert DECODERS["corners"].__module__ == "corner_plugin3"
    assert any("'broken'" in str(w.message) and "skipped" in str(w.message) for w in caught)
    boxes = np.array([[8, 16, 32, 48, 0.9]], np.float32)
    model = visionpipe.load_model({"model": constant_model(tmp_path / "b.onnx", boxes), "family": "corners"})
    assert model.family == "corners"
    assert "corner_plugin3" in sys.modules


def test_decoder_candidates_type_is_the_public_one():
    assert issubclass(DECODERS["yolox"], Decoder) and Candidates.empty().xyxy.shape == (0, 4)


def test_one_name_per_setting_and_the_former_names_refused(tmp_path):
    """``conf``/``iou`` in the spec, the keyword and the params; the former ``score`` key is refused
    with its new name and the file, the former keywords are not keywords any more."""
    from visionpipe.models.decoders import DecodeParams
    from visionpipe.models.spec import ModelSpec

    params = DecodeParams(conf=0.3, iou=0.6)
    assert (params.conf, params.iou) == (0.3, 0.6)
    with pytest.raises(TypeError):
        DecodeParams(score_threshold=0.3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        DecodeParams(iou_threshold=0.6)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="conf must be in"):
        DecodeParams(conf=1.5)
    spec = ModelSpec.from_dict({"model": "m.onnx", "thresholds": {"conf": 0.4, "iou": 0.5}})
    assert spec.thresholds.conf == 0.4
    with pytest.raises(SpecError, match=r"^model spec: 'thresholds.score' is now called 'thresholds.conf'; rename it$"):
        ModelSpec.from_dict({"model": "m.onnx", "thresholds": {"score": 0.4}})
    path = constant_model(tmp_path / "m.onnx", np.zeros((84, 100), np.float32), input_hw=(64, 64))
    old = tmp_path / "old.yaml"
    old.write_text(f"model: {path.name}\nfamily: yolov8\nthresholds:\n  score: 0.4\n", encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        visionpipe.load_model(old)
    assert str(caught.value) == f"spec {old}: 'thresholds.score' is now called 'thresholds.conf'; rename it"
    model = visionpipe.load_model({"model": path, "family": "yolov8", "thresholds": {"conf": 0.4}})
    assert model.params.conf == 0.4
    with visionpipe.Pipeline(model, conf=0.2) as pipe:
        assert pipe.params.conf == 0.2
