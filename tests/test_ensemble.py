"""Ensemble pipelines: several models on the same frames, their detections fused by class name.

The synthetic tests use tiny constant-output ONNX graphs (tests/models/onnx_graphs.py) whose boxes
are planted by the test, so every expected fused box and score is computed here, by hand, from the
planted boxes and the published formula of each fusion method (WBF: Solovyev et al. 2021, as the
reference package ``ensemble-boxes`` implements it). The real-model tests run YOLOX-Nano and
NanoDet-m from the shared assets.

Geometry of the synthetic frame: the image is 128 wide and 256 high; member ``a`` (YOLOv8 layout)
has a 64x64 input and member ``b`` (end-to-end layout) a 32x32 one, both resized by *stretching*, so
input = original * (0.5, 0.25) for ``a`` and * (0.25, 0.125) for ``b`` -- powers of two, exact in
float32, and the boxes are planted in original pixels and scaled to each member's input here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.models.onnx_graphs import constant_model
from visionpipe import Detections, Pipeline, SpecError
from visionpipe.pipeline import EnsembleError, FusionConfig
from visionpipe.postprocess.fusion import FusionError, FusionMethod

IMAGE_W, IMAGE_H = 128, 256
BOX_TOL = 1e-3  # px: float32 arithmetic on boxes of ~100 px
SCORE_TOL = 1e-5

A_CLASSES = ["cat", "dog"]
B_CLASSES = ["dog", "bird"]
ENSEMBLE_CLASSES = ("cat", "dog", "bird")  # ordered union: a's classes, then b's new ones

# Planted detections, in ORIGINAL image pixels: (x1, y1, x2, y2), class name, score.
A_CAT = ((8.0, 16.0, 40.0, 80.0), "cat", 0.8)
A_DOG = ((40.0, 80.0, 100.0, 200.0), "dog", 0.9)
A_LONE_DOG = ((100.0, 8.0, 124.0, 40.0), "dog", 0.5)  # only a sees it
B_DOG = ((44.0, 88.0, 104.0, 208.0), "dog", 0.6)  # overlaps A_DOG with IoU 6272 / 8128 = 0.772
# b's bird sits on top of a's dog. b's class id of "bird" (1) is a's id of "dog": a pipeline that
# matched classes by id instead of by name would fuse a's dog with b's bird.
B_BIRD = ((42.0, 84.0, 102.0, 204.0), "bird", 0.7)
A_PLANTED = [A_CAT, A_DOG, A_LONE_DOG]
B_PLANTED = [B_DOG, B_BIRD]


def iou(p, q) -> float:
    w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
    h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = w * h
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)


assert 0.7 < iou(A_DOG[0], B_DOG[0]) < 0.8  # fused at the default fusion IoU 0.7, not at 0.8
assert iou(A_LONE_DOG[0], B_DOG[0]) == 0.0


# -- graph builders ---------------------------------------------------------------------------------


def yolov8_graph(path: Path, planted, classes, input_hw, scale_xy, anchors: int = 8) -> Path:
    """A (4 + nc, anchors) YOLOv8-layout constant graph: one anchor per planted box, cx, cy, w, h in
    input pixels (original * scale), its class's score set, every other score 0."""
    values = np.zeros((4 + len(classes), anchors), np.float32)
    sx, sy = scale_xy
    for i, ((x1, y1, x2, y2), name, score) in enumerate(planted):
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
        values[:4, i] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        values[4 + classes.index(name), i] = score
    return constant_model(path, values, input_hw=input_hw)


def end2end_graph(path: Path, planted, classes, input_hw, scale_xy, rows: int = 8) -> Path:
    """A (rows, 6) end-to-end constant graph: x1, y1, x2, y2 (input pixels), score, class id."""
    values = np.zeros((rows, 6), np.float32)
    sx, sy = scale_xy
    for i, ((x1, y1, x2, y2), name, score) in enumerate(planted):
        values[i] = (x1 * sx, y1 * sy, x2 * sx, y2 * sy, score, classes.index(name))
    return constant_model(path, values, input_hw=input_hw)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ensemble_graphs")
    return {
        "a": yolov8_graph(folder / "a.onnx", A_PLANTED, A_CLASSES, (64, 64), (0.5, 0.25)),
        "b": end2end_graph(folder / "b.onnx", B_PLANTED, B_CLASSES, (32, 32), (0.25, 0.125)),
        # shares no class name with a
        "c": yolov8_graph(
            folder / "c.onnx", [((8.0, 16.0, 40.0, 80.0), "fish", 0.8)], ["fish", "bird"], (64, 64), (0.5, 0.25)
        ),
    }


@pytest.fixture(scope="module")
def spec_a(graphs) -> dict:
    return {"model": graphs["a"], "family": "yolov8", "classes": A_CLASSES, "preprocess": {"resize": "stretch"}}


@pytest.fixture(scope="module")
def spec_b(graphs) -> dict:
    return {"model": graphs["b"], "family": "end2end", "classes": B_CLASSES, "preprocess": {"resize": "stretch"}}


def frame(value: int = 0) -> np.ndarray:
    return np.full((IMAGE_H, IMAGE_W, 3), value, np.uint8)


def run_one(members, **kwargs):
    with Pipeline(members, **kwargs) as pipe:
        result = pipe.run([frame()])[0]
    assert result.ok, result.error
    assert result.member_errors == {}
    return result


def rows(dets: Detections) -> list[tuple[str, tuple[float, ...], float, dict]]:
    """(class name, box, score, data) of every detection, for readable comparisons."""
    return [
        (dets.class_names[c], tuple(float(v) for v in box), float(s), {k: int(v[i]) for k, v in dets.data.items()})
        for i, (box, s, c) in enumerate(zip(dets.xyxy, dets.confidence, dets.class_id))
    ]


def find(dets: Detections, name: str, near: tuple[float, ...], tol: float = 1.0) -> list[int]:
    """Positions of the detections of class ``name`` whose box is within ``tol`` px of ``near``."""
    cls = dets.class_names.index(name)
    close = np.abs(dets.xyxy - np.asarray(near, np.float32)).max(axis=1) <= tol
    return np.flatnonzero((dets.class_id == cls) & close).tolist()


def assert_one(
    dets: Detections, name: str, box, score: float, models: int | None = None, members: int | None = None
) -> None:
    hits = find(dets, name, box, tol=BOX_TOL)
    assert len(hits) == 1, f"expected one {name} at {box} with score {score}, got:\n{rows(dets)}"
    i = hits[0]
    assert float(dets.confidence[i]) == pytest.approx(score, abs=SCORE_TOL), rows(dets)
    if models is not None:
        assert int(dets.data["models"][i]) == models, rows(dets)
    if members is not None:
        assert int(dets.data["members"][i]) == members, rows(dets)


def wbf_box(pairs) -> tuple[float, ...]:
    """Score-weighted mean of boxes: pairs of (box, weighted score)."""
    total = sum(s for _, s in pairs)
    return tuple(sum(s * b[k] for b, s in pairs) / total for k in range(4))


# -- class lists, per-member detections -------------------------------------------------------------


def test_ensemble_class_list_is_the_ordered_union(spec_a, spec_b):
    with Pipeline([spec_a, spec_b]) as pipe:
        assert pipe.is_ensemble
        assert pipe.class_names == ENSEMBLE_CLASSES
        assert [m.name for m in pipe.members] == ["a", "b"]
    with Pipeline([spec_b, spec_a]) as pipe:
        assert pipe.class_names == ("dog", "bird", "cat")


def test_each_members_detections_are_in_its_own_class_list(spec_a, spec_b):
    result = run_one([spec_a, spec_b])
    assert set(result.members) == {"a", "b"}
    a, b = result.members["a"], result.members["b"]
    assert a.class_names == tuple(A_CLASSES)
    assert b.class_names == tuple(B_CLASSES)
    # every planted box, mapped back from each member's own input to the original image
    for dets, planted, classes in ((a, A_PLANTED, A_CLASSES), (b, B_PLANTED, B_CLASSES)):
        assert len(dets) == len(planted), rows(dets)
        for box, name, score in planted:
            hits = find(dets, name, box, tol=BOX_TOL)
            assert len(hits) == 1, (name, box, rows(dets))
            assert int(dets.class_id[hits[0]]) == classes.index(name)
            assert float(dets.confidence[hits[0]]) == pytest.approx(score, abs=SCORE_TOL)
    assert result.detections is not None and result.detections.class_names == ENSEMBLE_CLASSES


# -- WBF ----------------------------------------------------------------------------------------------


def test_wbf_fuses_a_shared_class_by_name_and_passes_single_member_classes_through(spec_a, spec_b):
    fused = run_one([spec_a, spec_b]).detections
    assert fused.class_names == ENSEMBLE_CLASSES
    assert set(fused.data) == {"models", "members"}
    assert len(fused) == 4, rows(fused)

    # dog: a's and b's boxes overlap (IoU 0.77 > 0.7): one box, the score-weighted mean, whose
    # score is the mean of the two (conf_type avg: sum / 2 boxes * min(2 models, 2 boxes) / 2 weights)
    (a_box, _, a_score), (b_box, _, b_score) = A_DOG, B_DOG
    assert_one(
        fused, "dog", wbf_box([(a_box, a_score), (b_box, b_score)]), (a_score + b_score) / 2, models=2, members=2
    )
    # a dog only a saw: alone in its cluster, its score is scaled by min(2 models, 1 box) / 2 weights
    assert_one(fused, "dog", A_LONE_DOG[0], A_LONE_DOG[2] * 1 / 2, models=1, members=1)
    # cat (only a knows it) and bird (only b knows it) pass through with unchanged scores
    assert_one(fused, "cat", A_CAT[0], A_CAT[2], models=1, members=1)
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2], models=1, members=1)
    # b's bird was not fused with a's dog although b's bird id (1) is a's dog id
    assert (fused.class_id == ENSEMBLE_CLASSES.index("dog")).sum() == 2
    # most confident first
    assert list(fused.confidence) == sorted(fused.confidence, reverse=True)


def test_wbf_weights_multiply_scores_and_pull_the_fused_box_toward_the_heavier_member(spec_a, spec_b):
    wa, wb = 3.0, 1.0
    fused = run_one([spec_a, spec_b], weights=[wa, wb]).detections
    (a_box, _, a_score), (b_box, _, b_score) = A_DOG, B_DOG
    expected = wbf_box([(a_box, wa * a_score), (b_box, wb * b_score)])
    # score: (sum of weighted scores) / 2 boxes * min(2 models, 2 boxes) / (wa + wb)
    assert_one(fused, "dog", expected, (wa * a_score + wb * b_score) / 2 * 2 / (wa + wb), models=2)
    assert_one(fused, "dog", A_LONE_DOG[0], wa * A_LONE_DOG[2] * 1 / (wa + wb), models=1)
    assert_one(fused, "cat", A_CAT[0], A_CAT[2], models=1)
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2], models=1)

    unweighted = wbf_box([(a_box, a_score), (b_box, b_score)])
    dog = fused.xyxy[find(fused, "dog", expected, tol=BOX_TOL)[0]]
    assert np.abs(dog - np.array(a_box)).max() < np.abs(np.array(unweighted) - np.array(a_box)).max()


def test_fusion_config_weights_equal_the_weights_argument(spec_a, spec_b):
    by_argument = run_one([spec_a, spec_b], weights=[3, 1]).detections
    by_config = run_one([spec_a, spec_b], fusion=FusionConfig(weights=(3, 1))).detections
    assert by_config == by_argument
    assert by_config != run_one([spec_a, spec_b]).detections


def test_fusion_iou_decides_whether_boxes_fuse(spec_a, spec_b):
    # IoU of the two dogs is 0.772: above 0.75 they stay apart (each with its score halved)
    apart = run_one([spec_a, spec_b], fusion_iou=0.8).detections
    assert_one(apart, "dog", A_DOG[0], A_DOG[2] / 2, models=1)
    assert_one(apart, "dog", B_DOG[0], B_DOG[2] / 2, models=1)
    together = run_one([spec_a, spec_b], fusion=FusionConfig(iou=0.75)).detections
    assert_one(
        together, "dog", wbf_box([(A_DOG[0], A_DOG[2]), (B_DOG[0], B_DOG[2])]), (A_DOG[2] + B_DOG[2]) / 2, models=2
    )


def test_letterboxed_members_fuse_in_original_pixels(tmp_path):
    """The YOLOv8 preset's centred letterbox, different input sizes per member: a 128x64 frame is
    scaled by 0.5 into 64x64 (pasted at y = 16) for one member, by 0.25 into 32x32 (y = 8) for the
    other; the fused box is computed from the planted original boxes."""
    one = ((20.0, 10.0, 80.0, 50.0), "dog", 0.8)
    two = ((24.0, 12.0, 82.0, 52.0), "dog", 0.4)
    assert iou(one[0], two[0]) > 0.7

    def letterboxed(box, scale, top):
        x1, y1, x2, y2 = box
        return (x1 * scale, y1 * scale + top, x2 * scale, y2 * scale + top)

    def planted_graph(path, detection, scale, top, hw):
        box, name, score = detection
        return yolov8_graph(path, [(letterboxed(box, scale, top), name, score)], ["dog"], hw, (1.0, 1.0))

    a = planted_graph(tmp_path / "la.onnx", one, 0.5, 16, (64, 64))
    b = planted_graph(tmp_path / "lb.onnx", two, 0.25, 8, (32, 32))
    members = [
        {"model": a, "family": "yolov8", "classes": ["dog"]},
        {"model": b, "family": "yolov8", "classes": ["dog"]},
    ]
    with Pipeline(members) as pipe:
        result = pipe.run([np.zeros((64, 128, 3), np.uint8)])[0]
    assert result.ok, result.error
    np.testing.assert_allclose(result.members["la"].xyxy, [one[0]], atol=BOX_TOL)
    np.testing.assert_allclose(result.members["lb"].xyxy, [two[0]], atol=BOX_TOL)
    assert_one(result.detections, "dog", wbf_box([(one[0], one[2]), (two[0], two[2])]), (one[2] + two[2]) / 2, models=2)


# -- other fusion methods -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["nms", FusionMethod.NMS, FusionConfig(method="nms")], ids=["str", "enum", "config"])
def test_nms_keeps_the_higher_scoring_box(spec_a, spec_b, method):
    fused = run_one([spec_a, spec_b], fusion=method).detections
    assert len(fused) == 4, rows(fused)
    # b's dog (0.6) overlaps a's (0.9) by IoU 0.77 > 0.7 and is suppressed; with no weights the
    # scores are kept as they are, as ensemble-boxes' nms(weights=None) keeps them
    assert_one(fused, "dog", A_DOG[0], A_DOG[2], models=1, members=1)
    assert not find(fused, "dog", B_DOG[0], tol=BOX_TOL)
    assert_one(fused, "dog", A_LONE_DOG[0], A_LONE_DOG[2], models=1)
    assert_one(fused, "cat", A_CAT[0], A_CAT[2])
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2])


def test_nms_with_weights_scales_shared_class_scores_by_weight_share(spec_a, spec_b):
    fused = run_one([spec_a, spec_b], fusion="nms", weights=[1, 3]).detections
    # weighted: a's dog 0.9 * 1/4 = 0.225 < b's dog 0.6 * 3/4 = 0.45: now b's box wins
    assert_one(fused, "dog", B_DOG[0], B_DOG[2] * 3 / 4, models=1)
    assert not find(fused, "dog", A_DOG[0], tol=BOX_TOL)
    assert_one(fused, "dog", A_LONE_DOG[0], A_LONE_DOG[2] * 1 / 4)
    # single-member classes are not fused, so not weighted
    assert_one(fused, "cat", A_CAT[0], A_CAT[2])
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2])


@pytest.mark.parametrize("method", ["vote", FusionConfig(method=FusionMethod.VOTE)], ids=["str", "config"])
def test_vote_drops_shared_class_boxes_only_one_member_saw(spec_a, spec_b, method):
    fused = run_one([spec_a, spec_b], fusion=method).detections
    assert len(fused) == 3, rows(fused)
    assert_one(fused, "dog", wbf_box([(A_DOG[0], A_DOG[2]), (B_DOG[0], B_DOG[2])]), (A_DOG[2] + B_DOG[2]) / 2, models=2)
    assert not find(fused, "dog", A_LONE_DOG[0], tol=1.0)  # one vote of the two needed
    # classes a single member knows cannot get two votes: they pass through
    assert_one(fused, "cat", A_CAT[0], A_CAT[2], models=1)
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2], models=1)


def test_vote_with_min_votes_one_keeps_everything_wbf_keeps(spec_a, spec_b):
    vote = run_one([spec_a, spec_b], fusion=FusionConfig(method="vote", min_votes=1)).detections
    wbf = run_one([spec_a, spec_b]).detections
    assert vote == wbf


def test_unknown_fusion_method_is_rejected(spec_a, spec_b):
    with pytest.raises(ValueError):
        Pipeline([spec_a, spec_b], fusion="bogus")


# -- a member that fails ------------------------------------------------------------------------------


def fail_on_bright_frames(monkeypatch, pipe: Pipeline, member: int) -> list[int]:
    """Make one member's backend raise on any input whose pixels are not all black; returns a list
    that records how many times it raised."""
    backend = pipe.members[member].model.backend
    original = backend.forward
    raised: list[int] = []

    def forward(tensor):
        if float(np.max(tensor)) > 0:
            raised.append(1)
            raise RuntimeError(f"member {member} cannot handle bright frames")
        return original(tensor)

    monkeypatch.setattr(backend, "forward", forward)
    return raised


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_failing_member_leaves_the_other_members_detections(monkeypatch, spec_a, spec_b, batch_size):
    frames = [frame(0), frame(255), frame(0)]
    with Pipeline([spec_a, spec_b]) as pipe:
        raised = fail_on_bright_frames(monkeypatch, pipe, 0)
        results = pipe.run(frames, batch_size=batch_size)
        clean = run_one([spec_a, spec_b]).detections
    assert raised, "the patched backend was never asked for the bright frame"
    assert [r.index for r in results] == [0, 1, 2]

    for i in (0, 2):
        assert results[i].ok and results[i].member_errors == {}, results[i].member_errors
        assert set(results[i].members) == {"a", "b"}
        assert results[i].detections == clean

    failed = results[1]
    assert failed.ok and failed.error is None
    assert set(failed.member_errors) == {"a"}
    assert isinstance(failed.member_errors["a"], RuntimeError)
    assert "bright" in str(failed.member_errors["a"])
    assert set(failed.members) == {"b"}
    # fused from b alone: b's dog and bird, in the ensemble's classes, scores as b gave them
    fused = failed.detections
    assert fused is not None and fused.class_names == ENSEMBLE_CLASSES
    assert len(fused) == 2, rows(fused)
    assert_one(fused, "dog", B_DOG[0], B_DOG[2], models=1)
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2], models=1)


def test_when_every_member_fails_the_result_carries_an_ensemble_error(monkeypatch, spec_a, spec_b):
    with Pipeline([spec_a, spec_b]) as pipe:
        fail_on_bright_frames(monkeypatch, pipe, 0)
        fail_on_bright_frames(monkeypatch, pipe, 1)
        results = pipe.run([frame(0), frame(200), frame(0)], batch_size=2)
        with pytest.raises(EnsembleError) as raised:
            pipe(frame(200))
    assert set(raised.value.errors) == {"a", "b"}

    assert results[0].ok and results[2].ok
    failed = results[1]
    assert not failed.ok
    assert failed.detections is None
    assert isinstance(failed.error, EnsembleError)
    assert set(failed.error.errors) == {"a", "b"}
    assert all(isinstance(e, RuntimeError) for e in failed.error.errors.values())
    message = str(failed.error)
    assert "a:" in message and "b:" in message and "member 0" in message and "member 1" in message


# -- bad configurations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [[1.0], [1.0, 2.0, 3.0], [-1.0, 1.0], [math.nan, 1.0], [math.inf, 1.0], [0.0, 0.0]],
    ids=["too-few", "too-many", "negative", "nan", "inf", "all-zero"],
)
def test_bad_weights_raise_fusion_error_at_construction(spec_a, spec_b, weights):
    with pytest.raises(FusionError):
        Pipeline([spec_a, spec_b], weights=weights)
    with pytest.raises(FusionError):
        Pipeline([spec_a, spec_b], fusion=FusionConfig(weights=tuple(weights)))


def test_weights_for_a_single_model_must_also_match(spec_a):
    with pytest.raises(FusionError):
        Pipeline(spec_a, weights=[1.0, 1.0])


def test_fusion_error_is_a_value_error():
    assert issubclass(FusionError, ValueError)


def test_members_sharing_no_class_name_are_rejected(spec_a, graphs):
    spec_c = {
        "model": graphs["c"],
        "family": "yolov8",
        "classes": ["fish", "bird"],
        "preprocess": {"resize": "stretch"},
    }
    with pytest.raises(FusionError, match="share no class"):
        Pipeline([spec_a, spec_c])


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_an_empty_model_list_is_a_value_error(empty):
    with pytest.raises(ValueError):
        Pipeline(empty)


def test_a_zero_weight_member_contributes_nothing(spec_a, spec_b):
    """Weight 0 removes a model from fusion (postprocess/fusion.py: 'a model weight of 0 removes that
    model'); the pipeline already drops classes known only to zero-weight members when two of them
    know it. A class known only to the zero-weight member must not slip through either."""
    fused = run_one([spec_a, spec_b], weights=[0, 1]).detections
    assert_one(fused, "dog", B_DOG[0], B_DOG[2], models=1)
    assert_one(fused, "bird", B_BIRD[0], B_BIRD[2], models=1)
    assert not find(fused, "dog", A_DOG[0], tol=BOX_TOL)
    assert not find(fused, "dog", A_LONE_DOG[0], tol=BOX_TOL)
    assert not (fused.class_id == ENSEMBLE_CLASSES.index("cat")).any(), (
        f"member a has weight 0, yet its cat passes through: {rows(fused)}"
    )
    assert len(fused) == 2, rows(fused)


# -- real models -----------------------------------------------------------------------------------------

PHOTOS = [
    "000000000139.jpg",
    "000000000285.jpg",
    "000000000632.jpg",
    "000000000724.jpg",
    "000000000776.jpg",
    "000000000785.jpg",
    "000000000802.jpg",
    "000000000872.jpg",
]


@pytest.fixture(scope="module")
def real_specs(asset) -> list[dict]:
    return [
        {"model": asset("models/yolox_nano_416_coco.onnx"), "family": "yolox"},
        {"model": asset("models/nanodet_m_320_coco.onnx"), "family": "nanodet"},
    ]


@pytest.fixture(scope="module")
def photos(asset) -> list[Path]:
    return [asset(f"coco/images/val2017/{name}") for name in PHOTOS]


@pytest.fixture(scope="module")
def real_runs(real_specs, photos):
    names = ["yolox_nano_416_coco", "nanodet_m_320_coco"]
    with Pipeline(real_specs, conf=0.01) as pipe:
        assert [m.name for m in pipe.members] == names
        assert pipe.class_names == pipe.members[0].model.class_names == pipe.members[1].model.class_names
        ensemble = pipe.run(photos)
    singles = {}
    for name, spec in zip(names, real_specs):
        with Pipeline(spec, conf=0.01) as pipe:
            singles[name] = pipe.run(photos)
    return ensemble, singles


@pytest.mark.real
def test_real_ensemble_gives_fused_and_member_detections_for_every_photo(real_runs, photos):
    ensemble, singles = real_runs
    assert len(ensemble) == len(photos) == 8
    fused_twice = 0
    for result, photo in zip(ensemble, photos):
        assert result.ok, (photo, result.error)
        assert result.member_errors == {}
        assert set(result.members) == set(singles)
        fused = result.detections
        assert fused is not None and len(fused) > 0, photo
        assert set(fused.data) == {"models", "members"}
        assert set(np.unique(fused.data["models"])) <= {1, 2}
        assert (fused.data["members"] >= fused.data["models"]).all()
        assert (fused.confidence > 0).all() and (fused.confidence <= 1 + 1e-6).all()
        h, w = result.image_size
        assert (
            (fused.xyxy >= -1e-3).all()
            and (fused.xyxy[:, [0, 2]] <= w + 1e-3).all()
            and (fused.xyxy[:, [1, 3]] <= h + 1e-3).all()
        )
        fused_twice += int((fused.data["models"] == 2).sum())
    assert fused_twice > 0, "two good detectors never agreed on a box in 8 photos"


@pytest.mark.real
def test_real_member_detections_equal_single_model_pipelines(real_runs, photos):
    ensemble, singles = real_runs
    for name, alone in singles.items():
        for result, single, photo in zip(ensemble, alone, photos):
            assert single.ok, (photo, single.error)
            member, reference = result.members[name], single.detections
            assert len(reference) > 0
            assert member.class_names == reference.class_names
            np.testing.assert_array_equal(member.xyxy, reference.xyxy, err_msg=f"{name} on {photo.name}")
            np.testing.assert_array_equal(member.confidence, reference.confidence, err_msg=f"{name} on {photo.name}")
            np.testing.assert_array_equal(member.class_id, reference.class_id, err_msg=f"{name} on {photo.name}")
            assert member == reference


@pytest.mark.real
def test_max_det_caps_the_fused_detections_too(real_specs, photos):
    """``max_det`` caps the detections of an image (DecodeParams: 'max_det caps the detections after
    [NMS]'; `visionpipe eval --max-det`: 'Detections kept per image'). For an ensemble the image's
    detections are the fused ones, so they must not exceed it either."""
    cap = 50
    with Pipeline(real_specs, conf=0.01, max_det=cap) as pipe:
        results = pipe.run(photos)
    assert all(r.ok for r in results)
    assert max(len(m) for r in results for m in r.members.values()) == cap  # the members are capped
    counts = {Path(r.source).name: len(r.detections) for r in results}
    assert max(counts.values()) <= cap, f"fused detections per photo with max_det={cap}: {counts}"


def test_class_filter_names_and_ids_refer_to_the_ensembles_class_list(spec_a, spec_b):
    # union = (cat, dog, bird); id 2 is bird, which only member b knows. Member a's own id 2 does
    # not exist, and b's own id 2 would not exist either: ids must be read in the union.
    pipe = Pipeline([spec_a, spec_b], classes=["cat", 2])
    assert pipe.class_names == ("cat", "dog", "bird")
    assert [m.params.classes for m in pipe.members] == [(0,), (1,)]  # a: cat, b: bird (its id 1)
    result = pipe.run([frame()])[0]
    assert set(result.detections.names) == {"cat", "bird"}
    with pytest.raises(SpecError):
        Pipeline([spec_a, spec_b], classes=["zebra"])
