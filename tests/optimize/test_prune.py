"""Pruning: exact semantics on tiny graphs, YOLOX-Nano and NanoDet-m on real photos, torch channel pruning."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from tests.optimize.tiny_graphs import HW, conv_relu_conv, save_graph, sha256
from visionpipe.errors import MissingExtraError
from visionpipe.geometry import box_iou
from visionpipe.models.loader import load_model
from visionpipe.optimize.prune import (
    COMPRESSION,
    PruneResult,
    compressed_size,
    prune_magnitude,
    prune_torch_channels,
)
from visionpipe.optimize.quantize import OptimizationError
from visionpipe.pipeline import Pipeline

NUM_CLASSES = 92  # the MatMul head gives 96 channels: 4 box + 92 classes
ULTRALYTICS_META = {
    "names": str({i: f"class{i}" for i in range(NUM_CLASSES)}),
    "task": "detect",
    "imgsz": f"[{HW}, {HW}]",
    "stride": "32",
}
# the tiny graph's prunable-looking weights: name -> shape. w1 (1728 elements) is below the default
# min_elements (4096), w_1x1 is exactly at it; w_fc feeds a MatMul. w_shared (not listed) is read
# by a Conv and by a Mul, so it must never be pruned.
SHAPES = {
    "w1": (64, 3, 3, 3),
    "w2": (64, 64, 3, 3),
    "w_1x1": (64, 64, 1, 1),
    "w_fc": (64, 96),
}


def tiny_detector(path: Path) -> Path:
    """Conv(3->64) -> Relu -> Conv(64->64, 3x3) -> Conv(64->64, 1x1) -> Conv(w_shared) -> Conv(2 *
    w_shared) -> MatMul(64->96) per pixel, in the YOLOv8 layout (1, 96, HW*HW) with Ultralytics
    metadata. Layers have very different weight scales, so global and per-layer thresholds differ."""
    rng = np.random.default_rng(0)
    scales = {"w1": 0.3, "w2": 0.05, "w_1x1": 0.1, "w_fc": 0.005}
    weights = {name: rng.normal(0, scales[name], shape).astype(np.float32) for name, shape in SHAPES.items()}
    shared = rng.normal(0, 0.1, (64, 64, 1, 1)).astype(np.float32)
    bias = rng.normal(0, 0.1, 64).astype(np.float32)
    nodes = [
        *conv_relu_conv(),
        helper.make_node("Conv", ["c2", "w_1x1"], ["c3"], name="conv_1x1"),
        helper.make_node("Conv", ["c3", "w_shared"], ["c4"], name="conv_shared"),
        helper.make_node("Mul", ["w_shared", "two"], ["w_doubled"], name="mul_shared"),
        helper.make_node("Conv", ["c4", "w_doubled"], ["c5"], name="conv_doubled"),
        # a linear head on every pixel: (1, 64, N) -> (1, N, 64) @ (64, 96) -> (1, 96, N)
        helper.make_node("Reshape", ["c5", "shape"], ["flat"], name="reshape"),
        helper.make_node("Transpose", ["flat"], ["pixels"], name="to_pixels", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["pixels", "w_fc"], ["scores"], name="fc"),
        helper.make_node("Transpose", ["scores"], ["output0"], name="to_channels", perm=[0, 2, 1]),
    ]
    inits = [
        *(numpy_helper.from_array(w, name) for name, w in weights.items()),
        numpy_helper.from_array(shared, "w_shared"),
        numpy_helper.from_array(bias, "b1"),
        numpy_helper.from_array(bias.copy(), "b2"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([1, 64, HW * HW], np.int64), "shape"),
    ]
    return save_graph(path, nodes, inits, [1, 96, HW * HW], ULTRALYTICS_META)


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def zeros(values: np.ndarray) -> int:
    return int(values.size - np.count_nonzero(values))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_detector(tmp_path / "tiny.onnx")


# ---------------------------------------------------------------------------------- semantics


def test_global_scope_uses_one_threshold_equal_to_the_numpy_quantile(tiny, tmp_path):
    before, original = sha256(tiny), initializers(tiny)
    result = prune_magnitude(tiny, tmp_path / "out" / "global.onnx", 0.3, scope="global", min_elements=1000)
    assert sha256(tiny) == before
    assert isinstance(result, PruneResult) and Path(result) == result.path
    pruned = initializers(result.path)

    prunable = [
        "w1",
        "w2",
        "w_1x1",
        "w_fc",
    ]  # graph order; w_shared is also read by a Mul
    assert [layer.weight for layer in result.layers] == prunable
    magnitudes = np.concatenate([np.abs(original[name]).ravel() for name in prunable])
    # independently: numpy's inverted-CDF quantile is the smallest magnitude with >= 30% at or below it
    threshold = float(np.quantile(magnitudes, 0.3, method="inverted_cdf"))
    assert result.threshold == pytest.approx(threshold, rel=0, abs=0)
    for name in prunable:
        want = np.where(np.abs(original[name]) <= threshold, 0, original[name])
        np.testing.assert_array_equal(pruned[name], want)
    assert sum(zeros(pruned[n]) for n in prunable) == math.ceil(0.3 * magnitudes.size)
    assert result.sparsity == pytest.approx(math.ceil(0.3 * magnitudes.size) / magnitudes.size)

    # one threshold over layers of different scales: small-weight layers lose more
    by_name = {layer.weight: layer for layer in result.layers}
    assert by_name["w_fc"].sparsity > 0.9 and by_name["w1"].sparsity < 0.1
    assert any("w_fc" in note and "nearly emptied" in note for note in result.notes)
    for name, layer in by_name.items():
        assert layer.shape == SHAPES[name] and layer.elements == original[name].size
        assert layer.zeros == zeros(pruned[name])
    assert (by_name["w1"].node, by_name["w1"].op, by_name["w_fc"].op) == (
        "conv1",
        "Conv",
        "MatMul",
    )


def test_layer_scope_gives_every_layer_the_target(tiny, tmp_path):
    original = initializers(tiny)
    result = prune_magnitude(tiny, tmp_path / "layer.onnx", 0.3, scope="layer", min_elements=1000)
    pruned = initializers(result.path)
    assert result.threshold is None
    for layer in result.layers:
        size = original[layer.weight].size
        # exactly ceil(0.3 * n): float weights from a normal distribution have no ties
        assert zeros(pruned[layer.weight]) == layer.zeros == math.ceil(0.3 * size), layer
        magnitudes = np.abs(original[layer.weight])
        threshold = np.quantile(magnitudes, 0.3, method="inverted_cdf")
        np.testing.assert_array_equal(pruned[layer.weight] == 0, magnitudes <= threshold)


def test_biases_shared_small_and_other_tensors_are_untouched(tiny, tmp_path):
    original = initializers(tiny)
    result = prune_magnitude(tiny, tmp_path / "default.onnx", 0.5)  # default min_elements 4096
    pruned = initializers(result.path)
    assert [layer.weight for layer in result.layers] == ["w2", "w_1x1", "w_fc"]
    assert dict(result.skipped) == {
        "w1": "1728 elements < min_elements 4096",
        "w_shared": "also used as Mul input 0",
    }
    for name in ("b1", "b2", "w1", "w_shared", "two", "shape"):
        np.testing.assert_array_equal(pruned[name], original[name])
    pruned_size = sum(original[name].size for name in ("w2", "w_1x1", "w_fc"))
    assert sum(zeros(pruned[name]) for name in ("w2", "w_1x1", "w_fc")) == math.ceil(0.5 * pruned_size)
    assert result.scope == "global"  # the default


def test_compressed_sizes_metadata_spec_and_model_still_runs(tiny, tmp_path):
    result = prune_magnitude(tiny, tmp_path / "p50.onnx", 0.5, scope="layer", min_elements=1000)
    # dense storage: same bytes on disk; the zeros show once compressed
    assert abs(result.size_bytes - result.source_size_bytes) < 1000
    assert result.size_bytes == result.path.stat().st_size
    assert result.compressed_bytes == compressed_size(result.path) < result.source_compressed_bytes
    assert result.compressed_ratio < 0.8, result.compressed_ratio
    assert result.compression == COMPRESSION and "level 6" in COMPRESSION

    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert {k: meta.get(k) for k in ULTRALYTICS_META} == ULTRALYTICS_META
    assert result.spec_path == result.path.with_suffix(".yaml") and result.spec_path.is_file()
    assert load_model(result.path).class_names == load_model(tiny).class_names

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": np.ones((1, 3, HW, HW), np.float32)})
    assert all(np.isfinite(o).all() for o in outputs)


def test_pruned_model_converts_to_fp16_through_its_spec_and_keeps_its_zeros(tiny, tmp_path):
    from visionpipe.optimize.fp16 import convert_fp16

    pruned = prune_magnitude(tiny, tmp_path / "p50.onnx", 0.5, min_elements=1000)
    half = convert_fp16(pruned.spec_path, tmp_path / "p50_fp16.onnx")  # a spec file works as the source
    assert half.spec_path is not None and load_model(half.path).family == "yolov8"
    weights = initializers(half.path)
    for layer in pruned.layers:
        assert weights[layer.weight].dtype == np.float16 and zeros(weights[layer.weight]) == layer.zeros


def test_zero_sparsity_changes_no_weight(tiny, tmp_path):
    original = initializers(tiny)
    result = prune_magnitude(tiny, tmp_path / "p0.onnx", 0.0, min_elements=0)
    assert result.threshold is None and result.sparsity == 0.0
    for name, values in initializers(result.path).items():
        np.testing.assert_array_equal(values, original[name])


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_outside_0_1_is_a_value_error(tiny, tmp_path, sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune_magnitude(tiny, tmp_path / "bad.onnx", sparsity)
    assert not (tmp_path / "bad.onnx").exists()


def test_bad_scope_non_onnx_and_out_path_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="scope must be one of"):
        prune_magnitude(tiny, tmp_path / "bad.onnx", 0.3, scope="channel")
    fake = tmp_path / "fake.onnx"
    fake.write_text("definitely not protobuf \x00\xff", encoding="latin-1")
    with pytest.raises(OptimizationError, match=r"cannot prune .*fake\.onnx: not a readable ONNX model"):
        prune_magnitude(fake, tmp_path / "out.onnx")
    before = sha256(tiny)
    for target in (tiny, tmp_path / "." / tiny.name):
        with pytest.raises(OptimizationError, match="refusing to overwrite"):
            prune_magnitude(tiny, target)
    assert sha256(tiny) == before


# ---------------------------------------------------------------------------------- real models

YOLOX = "models/yolox_nano_416_coco.onnx"
NANODET = "models/nanodet_m_320_coco.onnx"
GT = "coco/annotations/instances_val2017_dev64.json"
VAL_PHOTOS = 8
SPARSITY = 0.3
PERSON_SCORE = 0.5
PERSON_IOU = 0.5


@pytest.fixture(scope="module")
def val_photos(asset):
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:VAL_PHOTOS]
    assert len(photos) == VAL_PHOTOS
    return [str(p) for p in photos]


@pytest.fixture(scope="module")
def ground_truth(asset, val_photos):
    gt = json.loads(asset(GT).read_text(encoding="utf-8"))
    names = {Path(p).name for p in val_photos}
    images = [img for img in gt["images"] if img["file_name"] in names]
    ids = {img["id"] for img in images}
    return {
        **gt,
        "images": images,
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
    }


def large_people(ground_truth, min_area: float = 20000.0) -> dict[str, np.ndarray]:
    """file name -> xyxy boxes of the people with a box of at least ``min_area`` pixels."""
    person = next(c["id"] for c in ground_truth["categories"] if c["name"] == "person")
    names = {img["id"]: img["file_name"] for img in ground_truth["images"]}
    people: dict[str, list[list[float]]] = {}
    for a in ground_truth["annotations"]:
        if a["category_id"] == person and a["area"] >= min_area:
            x, y, w, h = a["bbox"]
            people.setdefault(names[a["image_id"]], []).append([x, y, x + w, y + h])
    return {name: np.array(boxes, np.float32) for name, boxes in people.items()}


@pytest.mark.real
@pytest.mark.parametrize(("relative", "family"), [(YOLOX, "yolox"), (NANODET, "nanodet")])
def test_real_30_percent_prune_loads_and_still_finds_people(
    asset, tmp_path, val_photos, ground_truth, relative, family
):
    from visionpipe.evaluation import evaluate_coco

    source = asset(relative)
    before = sha256(source)
    model = load_model(source, family=family)
    result = prune_magnitude(model, tmp_path / f"{source.stem}_p30.onnx", SPARSITY)
    assert sha256(source) == before
    assert result.sparsity == pytest.approx(SPARSITY, abs=1e-4)
    assert result.size_bytes == pytest.approx(result.source_size_bytes, rel=0.01)
    assert result.compressed_bytes < 0.85 * result.source_compressed_bytes

    with Pipeline(model, conf=0.01) as fp32, Pipeline(result.path, conf=0.01) as pruned:
        assert pruned.model.family == family  # the sidecar spec alone configures it
        want, got = fp32.run(val_photos), pruned.run(val_photos)
    fp32_map = evaluate_coco(want, ground_truth, model.class_names).map_50_95
    pruned_map = evaluate_coco(got, ground_truth, model.class_names).map_50_95
    print(
        f"{family} {SPARSITY:.0%} {result.scope}: mAP@.5:.95 {pruned_map:.4f} (fp32 {fp32_map:.4f}) on "
        f"{VAL_PHOTOS} val2017 photos; size {result.size_bytes}/{result.source_size_bytes}, "
        f"compressed {result.compressed_bytes}/{result.source_compressed_bytes} ({result.compression})"
    )
    # Sanity, not an accuracy claim (magnitude pruning without fine-tuning costs accuracy; measured
    # on these photos: YOLOX-Nano 0.41 -> 0.27, NanoDet-m 0.34 -> 0.34). Every photo with a large
    # person in the ground truth (000000000785, 000000000872) still gets a confident person box on
    # it: measured 0.73-0.93 for the pruned models, about as confident as fp32.
    people = large_people(ground_truth)
    assert len(people) >= 2, people
    for found in got:
        name = Path(found.source).name
        if name in people:
            dets = found.detections
            boxes = dets.xyxy[(dets.class_id == 0) & (dets.confidence >= PERSON_SCORE)]
            overlap = box_iou(people[name], boxes).max(axis=1) if len(boxes) else np.zeros(1)
            assert overlap.min() >= PERSON_IOU, (name, overlap)
    # Far below both measured values, far above what a broken pruning gives (pruning the small
    # tensors too left YOLOX-Nano at 0.00-0.06)
    assert pruned_map > 0.1, pruned_map


# ---------------------------------------------------------------------------------- torch channels


def small_cnn():
    torch = pytest.importorskip("torch")
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.BatchNorm2d(16),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1, groups=32),  # depthwise: pruned with its input
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 64, 1),
                nn.ReLU(),
            )
            self.head = nn.Conv2d(64, 85, 1)  # 85 = 4 box + 1 objectness + 80 classes

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    return Net().eval(), torch.randn(1, 3, 64, 64)


def test_torch_channel_pruning_halves_channels_keeps_output_shape():
    torch = pytest.importorskip("torch")
    net, example = small_cnn()
    with torch.no_grad():
        reference = net(example)
    params = sum(p.numel() for p in net.parameters())

    pruned, report = prune_torch_channels(net, example, 0.5)
    assert sum(p.numel() for p in net.parameters()) == params  # the original is left alone
    with torch.no_grad():
        torch.testing.assert_close(net(example), reference)
        out = pruned(example)
    assert out.shape == reference.shape == (1, 85, 32, 32)
    assert torch.isfinite(out).all()
    assert pruned.body[0].out_channels == 8 and pruned.body[9].out_channels == 32
    assert pruned.head.out_channels == 85 and report.protected_layers == ["head"]
    assert report.params_before == params
    assert report.params_after == sum(p.numel() for p in pruned.parameters()) < params
    assert report.macs_after < report.macs_before and 0 < report.params_ratio < 0.6
    assert pruned.training is False


def test_torch_channel_pruning_ignored_layers_and_bad_arguments():
    pytest.importorskip("torch")
    net, example = small_cnn()
    pruned, report = prune_torch_channels(net, example, 0.5, ignored_layers=[net.body[0]], importance="l1")
    assert pruned.body[0].out_channels == 16 and pruned.body[3].out_channels == 16
    assert report.ignored_layers == ["head", "body.0"]
    with pytest.raises(ValueError, match="ratio must be in"):
        prune_torch_channels(net, example, 1.0)
    with pytest.raises(ValueError, match="importance must be one of"):
        prune_torch_channels(net, example, 0.5, importance="taylor")
    with pytest.raises(ValueError, match="not a submodule"):
        prune_torch_channels(net, example, 0.5, ignored_layers=[small_cnn()[0].head])


@pytest.mark.parametrize("missing", ["torch_pruning", "torch"])
def test_torch_pruning_missing_is_a_missing_extra_error(monkeypatch, missing):
    # None in sys.modules makes ``import missing`` raise ImportError, as if it were not installed
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(
        MissingExtraError,
        match=r"structured channel pruning needs the optional package 'torch-pruning'",
    ) as caught:
        prune_torch_channels(object(), None, 0.5)
    assert caught.value.extra == "torch" and caught.value.package == "torch-pruning"
    assert isinstance(caught.value, ImportError)
