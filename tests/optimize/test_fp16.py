"""Float16 conversion: tiny graphs for the mechanics and failure paths, YOLOX-Nano and NanoDet-m for accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.optimize.tiny_graphs import (
    HW,
    ULTRALYTICS_META,
    save_graph,
    sha256,
)
from visionpipe.errors import UnknownOutputLayoutError
from visionpipe.geometry import box_iou
from visionpipe.models.loader import load_model
from visionpipe.optimize.fp16 import (
    FP16_UNSAFE_OPS,
    Fp16Conversion,
    convert_fp16,
    default_op_block_list,
    fp16_speed_note,
)
from visionpipe.optimize.quantize import OptimizationError
from visionpipe.pipeline import Pipeline


def tiny_detector(
    path: Path,
    metadata: dict[str, str] | None = ULTRALYTICS_META,
    out_shape=(1, 64, HW * HW),
) -> Path:
    """Conv(3->64) + Relu + MaxPool(2) + Resize(x2) + Conv(64->64), reshaped to ``out_shape``
    (the YOLOv8 layout by default). Seeded random weights; the Resize is there because fp16 must
    keep it in float32."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.05, (64, 64, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, 64).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p1", "", "scales"], ["u1"], name="upsample", mode="nearest"),
        helper.make_node("Conv", ["u1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c2", "shape"], ["output0"], name="reshape"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(bias, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(bias.copy(), "b2"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array(out_shape, np.int64), "shape"),
    ]
    return save_graph(path, nodes, inits, list(out_shape), metadata)


def overflowing_model(path: Path) -> Path:
    """y = (x * 300) * (x * 300): fine in float32, inf in float16 once x > 0.85 (65504 = 255.9**2)."""
    nodes = [
        helper.make_node("Mul", ["images", "k"], ["scaled"], name="scale"),
        helper.make_node("Mul", ["scaled", "scaled"], ["output0"], name="square"),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, HW, HW])],
        initializer=[numpy_helper.from_array(np.array(300.0, np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def io_types(path: Path) -> tuple[list[str], list[str]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [i.type for i in session.get_inputs()], [o.type for o in session.get_outputs()]


def float_inputs_of(path: Path, op_type: str) -> list[int]:
    """The element types of the data input of every ``op_type`` node, from the graph's own type info."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.input)}
    return [types[n.input[0]] for n in model.graph.node if n.op_type == op_type]


# ---------------------------------------------------------------------------------- mechanics


def test_tiny_from_path_halves_weights_keeps_float_io_resize_and_metadata(tmp_path):
    source = tiny_detector(tmp_path / "tiny.onnx")
    before = sha256(source)
    result = convert_fp16(source, tmp_path / "out" / "tiny_fp16.onnx")
    assert sha256(source) == before
    assert isinstance(result, Fp16Conversion) and Path(result) == result.path

    assert io_types(result.path) == (["tensor(float)"], ["tensor(float)"])
    weights = {t.name: t.data_type for t in onnx.load(str(result.path)).graph.initializer}
    assert weights["w1"] == weights["w2"] == TensorProto.FLOAT16
    assert weights["scales"] == TensorProto.FLOAT  # Resize's scales stay float32
    assert float_inputs_of(result.path, "Resize") == [TensorProto.FLOAT]
    assert float_inputs_of(result.path, "Conv") == [TensorProto.FLOAT16] * 2
    assert result.blocked_op_types == ["Resize"] and result.float_nodes == 1
    assert result.op_block_list == default_op_block_list()
    assert result.size_bytes == result.path.stat().st_size
    assert result.source_size_bytes == source.stat().st_size
    assert 0.45 < result.size_ratio < 0.6, result.size_ratio

    # Ultralytics metadata is carried over and the path was configured from it, so a spec is written
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert {k: meta.get(k) for k in ULTRALYTICS_META} == ULTRALYTICS_META
    assert result.spec_path == result.path.with_suffix(".yaml") and result.spec_path.is_file()
    assert load_model(result.path).class_names == load_model(source).class_names

    # checked against float32 on the synthetic input: random weights, two layers of fp16 rounding
    assert result.max_relative_error is not None and result.max_relative_error < 0.01
    assert not list(result.path.parent.glob(".*partial*"))  # staging file moved into place


def test_default_block_list_and_speed_note():
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    blocked = default_op_block_list()
    assert set(DEFAULT_OP_BLOCK_LIST) <= set(blocked) and set(FP16_UNSAFE_OPS) <= set(blocked)
    assert {"Resize", "Exp"} <= set(blocked) and blocked == sorted(blocked)
    assert "no speed-up on CPU" in fp16_speed_note(["CPUExecutionProvider"])
    assert fp16_speed_note(["AzureExecutionProvider", "CPUExecutionProvider"]) is not None
    assert fp16_speed_note(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None


def test_bare_model_without_a_family_converts_without_spec(tmp_path):
    source = tiny_detector(tmp_path / "plain.onnx", metadata=None, out_shape=(1, 64 * HW * HW))
    with pytest.raises(UnknownOutputLayoutError):
        load_model(source)  # no decoder family fits: the reason no spec can be written
    result = convert_fp16(source, tmp_path / "plain_fp16.onnx")
    assert result.spec_path is None and not result.path.with_suffix(".yaml").exists()
    assert any("no sidecar spec written: not a detector" in note for note in result.notes), result.notes
    assert io_types(result.path) == (["tensor(float)"], ["tensor(float)"])


def test_keep_io_types_false_and_a_custom_block_list(tmp_path):
    source = tiny_detector(tmp_path / "tiny.onnx")
    result = convert_fp16(
        source,
        tmp_path / "tiny_fp16_io.onnx",
        keep_io_types=False,
        op_block_list=["Resize", "MaxPool"],
    )
    assert io_types(result.path) == (["tensor(float16)"], ["tensor(float16)"])
    assert result.blocked_op_types == ["MaxPool", "Resize"] and result.float_nodes == 2
    assert float_inputs_of(result.path, "MaxPool") == [TensorProto.FLOAT]
    assert result.max_relative_error < 0.01


# ---------------------------------------------------------------------------------- failures


def test_non_onnx_and_missing_files_are_typed_errors(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_text("definitely not protobuf \x00\xff", encoding="latin-1")
    with pytest.raises(
        OptimizationError,
        match=r"cannot convert .*model\.onnx to fp16: not a readable ONNX model",
    ):
        convert_fp16(fake, tmp_path / "out.onnx")
    with pytest.raises(OptimizationError, match="to fp16: file not found"):
        convert_fp16(tmp_path / "absent.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_out_path_equal_to_source_is_refused(tmp_path):
    source = tiny_detector(tmp_path / "tiny.onnx")
    before = sha256(source)
    model = load_model(source)
    for target in (source, tmp_path / "." / source.name):
        with pytest.raises(OptimizationError, match="refusing to overwrite"):
            convert_fp16(source, target)
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        convert_fp16(model, source)
    assert sha256(source) == before


def test_converter_failure_names_the_cause(tmp_path):
    first = convert_fp16(tiny_detector(tmp_path / "tiny.onnx"), tmp_path / "once.onnx")
    with pytest.raises(
        OptimizationError,
        match=r"cannot convert .*once\.onnx to fp16: .*already converted to float16",
    ):
        convert_fp16(first.path, tmp_path / "twice.onnx")
    assert not (tmp_path / "twice.onnx").exists()


def test_overflow_is_caught_by_the_check_and_leaves_nothing(tmp_path):
    source = overflowing_model(tmp_path / "overflow.onnx")
    out = tmp_path / "overflow_fp16.onnx"
    bright = np.full((HW, HW, 3), 200, np.uint8)  # (200 * 300)**2 = 3.6e9
    # onnxruntime's CPU provider runs these float16 Muls in float32, so the result's own output is
    # finite here; the check measures the float32 source's activations against float16's range
    with pytest.raises(
        OptimizationError,
        match=r"tensor 'output0' \(Mul\) reaches 3\.6e\+09 .* beyond float16's 65504",
    ):
        convert_fp16(source, out, check_image=bright)
    # blocking Mul computes it in float32, but its output is still handed on in float16: inf
    with pytest.raises(
        OptimizationError,
        match=r"output 'output0' of the converted model is not finite",
    ):
        convert_fp16(source, out, op_block_list=["Mul"], check_image=bright)
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    # check=False writes it anyway: the caller's risk
    assert convert_fp16(source, out, check=False).max_activation is None
    assert out.is_file()


# ---------------------------------------------------------------------------------- real models

VAL_PHOTOS = 8
# Agreement tolerances. Measured on the first 16 val2017 photos: every fp32 box with score > 0.3
# has an fp16 box of its class with IoU >= 0.982 and |score diff| <= 0.006 (YOLOX-Nano 73 boxes,
# NanoDet-m 85). The bounds below leave ~3x margin for other CPUs' kernels; a wrong conversion
# (Resize in fp16, broken casts, clamped weights) moves boxes by far more or drops them.
SCORE = 0.3  # fp32 boxes compared
SEARCH_SCORE = 0.25  # fp16 boxes searched (a box at 0.301 in fp32 may be 0.295 in fp16)
MIN_IOU = 0.9
MAX_SCORE_DIFF = 0.02

REAL = [
    ("models/yolox_nano_416_coco.onnx", "yolox"),
    ("models/nanodet_m_320_coco.onnx", "nanodet"),
]


@pytest.fixture(scope="module")
def val_photos(asset):
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:VAL_PHOTOS]
    assert len(photos) == VAL_PHOTOS
    return [str(p) for p in photos]


@pytest.fixture(scope="module", params=REAL, ids=[family for _, family in REAL])
def converted(request, asset, tmp_path_factory, val_photos):
    relative, family = request.param
    source = asset(relative)
    before = sha256(source)
    model = load_model(source, family=family)
    out = tmp_path_factory.mktemp(family) / f"{source.stem}_fp16.onnx"
    result = convert_fp16(model, out, check_image=val_photos[0])
    assert sha256(source) == before  # the original is never written
    return model, result


@pytest.mark.real
def test_real_fp16_detections_agree_with_fp32(converted, val_photos):
    model, result = converted
    # the sidecar spec alone configures it: no family, no flags
    with (
        Pipeline(model, conf=SCORE) as fp32,
        Pipeline(result.path, conf=SEARCH_SCORE) as fp16,
    ):
        assert fp16.model.family == model.family and fp16.model.input_hw == model.input_hw
        assert fp16.model.preprocess == model.preprocess and fp16.model.class_names == model.class_names
        want, got = fp32.run(val_photos), fp16.run(val_photos)
    ious, score_diffs = [], []
    for ref, out in zip(want, got):
        assert ref.ok and out.ok, (ref.error, out.error)
        for k in range(len(ref.detections)):
            same_class = out.detections.class_id == ref.detections.class_id[k]
            assert same_class.any(), f"{ref.source}: fp32 box {k} has no fp16 box of its class"
            overlap = box_iou(ref.detections.xyxy[k : k + 1], out.detections.xyxy[same_class])[0]
            best = int(overlap.argmax())
            ious.append(float(overlap[best]))
            score_diffs.append(abs(float(out.detections.confidence[same_class][best] - ref.detections.confidence[k])))
    assert len(ious) >= 20, len(ious)  # enough boxes to mean something
    print(
        f"{model.family}: {len(ious)} boxes, min IoU {min(ious):.4f}, max |score diff| {max(score_diffs):.4f}, "
        f"max relative output error {result.max_relative_error:.4f}, size {result.size_bytes}/{result.source_size_bytes}"
    )
    assert min(ious) > MIN_IOU and max(score_diffs) < MAX_SCORE_DIFF


@pytest.mark.real
def test_real_fp16_file_float_io_half_size_blocked_ops_reported(converted):
    model, result = converted
    source_ops = [n.op_type for n in onnx.load(str(model.backend.path)).graph.node]
    assert io_types(result.path)[0] == ["tensor(float)"]
    assert set(io_types(result.path)[1]) == {"tensor(float)"}
    # weights ~halve; Cast nodes and the unchanged graph structure weigh a little (0.51-0.52 measured)
    assert 0.45 < result.size_ratio < 0.56, result.size_ratio
    assert result.blocked_op_types == ["Resize"]
    assert result.float_nodes == source_ops.count("Resize") > 0
    assert result.retargeted_casts == 0 and result.casts_added > 0
    assert float_inputs_of(result.path, "Resize") == [TensorProto.FLOAT] * source_ops.count("Resize")
    assert result.spec_path == result.path.with_suffix(".yaml") and result.spec_path.is_file()
    # every element of every output, including empty cells (YOLOX box logits where nothing is),
    # so this is loose; the detection test above is the accuracy claim
    assert result.max_relative_error is not None and result.max_relative_error < 0.5
    # headroom below float16's 65504 for the tensors stored in float16 (measured: 211 / 10)
    print(f"{model.family}: largest float16 activation {result.max_activation:.4g}")
    assert result.max_activation is not None and result.max_activation < 1000
    if fp16_speed_note() is not None:  # a CPU-only onnxruntime, as in CI
        assert any("no speed-up on CPU" in note for note in result.notes)


@pytest.mark.real
def test_real_yolov8_layout_needs_the_cast_fix(asset, tmp_path):
    # The Ultralytics export casts int anchors to float; onnxconverter-common leaves those casts at
    # float32 while declaring their outputs float16, which onnxruntime refuses unless retargeted.
    source = asset("models/yolov8n_random_dynamic.onnx")
    result = convert_fp16(source, tmp_path / "yolov8n_fp16.onnx")
    assert result.retargeted_casts > 0
    assert set(result.blocked_op_types) == {"Range", "Resize"}
    assert io_types(result.path) == (["tensor(float)"], ["tensor(float)"])
    assert load_model(result.path).family == "yolov8"  # metadata carried over
    assert result.max_relative_error is not None and result.max_relative_error < 0.01
