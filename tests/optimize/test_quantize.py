"""Int8 quantization through ONNX Runtime's tooling: tiny graphs for the mechanics, YOLOX-Nano for accuracy."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from tests.optimize.tiny_graphs import (
    HW,
    NUM_CLASSES,
    ULTRALYTICS_META,
    conv_relu_conv,
    save_graph,
    sha256,
)
from visionpipe.errors import ModelLoadError, VisionpipeError
from visionpipe.geometry import box_iou
from visionpipe.models.loader import load_model
from visionpipe.optimize import (
    ImageCalibrationReader,
    OptimizationError,
    head_nodes,
    quantize_accuracy_aware,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from visionpipe.optimize.margin import ResampledScores, margin_for
from visionpipe.optimize.quantize import _prepare, minmax_ranges
from visionpipe.optimize.sensitivity import conv_units
from visionpipe.pipeline import Pipeline
from visionpipe.preprocess import preprocess


def tiny_detector(path: Path) -> Path:
    """Conv(3->64, 3x3) + Relu + Conv(64->64, 3x3) reshaped to the YOLOv8 layout (1, 4+60, 32*32),
    with Ultralytics metadata so it loads without a family. Seeded random weights."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 64).astype(np.float32)
    w2 = rng.normal(0, 0.05, (64, 64, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 64).astype(np.float32)
    nodes = [
        *conv_relu_conv(),
        helper.make_node("Reshape", ["c2", "shape"], ["output0"], name="reshape"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
        numpy_helper.from_array(np.array([1, 64, HW * HW], np.int64), "shape"),
    ]
    return save_graph(path, nodes, inits, [1, 64, HW * HW])


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    """Smooth random colour images (blurred noise), like photos more than white noise is."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(noise, (7, 7), 0)
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def run_onnx(path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": tensor})[0]


@pytest.fixture
def tiny(tmp_path: Path):
    model_path = tiny_detector(tmp_path / "tiny.onnx")
    images = write_images(tmp_path / "calib", 8, seed=1)
    return model_path, images


def test_tiny_dynamic_and_static_int8_close_to_fp32_smaller_and_original_untouched(tiny, tmp_path):
    model_path, calib = tiny
    before = sha256(model_path)
    model = load_model(model_path)  # family and classes from the Ultralytics metadata
    assert model.family == "yolov8" and len(model.class_names) == NUM_CLASSES

    dynamic = quantize_dynamic_int8(model_path, tmp_path / "out" / "tiny_dyn.onnx")
    static = quantize_static_int8(model, calib, tmp_path / "out" / "tiny_qdq.onnx")
    assert sha256(model_path) == before

    ops = {n.op_type for n in onnx.load(str(static.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really QDQ
    dyn_ops = {n.op_type for n in onnx.load(str(dynamic)).graph.node}
    assert "ConvInteger" in dyn_ops or "DynamicQuantizeLinear" in dyn_ops

    # fresh images, not the calibration set, through the model's own preprocessing
    test_images = write_images(tmp_path / "test", 4, seed=2)
    tensors = [preprocess(cv2.imread(str(p)), model.input_hw, model.preprocess)[0][None] for p in test_images]
    for tensor in tensors:
        reference = run_onnx(model_path, tensor)
        spread = float(reference.max() - reference.min())
        for quantized in (dynamic, static.path):
            out = run_onnx(quantized, tensor)
            assert out.shape == reference.shape
            error = np.abs(out - reference)
            # Tolerance: two 8-bit steps of quantization per layer over the output's range; 3% of
            # the range at the worst element and 1% on average is several times what int8 rounding
            # of two layers gives, and far below what a wrong scale or zero point gives (>20%).
            assert error.max() <= 0.03 * spread, (quantized, error.max() / spread)
            assert error.mean() <= 0.01 * spread, (quantized, error.mean() / spread)

    fp32_size = model_path.stat().st_size
    assert dynamic.stat().st_size < 0.5 * fp32_size
    assert static.path.stat().st_size < 0.5 * fp32_size

    # Ultralytics metadata survives, so the dynamic model (no sidecar) still configures itself
    for quantized in (dynamic, static.path):
        meta = {p.key: p.value for p in onnx.load(str(quantized)).metadata_props}
        assert {k: meta.get(k) for k in ULTRALYTICS_META} == ULTRALYTICS_META
    assert not dynamic.with_suffix(".yaml").exists()
    assert load_model(dynamic).class_names == model.class_names
    assert static.spec_path == static.path.with_suffix(".yaml") and static.spec_path.is_file()
    assert static.calibration_images == 8 and static.skipped_images == []
    # either pre-processed, or the fallback is recorded with its cause
    assert static.pre_processed or static.pre_process_error


def test_static_methods_and_exclusions(tiny, tmp_path):
    model_path, calib = tiny
    model = load_model(model_path)
    for method in ("entropy", "percentile"):
        result = quantize_static_int8(model, calib, tmp_path / f"{method}.onnx", method=method, per_channel=False)
        assert result.method == method and result.path.is_file()
    kept = quantize_static_int8(model, calib, tmp_path / "kept.onnx", exclude_nodes=["conv2"], preprocess=False)
    assert kept.pre_processed is False and kept.pre_process_error is None
    graph = onnx.load(str(kept.path)).graph
    conv2 = next(n for n in graph.node if n.name == "conv2")
    producers = {o: n.op_type for n in graph.node for o in n.output}
    # conv2 left in float: its weight is the float initializer, not a DequantizeLinear output
    assert conv2.input[1] == "w2" and producers.get(conv2.input[1]) is None
    conv1 = next(n for n in graph.node if n.name == "conv1")
    assert producers.get(conv1.input[1]) == "DequantizeLinear"
    with pytest.raises(ValueError, match="calibration method"):
        quantize_static_int8(model, calib, tmp_path / "x.onnx", method="kl")


def test_percentile_ranges_are_two_sided_for_uint8_activations(tiny, tmp_path):
    """ONNX Runtime's percentile calibrator clips at one percentile of |x| unless told otherwise;
    the option must reach it. At the 90th percentile the difference is plain on conv2's input (a
    ReLU output, half zeros): one-sided clips at P90 of x, two-sided cuts 5 % at each end, at P95."""
    model_path, calib = tiny
    model = load_model(model_path)

    def conv2_input_scale(path: Path) -> float:
        graph = onnx.load(str(path)).graph
        producers = {o: n for n in graph.node for o in n.output}
        values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        conv2 = next(n for n in graph.node if n.name == "conv2")
        dequantize = producers[conv2.input[0]]
        assert dequantize.op_type == "DequantizeLinear"
        return float(values[dequantize.input[1]])

    def quantized(name: str, **options) -> Path:
        return quantize_static_int8(
            model, calib, tmp_path / name, method="percentile", preprocess=False,
            extra_options={"CalibPercentile": 90.0, **options},
        ).path  # fmt: skip

    two_sided = conv2_input_scale(quantized("two.onnx"))
    one_sided = conv2_input_scale(quantized("one.onnx", CalibTensorRangeSymmetric=True))
    # the reference: NumPy percentiles of the ReLU output over the calibration images
    graph = onnx.load(str(model_path))
    graph.graph.output.append(helper.make_tensor_value_info("r1", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    tensors = [preprocess(cv2.imread(str(p)), model.input_hw, model.preprocess)[0][None] for p in calib]
    relu = np.concatenate([session.run(["r1"], {"images": t})[0].ravel() for t in tensors])
    assert two_sided * 255 == pytest.approx(np.percentile(relu, 95), rel=0.03)
    assert one_sided * 255 == pytest.approx(np.percentile(relu, 90), rel=0.03)


def test_head_nodes_tiny(tiny):
    model_path, _ = tiny
    assert head_nodes(model_path, count=0) == ["reshape"]  # the decode tail alone
    assert head_nodes(model_path, count=1) == ["conv2", "reshape"]
    assert head_nodes(model_path, count=2) == ["conv1", "relu1", "conv2", "reshape"]


# ---------------------------------------------------------------------------------- failures


def test_calibration_folder_all_corrupt_raises_with_cause(tiny, tmp_path):
    model_path, _ = tiny
    model = load_model(model_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    paths = []
    for i in range(3):
        path = bad / f"broken{i}.jpg"
        path.write_bytes(b"this is not a jpeg at all" * (i + 1))
        paths.append(path)
    with pytest.raises(
        OptimizationError,
        match="none of the 3 calibration images could be decoded: not a decodable image",
    ):
        ImageCalibrationReader(model, paths)
    with pytest.raises(OptimizationError, match="could be decoded"):
        quantize_static_int8(model, sorted(bad.iterdir()), tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()

    # some good, some bad: the bad ones are skipped and counted
    good = write_images(tmp_path / "good", 2, seed=3)
    reader = ImageCalibrationReader(model, [*good, paths[0], tmp_path / "missing.png"])
    assert len(reader) == 2
    assert [p for p, _ in reader.skipped] == [
        str(paths[0]),
        str(tmp_path / "missing.png"),
    ]
    assert reader.skipped[1][1] == "file not found"


def test_non_onnx_file_is_a_typed_error(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_text("definitely not protobuf \x00\xff", encoding="latin-1")
    with pytest.raises(OptimizationError, match="not a readable ONNX model"):
        quantize_dynamic_int8(fake, tmp_path / "out.onnx")
    with pytest.raises(OptimizationError, match="not a readable ONNX model"):
        head_nodes(fake)
    with pytest.raises(OptimizationError, match="file not found"):
        quantize_dynamic_int8(tmp_path / "absent.onnx", tmp_path / "out.onnx")
    with pytest.raises((OptimizationError, ModelLoadError)):
        load_model(fake, family="yolov8")
    assert issubclass(OptimizationError, VisionpipeError)


def test_out_path_equal_to_model_path_is_refused(tiny, tmp_path):
    model_path, calib = tiny
    before = sha256(model_path)
    model = load_model(model_path)
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        quantize_dynamic_int8(model_path, model_path)
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        quantize_dynamic_int8(model_path, tmp_path / "." / model_path.name)
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        quantize_static_int8(model, calib, model_path)
    assert sha256(model_path) == before


# ---------------------------------------------------------------------------------- YOLOX-Nano

YOLOX = "models/yolox_nano_416_coco.onnx"
GT = "coco/annotations/instances_val2017_dev64.json"


@pytest.fixture(scope="module")
def yolox_int8(asset, tmp_path_factory):
    source = asset(YOLOX)
    before = sha256(source)
    model = load_model(source, family="yolox")
    calib = sorted(asset("coco/images/train2017").glob("*.jpg"))[:8]
    out = tmp_path_factory.mktemp("yolox") / "yolox_nano_int8.onnx"
    # The input end (space-to-depth, stem conv, dark2.0's two convs) stays in float: quantizing it
    # costs YOLOX-Nano a third of its mAP, as the accuracy-aware loop measures (see its test).
    with tempfile.TemporaryDirectory() as tmp:
        prepared, *_ = _prepare(source, Path(tmp), per_channel=True, preprocess=True)
        stem = [name for unit in conv_units(prepared)[:3] for name in unit]
    result = quantize_static_int8(model, calib, out, exclude_nodes=stem, moving_average=True)
    assert sha256(source) == before
    return model, result


@pytest.fixture(scope="module")
def val8(asset):
    return [str(p) for p in sorted(asset("coco/images/val2017").glob("*.jpg"))[:8]]


def test_yolox_static_int8_agrees_with_fp32(yolox_int8, val8):
    model, result = yolox_int8
    # The sidecar spec alone configures the int8 model: no family argument.
    int8 = load_model(result.path)
    assert int8.family == "yolox" and int8.input_hw == model.input_hw
    assert int8.preprocess == model.preprocess and int8.class_names == model.class_names

    with (
        Pipeline(model, conf=0.3) as fp32_pipe,
        Pipeline(result.path, conf=0.1) as int8_pipe,
    ):
        fp32_results = fp32_pipe.run(val8)
        int8_results = int8_pipe.run(val8)
    matched = total = 0
    for ref, got in zip(fp32_results, int8_results):
        assert ref.ok and got.ok
        for k in range(len(ref.detections)):
            total += 1
            same_class = got.detections.class_id == ref.detections.class_id[k]
            if same_class.any():
                ious = box_iou(ref.detections.xyxy[k : k + 1], got.detections.xyxy[same_class])[0]
                matched += bool((ious > 0.7).any())
    # Tolerance: every fp32 box with score > 0.3 needs an int8 box of the same class with IoU > 0.7
    # (int8 boxes searched down to score 0.1, as scores move by a few hundredths under int8).
    # 80%: int8 shifts boxes by a pixel or two (IoU stays > 0.9 for most) but borderline boxes can
    # swap NMS winners or fall under 0.1; a broken quantization (wrong scales, wrong preprocessing
    # in calibration) matches well under half.
    assert total >= 20, total  # enough boxes for the ratio to mean something
    assert matched / total >= 0.8, (matched, total)
    print(f"int8 agrees with fp32 on {matched}/{total} boxes")

    ratio = result.path.stat().st_size / model.backend.path.stat().st_size
    print(f"int8/fp32 size {ratio:.3f}, pre-processed {result.pre_processed}: {result.pre_process_error}")
    # int8 weights are 0.25x; int32 biases, per-channel scales and ~950 Q/DQ nodes' protos (0.4 MB)
    # weigh a lot on a 0.9 M-parameter model: measured 0.41x.
    assert ratio <= 0.45, ratio


def test_yolox_dynamic_int8_size(asset, tmp_path):
    source = asset(YOLOX)
    out = quantize_dynamic_int8(source, tmp_path / "yolox_dyn.onnx")
    assert out.stat().st_size <= 0.35 * source.stat().st_size


def test_accuracy_aware_impossible_tolerance_excludes_measured_parts(yolox_int8, asset, val8, tmp_path):
    model, _ = yolox_int8
    gt = json.loads(asset(GT).read_text(encoding="utf-8"))
    names = {Path(p).name for p in val8}
    images = [img for img in gt["images"] if img["file_name"] in names]
    ids = {img["id"] for img in images}
    subset = {
        **gt,
        "images": images,
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
    }
    assert len(images) == 8

    calib = sorted(asset("coco/images/train2017").glob("*.jpg"))[:8]
    messages: list[str] = []
    report = quantize_accuracy_aware(
        model,
        calib,
        val8,
        subset,
        tmp_path / "aa.onnx",
        max_map_drop=-1.0,  # impossible: every attempt is made and reported
        initial_segments=2,
        max_measurements=8,
        max_attempts=7,
        sensitive_as="float",
        progress=messages.append,
        methods=("minmax",),
        confirm=False,
    )
    assert report.met_tolerance is False and report.kept_as == "float"
    reasons = [a.reason for a in report.attempts]
    head_reason = "detection head in float (last 3 convolutions and the decode tail)"
    # the first step compares the calibrations; every later attempt uses the better one
    better = max(report.attempts[:2], key=lambda a: a.map_50_95)
    ranges = "moving-average ranges" if better.moving_average else "min/max ranges"
    assert reasons[:3] == [
        "everything int8, min/max ranges",
        "everything int8, moving-average ranges",
        f"{head_reason}, {ranges}",
    ]
    assert 5 <= len(report.attempts) <= 7  # 3, then one attempt per measured segment that is not kept already
    assert [a.moving_average for a in report.attempts[:2]] == [False, True]
    assert all(a.moving_average == better.moving_average for a in report.attempts[2:])
    assert report.attempts[0].excluded_count == report.attempts[1].excluded_count == 0
    head = report.attempts[2].excluded_nodes
    # the decode tail up to the output, and prediction convolutions (which level's comes last
    # depends on the order quant_pre_process writes the graph in)
    assert "/head/Transpose" in head and "/head/Concat_6" in head
    assert sum("_preds." in name and name.endswith("/Conv") for name in head) >= 2
    # sensitivity-driven steps keep a growing set of measured segments in float
    assert set(report.attempts[3].excluded_nodes) < set(report.attempts[4].excluded_nodes)
    drops = [drop for _, _, drop in report.sensitivity]
    assert drops == sorted(drops, reverse=True) and len(drops) >= 2
    # the measured culprit is the input end, as found by hand (0.27 -> 0.40 mAP when kept in float)
    stem = {"SpaceToDepth", "/backbone/backbone/dark2/dark2.0/dconv/conv/Conv"}
    assert stem & set(report.attempts[3].excluded_nodes), report.sensitivity[:3]
    assert report.attempts[3].map_50_95 > report.attempts[0].map_50_95 + 0.05
    assert any(m.startswith("only ") for m in messages) and len(messages) > 5

    # nothing met the tolerance: the smallest drop plus its measured margin is kept
    for a in report.attempts:
        assert a.spread is not None and a.margin == pytest.approx(margin_for(a.spread))
    best = min(report.attempts, key=lambda a: (report.fp32_map - a.map_50_95 + a.margin, a.excluded_count))
    assert report.int8_map == best.map_50_95 and report.excluded_nodes == best.excluded_nodes
    assert report.margin == best.margin and report.spread == best.spread
    assert [a.path for a in report.attempts].count(report.path) == 1
    assert report.path.is_file() and report.spec_path.is_file()
    assert report.int8_size_bytes == report.path.stat().st_size
    assert report.fp32_size_bytes == model.backend.path.stat().st_size
    assert 0.2 < report.fp32_map < 0.7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".quant-")]  # scratch removed
    print(report.summary(), [(a.reason, round(a.map_50_95, 4)) for a in report.attempts])


def test_accuracy_aware_size_budget_puts_segments_back(yolox_int8, asset, val8, tmp_path):
    model, _ = yolox_int8
    calib = sorted(asset("coco/images/train2017").glob("*.jpg"))[:4]
    report = quantize_accuracy_aware(
        model,
        calib,
        val8[:4],
        asset(GT),
        tmp_path / "aa.onnx",
        max_map_drop=-1.0,
        moving_average=True,
        initial_segments=2,
        max_measurements=2,
        max_attempts=4,
        max_size_ratio=0.3,  # below what even full int8 weighs: no attempt fits
        sensitive_as="float",
        methods=("minmax",),
        confirm=False,
    )
    assert report.met_tolerance is False
    sizes = [a.size_bytes / report.fp32_size_bytes for a in report.attempts]
    assert all(ratio > 0.3 for ratio in sizes), sizes
    # nothing fits, so no segment stays in float for the next attempt (an over-budget segment's
    # halves may be tried after it, never the segment plus more)
    assert len(report.attempts) >= 3
    segments = [set(a.excluded_nodes) for a in report.attempts[2:]]
    assert all(not a <= b for i, a in enumerate(segments) for b in segments[i + 1 :])
    assert report.path.is_file()


def test_int16_activation_nodes_tiny(tiny, tmp_path):
    model_path, calib = tiny
    model = load_model(model_path)
    out = tmp_path / "a16.onnx"
    quantize_static_int8(model, calib, out, int16_activation_nodes=["conv1", "relu1"])
    graph = onnx.load(str(out)).graph
    zero_points = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sixteen = [n for n in graph.node if n.op_type == "QuantizeLinear" and zero_points[n.input[2]].dtype == np.uint16]
    eight = [n for n in graph.node if n.op_type == "QuantizeLinear" and zero_points[n.input[2]].dtype == np.uint8]
    assert sixteen and all(n.domain == "com.microsoft" for n in sixteen)  # 16-bit Q/DQ before opset 21
    assert eight  # conv2's output stays 8-bit
    weights = [t for t in graph.initializer if numpy_helper.to_array(t).dtype == np.int8 and len(t.dims) == 4]
    assert len(weights) >= 2  # both convolutions keep int8 weights
    tensor = preprocess(cv2.imread(str(calib[0])), model.input_hw, model.preprocess)[0][None]
    reference = run_onnx(model_path, tensor)
    spread = float(reference.max() - reference.min())
    assert np.abs(run_onnx(out, tensor) - reference).max() <= 0.05 * spread

    with pytest.raises(OptimizationError, match="no nodes named"):
        quantize_static_int8(model, calib, tmp_path / "bad.onnx", int16_activation_nodes=["nope"])


def test_int16_activations_take_full_minmax_ranges(tiny, tmp_path):
    """Moving-average ranges help 8 bits and only clip at 16: with ``int16_ranges`` the 16-bit
    tensors get the extremes over the calibration images, checked against NumPy's min/max."""
    model_path, calib = tiny
    model = load_model(model_path)
    reader = ImageCalibrationReader(model, calib)
    ranges = minmax_ranges(model, reader)
    graph = onnx.load(str(model_path))
    graph.graph.output.append(helper.make_tensor_value_info("r1", onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    tensors = [preprocess(cv2.imread(str(p)), model.input_hw, model.preprocess)[0][None] for p in calib]
    relu = np.concatenate([session.run(["r1"], {"images": t})[0].ravel() for t in tensors])
    assert ranges["r1"] == pytest.approx((0.0, float(relu.max())), rel=1e-5)

    def r1_scale(path: Path) -> float:
        quantized = onnx.load(str(path)).graph
        producers = {o: n for n in quantized.node for o in n.output}
        values = {t.name: numpy_helper.to_array(t) for t in quantized.initializer}
        dequantize = producers[next(n for n in quantized.node if n.name == "conv2").input[0]]
        assert values[dequantize.input[2]].dtype == np.uint16
        return float(values[dequantize.input[1]])

    nodes = ["conv1", "relu1"]
    full = quantize_static_int8(
        model, reader, tmp_path / "full.onnx", moving_average=True, int16_activation_nodes=nodes, int16_ranges=ranges
    )
    averaged = quantize_static_int8(
        model, reader, tmp_path / "avg.onnx", moving_average=True, int16_activation_nodes=nodes
    )
    assert r1_scale(full.path) == pytest.approx(float(relu.max()) / 65535, rel=1e-4)
    assert r1_scale(averaged.path) < r1_scale(full.path) * 0.99  # the moving average clipped


def test_nothing_is_written_to_the_working_directory(tiny, tmp_path, monkeypatch):
    # onnxruntime's symbolic shape inference dumps sym_shape_infer_temp.onnx (+ data) into the
    # working directory when it gives up; that must land in scratch space, not the user's folder
    model_path, calib = tiny
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    quantize_static_int8(load_model(model_path), calib, tmp_path / "out" / "q.onnx")
    quantize_dynamic_int8(model_path, tmp_path / "out" / "d.onnx")
    assert list(cwd.iterdir()) == []
    assert Path.cwd() == cwd


def test_accuracy_aware_chooses_on_one_part_and_confirms_on_the_other(yolox_int8, asset, val8, tmp_path):
    """The loop's figures on each part equal pycocotools' scores of separately run pipelines on
    exactly those images; percentile calibration is among those compared; the constant margin
    applies; the two parts are disjoint and reported."""
    from visionpipe import Pipeline
    from visionpipe.evaluation import evaluate_coco, split_images

    model, _ = yolox_int8
    calib = sorted(asset("coco/images/train2017").glob("*.jpg"))[:4]
    messages: list[str] = []
    report = quantize_accuracy_aware(
        model,
        calib,
        val8,
        asset(GT),
        tmp_path / "aa.onnx",
        max_map_drop=0.5,
        margin=0.49,  # attempts must be within 0.01 on the choosing part
        max_attempts=2,  # the calibrations are compared, nothing more
        methods=("minmax", "percentile"),
        moving_average=False,
        seed=5,
        progress=messages.append,
    )
    assert report.margin == 0.49 and report.val_images == 4 and report.confirm_images == 4
    assert all(a.margin == 0.49 and a.spread is None for a in report.attempts)  # a number: no bootstrap
    reasons = [a.reason for a in report.attempts]
    drops = [report.fp32_map - a.map_50_95 for a in report.attempts]
    if drops[0] <= 0.01:  # within max_map_drop - margin at once: no other calibration needed
        assert reasons == ["everything int8, min/max ranges"] and report.met_tolerance
    elif drops[1] <= 0.01:
        assert reasons == ["everything int8, min/max ranges", "everything int8, percentile ranges"]
        assert report.met_tolerance and report.int8_map == report.attempts[1].map_50_95
    else:  # then the last resort, with the better calibration
        better = "min/max" if drops[0] <= drops[1] else "percentile"
        assert reasons == [
            "everything int8, min/max ranges",
            "everything int8, percentile ranges",
            f"every activation 16-bit (int8 weights), {better} ranges",
        ]
        assert report.met_tolerance == (drops[2] <= 0.01)
        if not report.met_tolerance:  # a constant margin: the smallest drop is kept
            assert report.int8_map == max(a.map_50_95 for a in report.attempts)
    choose, confirm = split_images(8, 5)
    assert report.choose_image_names == [Path(val8[i]).name for i in choose]
    assert report.confirm_image_names == [Path(val8[i]).name for i in confirm]
    assert not set(report.choose_image_names) & set(report.confirm_image_names)
    assert sorted(report.choose_image_names + report.confirm_image_names) == sorted(Path(p).name for p in val8)
    for rows, fp32, int8 in (
        (choose, report.fp32_map, report.int8_map),
        (confirm, report.confirm_fp32_map, report.confirm_int8_map),
    ):
        images = [val8[i] for i in rows]
        with Pipeline(model.backend.path, family="yolox", conf=0.01) as pipe:
            assert evaluate_coco(pipe.run(images), asset(GT), pipe.class_names).map_50_95 == pytest.approx(fp32)
        with Pipeline(str(report.path), conf=0.01) as pipe:
            assert evaluate_coco(pipe.run(images), asset(GT), pipe.class_names).map_50_95 == pytest.approx(int8)
    assert report.confirmed == (report.confirm_map_drop <= 0.5)
    assert "confirming part (4 unseen images)" in report.summary()
    assert any("confirming part" in m for m in messages)


def test_accuracy_aware_measured_margin_and_last_resort(yolox_int8, asset, val8, tmp_path):
    """With the default margin each attempt must leave its bootstrap margin free, recomputed here
    from separately run pipelines; when nothing is within tolerance the last resort (every
    activation 16-bit) is made whatever the attempt budget, and the smallest drop + margin kept."""
    from visionpipe.evaluation import evaluate_coco, image_ids_of, load_annotations, split_images

    model, _ = yolox_int8
    calib = sorted(asset("coco/images/train2017").glob("*.jpg"))[:4]
    report = quantize_accuracy_aware(
        model,
        calib,
        val8,
        asset(GT),
        tmp_path / "aa.onnx",
        max_map_drop=-1.0,  # impossible: the last resort is made, and nothing is met
        max_attempts=1,
        methods=("minmax",),
        moving_average=False,
        resamples=30,
        seed=2,
    )
    reasons = [a.reason for a in report.attempts]
    assert reasons == ["everything int8, min/max ranges", "every activation 16-bit (int8 weights), min/max ranges"]
    assert report.met_tolerance is False and report.kept_as == "int16"
    assert all(a.size_bytes <= 0.35 * report.fp32_size_bytes for a in report.attempts)  # int8 weights both
    chosen = min(report.attempts, key=lambda a: (report.fp32_map - a.map_50_95 + a.margin, a.excluded_count))
    assert report.int8_map == chosen.map_50_95 and report.margin == chosen.margin
    # the chosen attempt's spread, recomputed from the pipeline's detections on the choosing part
    gt = load_annotations(asset(GT))
    choose = [val8[i] for i in split_images(8, 2)[0]]
    with Pipeline(model.backend.path, family="yolox", conf=0.01) as pipe:
        fp32 = evaluate_coco(pipe.run(choose), gt, pipe.class_names)
    with Pipeline(str(report.path), conf=0.01) as pipe:
        int8 = evaluate_coco(pipe.run(choose), gt, pipe.class_names)
    reference = ResampledScores(fp32.detections, gt, image_ids_of(choose, gt), resamples=30, seed=2)
    assert report.spread == pytest.approx(reference.drop_spread(int8.detections))
    assert report.margin == pytest.approx(margin_for(report.spread)) and report.spread > 0
    assert report.confirm_spread is not None and report.confirm_spread >= 0
    assert f"less margin {report.margin:.4f}" in report.summary()
