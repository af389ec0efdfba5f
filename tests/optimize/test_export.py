"""Export and graph tools: PyTorch export, dynamic batch, onnxslim, and the optional-extra paths."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionpipe.errors import BackendUnavailableError, MissingExtraError
from visionpipe.models.backends.onnxruntime import OnnxRuntimeBackend
from visionpipe.models.loader import load_model
from visionpipe.optimize import OptimizationError
from visionpipe.optimize import convert as export_module  # build_tensorrt_engine lives there
from visionpipe.optimize.export import (
    BATCH_DIM,
    FixedBatchError,
    batch_pinning_reshapes,
    build_tensorrt_engine,
    export_torch,
    make_batch_dynamic,
    simplify,
    to_openvino,
)
from visionpipe.pipeline import Pipeline
from visionpipe.preprocess import preprocess

# Outputs of the same graph on the same input, batched or not, simplified or not, differ by
# float32 rounding only (~1e-6 relative); these bounds are far above that and far below any wrong
# graph (a mixed-up sample or a dropped op changes outputs by O(1)).
ATOL, RTOL = 1e-4, 1e-3
META = {"author": "visionpipe-tests", "names": "{0: 'a', 1: 'b'}"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dims(value) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def conv_graph(path: Path, tail: list, out_shape: list, extra_inits=(), value_info=(), batch=1) -> Path:
    """Conv(3->4, 3x3) on a [batch, 3, 8, 8] input, then ``tail`` nodes producing ``y``."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b"),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        *tail,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
        value_info=list(value_info),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, META)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def shape_const(name: str, values: list[int]):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


# ------------------------------------------------------------------------------ PyTorch export


def small_net(torch):
    """Conv-BN-SiLU stem and two heads: a (B, 6, H*W/4) 'detections' tensor and a feature map."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
                torch.nn.BatchNorm2d(8),
                torch.nn.SiLU(),
            )
            self.boxes = torch.nn.Conv2d(8, 6, 1)
            self.feat = torch.nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            y = self.stem(x)
            return self.boxes(y).flatten(2).sigmoid(), self.feat(y)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # non-trivial BN statistics, so eval vs train mode would show
        net.stem[1].running_mean.uniform_(-0.5, 0.5)
        net.stem[1].running_var.uniform_(0.5, 2.0)
    return net


def test_export_torch_round_trip_dynamic_batch(tmp_path):
    torch = pytest.importorskip("torch")
    # export must trace in eval mode and restore training mode afterwards
    net = small_net(torch).train()
    result = export_torch(net, tmp_path / "net.onnx", (1, 3, 64, 64), output_names=["dets", "feat"])

    assert net.training
    assert result.path.is_file() and result.exporter == "torchscript" and result.verified
    assert set(result.max_abs_diff) == {1, 3} and max(result.max_abs_diff.values()) <= ATOL
    model = onnx.load(str(result.path))
    assert model.opset_import[0].version == 17
    assert dims(model.graph.input[0]) == [BATCH_DIM, 3, 64, 64] and model.graph.input[0].name == "images"
    assert [o.name for o in model.graph.output] == ["dets", "feat"]

    # independently of the built-in check: batch 1 and 4 in onnxruntime against torch
    net.eval()
    for batch in (1, 4):
        x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(10 + batch))
        with torch.no_grad():
            want = [t.numpy() for t in net(x)]
        got = run(result.path, x.numpy())
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.shape[0] == batch
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=RTOL)

    backend = OnnxRuntimeBackend(result.path)
    assert backend.fixed_batch is None and backend.input_hw == (64, 64)
    outputs = backend.run(np.random.default_rng(0).random((5, 3, 64, 64), dtype=np.float32))
    assert [o.shape for o in outputs] == [(5, 6, 1024), (5, 4, 32, 32)]


def test_export_torch_fixed_batch_and_default_names(tmp_path):
    torch = pytest.importorskip("torch")
    result = export_torch(
        small_net(torch),
        tmp_path / "fixed.onnx",
        (2, 3, 32, 32),
        dynamic_batch=False,
        opset=13,
    )
    assert set(result.max_abs_diff) == {2} and result.output_names == [
        "output0",
        "output1",
    ]
    model = onnx.load(str(result.path))
    assert dims(model.graph.input[0]) == [2, 3, 32, 32] and model.opset_import[0].version == 13
    assert OnnxRuntimeBackend(result.path).fixed_batch == 2


def test_export_torch_traced_fixed_batch_is_caught_and_nothing_written(tmp_path):
    torch = pytest.importorskip("torch")

    class FlattensBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x).view(1, 4, -1)  # the literal 1 is traced into the graph

    out = tmp_path / "bad.onnx"
    with pytest.raises(OptimizationError, match="batch 3.*fixes the batch at 1"):
        export_torch(FlattensBatch(), out, (1, 3, 16, 16))
    # no partial file left behind either
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_torch_without_torch_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"visionpipe\[torch\]") as info:
        export_torch(object(), tmp_path / "x.onnx", (1, 3, 8, 8))
    assert info.value.package == "torch" and isinstance(info.value, ImportError)


# ------------------------------------------------------------------------ dynamic batch, synthetic


def test_make_batch_dynamic_synthetic_keeps_metadata_and_source(tmp_path):
    pinned_info = helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 8, 8])
    source = conv_graph(
        tmp_path / "flat.onnx",
        [helper.make_node("Flatten", ["c"], ["y"], name="flatten", axis=1)],
        [1, 256],
        value_info=[pinned_info],
    )
    before = sha256(source)
    result = make_batch_dynamic(source, tmp_path / "out" / "flat_dyn.onnx")

    assert sha256(source) == before
    assert (result.source_batch, result.already_dynamic) == (1, False)
    assert (
        result.inputs_changed,
        result.outputs_changed,
        result.value_info_cleared,
    ) == (["x"], ["y"], 1)
    assert result.verified and result.max_abs_diff is not None and result.max_abs_diff <= ATOL
    model = onnx.load(str(result.path))
    assert dims(model.graph.input[0])[0] == BATCH_DIM and dims(model.graph.output[0])[0] == BATCH_DIM
    assert {p.key: p.value for p in model.metadata_props} == META
    assert len(model.graph.value_info) == 0
    onnx.checker.check_model(model, full_check=True)
    (y,) = run(result.path, np.zeros((5, 3, 8, 8), np.float32))
    assert y.shape == (5, 256)


@pytest.mark.parametrize(
    ("shape", "how"),
    [
        # the element count is fixed: a batch of 8 cannot be reshaped
        ([1, 4, 64], "fails"),
        # runs, but folds the batch into the -1: one row of 8x the length
        ([1, -1], "differs"),
    ],
)
def test_hard_coded_batch_reshape_is_a_typed_error_naming_the_node(tmp_path, shape, how):
    out_shape = [1, 256] if -1 in shape else shape
    source = conv_graph(
        tmp_path / "pinned.onnx",
        [helper.make_node("Reshape", ["c", "target"], ["y"], name="head_reshape")],
        out_shape,
        extra_inits=[shape_const("target", shape)],
    )
    out = tmp_path / "pinned_dyn.onnx"
    with pytest.raises(FixedBatchError, match=f"fixes the batch size at 1, .*{how}.*head_reshape") as info:
        make_batch_dynamic(source, out)
    assert isinstance(info.value, OptimizationError)
    assert info.value.nodes[0] == ("head_reshape", "Reshape", shape)
    assert not out.exists()
    assert batch_pinning_reshapes(source) == [("head_reshape", "Reshape", shape)]


def test_declared_dynamic_but_pinned_inside_is_caught(tmp_path):
    source = conv_graph(
        tmp_path / "lies.onnx",
        [helper.make_node("Reshape", ["c", "target"], ["y"], name="flat")],
        [BATCH_DIM, 256],
        extra_inits=[shape_const("target", [1, -1])],
        batch=BATCH_DIM,
    )
    with pytest.raises(FixedBatchError, match="declares a dynamic batch.*'flat'"):
        make_batch_dynamic(source, tmp_path / "out.onnx")


def test_unbatched_outputs_refused_even_without_verification(tmp_path):
    # like NanoDet's [1600, 80] outputs: the batch axis is gone from the outputs
    source = conv_graph(
        tmp_path / "nobatch.onnx",
        [helper.make_node("Reshape", ["c", "target"], ["y"], name="drop_batch")],
        [4, 64],
        extra_inits=[shape_const("target", [4, -1])],
    )
    with pytest.raises(FixedBatchError, match="no output has a leading batch axis"):
        make_batch_dynamic(source, tmp_path / "out.onnx", verify=False)
    assert not (tmp_path / "out.onnx").exists()


def test_batch_preserving_reshapes_are_not_reported(tmp_path):
    source = conv_graph(
        tmp_path / "ok.onnx",
        [helper.make_node("Reshape", ["c", "target"], ["y"], name="keeps_batch")],
        [1, 4, 64],
        # 0 copies the batch from the input
        extra_inits=[shape_const("target", [0, 4, -1])],
    )
    assert batch_pinning_reshapes(source) == []
    assert make_batch_dynamic(source, tmp_path / "ok_dyn.onnx").max_abs_diff <= ATOL


def test_make_batch_dynamic_refusals(tmp_path):
    source = conv_graph(tmp_path / "m.onnx", [helper.make_node("Relu", ["c"], ["y"])], [1, 4, 8, 8])
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        make_batch_dynamic(source, source)
    with pytest.raises(OptimizationError, match="file not found"):
        make_batch_dynamic(tmp_path / "missing.onnx", tmp_path / "o.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OptimizationError, match="not a readable ONNX model"):
        make_batch_dynamic(tmp_path / "junk.onnx", tmp_path / "o.onnx")
    with pytest.raises(ValueError, match="verify_batch"):
        make_batch_dynamic(source, tmp_path / "o.onnx", verify_batch=1)


# --------------------------------------------------------------------------- dynamic batch, real


@pytest.fixture(scope="module")
def yolox_dynamic(asset, tmp_path_factory):
    source = asset("models/yolox_nano_416_coco.onnx")
    before = sha256(source)
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:8]
    model = load_model(source, family="yolox")
    samples = np.stack([preprocess(cv2.imread(str(p)), model.input_hw, model.preprocess)[0] for p in photos])
    out = tmp_path_factory.mktemp("dyn") / "yolox_dyn.onnx"
    result = make_batch_dynamic(source, out, verify_batch=8, samples=samples)
    assert sha256(source) == before
    return source, result, photos


@pytest.mark.real
def test_yolox_batch_made_dynamic_batch_of_8_equals_8_singles(yolox_dynamic):
    _, result, _ = yolox_dynamic
    assert (result.source_batch, result.inputs_changed, result.outputs_changed) == (
        1,
        ["images"],
        ["output"],
    )
    assert result.verified and result.verify_batch == 8 and result.max_abs_diff <= ATOL
    backend = OnnxRuntimeBackend(result.path)
    assert backend.fixed_batch is None and backend.input_hw == (416, 416)


@pytest.mark.real
def test_pipeline_really_batches_with_the_dynamic_yolox(yolox_dynamic, monkeypatch):
    source, result, photos = yolox_dynamic
    fixed = load_model(source, family="yolox")
    dynamic = load_model(result.path, family="yolox")
    seen: list[int] = []
    forward = dynamic.backend.forward

    def counting_forward(tensor):
        seen.append(len(tensor))
        return forward(tensor)

    monkeypatch.setattr(dynamic.backend, "forward", counting_forward)
    with Pipeline(dynamic, conf=0.3, batch_size=4, concurrency=1) as pipe:
        batched = pipe.run(photos)
    with Pipeline(fixed, conf=0.3, batch_size=4, concurrency=1) as pipe:
        reference = pipe.run(photos)

    assert seen == [4, 4]  # two real batches of 4, no fallback to single runs
    assert all(r.ok for r in batched + reference)
    assert sum(len(r.detections) for r in reference) > 0
    for got, want in zip(batched, reference):
        assert np.array_equal(got.detections.class_id, want.detections.class_id)
        np.testing.assert_allclose(got.detections.xyxy, want.detections.xyxy, atol=1e-2)
        np.testing.assert_allclose(got.detections.confidence, want.detections.confidence, atol=ATOL)


@pytest.mark.real
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        # channel shuffle written with batch 1
        ("nanodet_m_320_coco.onnx", [1, 2, 58, 40, 40]),
        # channel shuffle as (batch * 48 / 2, 2, h * w)
        ("fastestdet_352_coco.onnx", [24, 2, 1936]),
    ],
)
def test_real_fixed_batch_detectors_are_refused_naming_the_reshape(asset, tmp_path, name, shape):
    out = tmp_path / "dyn.onnx"
    with pytest.raises(FixedBatchError, match="fixes the batch size at 1, .*Reshape_13") as info:
        make_batch_dynamic(asset(f"models/{name}"), out)
    assert info.value.nodes[0] == ("Reshape_13", "Reshape", shape)
    assert not out.exists()


@pytest.mark.real
def test_already_dynamic_model_is_copied_unchanged(asset, tmp_path):
    source = asset("models/yolov8n_random_dynamic.onnx")
    result = make_batch_dynamic(source, tmp_path / "v8.onnx", verify_batch=2)
    assert result.already_dynamic and result.source_batch is None
    assert result.inputs_changed == [] and result.max_abs_diff <= ATOL
    assert sha256(result.path) == sha256(source)  # metadata and all


# ------------------------------------------------------------------------------------ simplify


@pytest.mark.real
def test_simplify_yolox_keeps_outputs_and_shrinks_graph(asset, tmp_path):
    source = asset("models/yolox_nano_416_coco.onnx")
    result = simplify(source, tmp_path / "slim.onnx")
    assert result.nodes_after <= result.nodes_before and result.nodes_removed == 416 - result.nodes_after
    assert result.max_abs_diff <= ATOL
    photo = min(asset("coco/images/val2017").glob("*.jpg"))
    model = load_model(source, family="yolox")
    x = preprocess(cv2.imread(str(photo)), model.input_hw, model.preprocess)[0][None]
    np.testing.assert_allclose(run(result.path, x)[0], run(source, x)[0], atol=ATOL, rtol=RTOL)


def test_simplify_folds_constants_and_keeps_metadata(tmp_path):
    source = conv_graph(
        tmp_path / "fold.onnx",
        [
            # foldable: constants only
            helper.make_node("Add", ["k1", "k2"], ["k"], name="const_add"),
            helper.make_node("Add", ["c", "k"], ["y"], name="bias"),
        ],
        [1, 4, 8, 8],
        extra_inits=[
            numpy_helper.from_array(np.full((1, 4, 1, 1), 0.5, np.float32), "k1"),
            numpy_helper.from_array(np.full((1, 4, 1, 1), 0.25, np.float32), "k2"),
        ],
    )
    result = simplify(source, tmp_path / "fold_slim.onnx")
    assert result.nodes_before == 3 and result.nodes_after < 3
    assert {p.key: p.value for p in onnx.load(str(result.path)).metadata_props} == META
    with pytest.raises(OptimizationError, match="refusing to overwrite"):
        simplify(source, source)


# ------------------------------------------------------------------------------- optional extras


def test_openvino_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingExtraError, match=r"OpenVINO IR conversion.*visionpipe\[openvino\]"):
        to_openvino(tmp_path / "m.onnx", tmp_path / "ir")


def test_tensorrt_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingExtraError, match=r"TensorRT engine build.*visionpipe\[tensorrt\]"):
        build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / "m.engine")


def test_tensorrt_without_gpu_is_backend_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(export_module, "_cuda_device_count", lambda: 0)
    with pytest.raises(BackendUnavailableError, match="NVIDIA GPU"):
        build_tensorrt_engine(tmp_path / "m.onnx", tmp_path / "m.engine")
