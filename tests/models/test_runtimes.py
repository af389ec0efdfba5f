"""Runtimes chosen by data: every runtime reproduces ONNX Runtime's mAP of the same model.

One model (NanoDet-m 320, the cheapest of the assets) on the 64 val2017 dev photos, scored by
pycocotools: ONNX Runtime's figure is computed once per module and each runtime must land within
0.002 of it. The OpenVINO IR is the one ``to_openvino`` writes (with its sidecar spec); the
TorchScript model is made from the same ONNX file with onnx2torch and ``torch.jit.trace``; the NCNN
model is the one ``to_ncnn`` writes with pnnx (NanoDet-m, and YOLOX-Nano, whose Focus stem of
strided slices NCNN has no layer for until ``to_ncnn`` rewrites it).
"""

from __future__ import annotations

import sys
import types

import pytest

import visionpipe
from visionpipe import Pipeline
from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError
from visionpipe.evaluation import evaluate_coco
from visionpipe.models.backends import RUNTIMES, open_backend, register_runtime, runtime_for

MODEL = "models/nanodet_m_320_coco.onnx"
YOLOX = "models/yolox_nano_416_coco.onnx"
GT = "coco/annotations/instances_val2017_dev64.json"
TOLERANCE = 0.002


def score(spec, asset) -> tuple[float, float, list]:
    images = sorted(asset("coco/images/val2017").glob("*.jpg"))
    assert len(images) == 64
    with Pipeline(spec, conf=0.01, top_k=1000, max_det=300) as pipe:
        results = pipe.run(images, batch_size=4)
        runtime = pipe.model.backend.runtime
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    evaluation = evaluate_coco(results, asset(GT), pipe.model.class_names)
    return evaluation.map_50_95, evaluation.map_50, [runtime]


@pytest.fixture(scope="module")
def onnxruntime_map(asset):
    map_50_95, map_50, runtime = score({"model": asset(MODEL), "family": "nanodet"}, asset)
    assert runtime == ["onnxruntime"]
    assert map_50_95 == pytest.approx(0.317, abs=0.005)  # the MANIFEST's reference
    return map_50_95, map_50


@pytest.mark.real
def test_openvino_runs_the_ir_that_optimize_writes_at_onnxruntime_map(asset, tmp_path, onnxruntime_map):
    from visionpipe.optimize.export import to_openvino

    source = tmp_path / "nanodet.onnx"
    source.write_bytes(asset(MODEL).read_bytes())
    (tmp_path / "nanodet.yaml").write_text("model: nanodet.onnx\nfamily: nanodet\n")
    written = to_openvino(source, tmp_path / "ir")
    assert written.spec_path is not None and written.spec_path.is_file()

    map_50_95, map_50, runtime = score(written.path, asset)  # no flags: suffix + sidecar spec
    assert runtime == ["openvino"]
    assert map_50_95 == pytest.approx(onnxruntime_map[0], abs=TOLERANCE)
    assert map_50 == pytest.approx(onnxruntime_map[1], abs=TOLERANCE)


@pytest.mark.real
def test_openvino_runs_an_onnx_file_named_by_the_spec(asset, onnxruntime_map):
    map_50_95, _, runtime = score({"model": asset(MODEL), "family": "nanodet", "runtime": "openvino"}, asset)
    assert runtime == ["openvino"]
    assert map_50_95 == pytest.approx(onnxruntime_map[0], abs=TOLERANCE)


def _ncnn_copy(asset, tmp_path, model: str, family: str):
    """The model converted by ``to_ncnn`` from a copy with a sidecar spec (so its spec is written too)."""
    from visionpipe.optimize.export import to_ncnn

    source = tmp_path / "source.onnx"
    source.write_bytes(asset(model).read_bytes())
    (tmp_path / "source.yaml").write_text(f"model: source.onnx\nfamily: {family}\n")
    written = to_ncnn(source, tmp_path / "ncnn")
    assert written.spec_path is not None and written.spec_path.is_file()
    assert written.path.name == "source.ncnn.param" and written.bin_path.is_file()
    return written


@pytest.mark.real
def test_ncnn_runs_the_model_that_to_ncnn_writes_at_onnxruntime_map(asset, tmp_path, onnxruntime_map):
    written = _ncnn_copy(asset, tmp_path, MODEL, "nanodet")
    backend = open_backend(written.path)
    assert backend.runtime == "ncnn" and backend.fixed_batch == 1
    assert backend.input_hw == (320, 320)  # read from the .param's Input layer, no spec needed

    map_50_95, map_50, runtime = score(written.path, asset)  # no flags: suffix + sidecar spec
    assert runtime == ["ncnn"]
    assert map_50_95 == pytest.approx(onnxruntime_map[0], abs=TOLERANCE)
    assert map_50 == pytest.approx(onnxruntime_map[1], abs=TOLERANCE)


@pytest.mark.real
def test_ncnn_runs_yolox_nano_at_onnxruntime_map(asset, tmp_path):
    written = _ncnn_copy(asset, tmp_path, YOLOX, "yolox")
    assert written.rewritten_slices == 6  # the Focus stem: x[..., ::2, ::2] and its three siblings
    onnx_map, onnx_map_50, runtime = score({"model": asset(YOLOX), "family": "yolox"}, asset)
    assert runtime == ["onnxruntime"]
    assert onnx_map == pytest.approx(0.362, abs=0.005)  # the MANIFEST's reference

    map_50_95, map_50, runtime = score({"model": written.path, "family": "yolox", "runtime": "ncnn"}, asset)
    assert runtime == ["ncnn"]
    assert map_50_95 == pytest.approx(onnx_map, abs=TOLERANCE)
    assert map_50 == pytest.approx(onnx_map_50, abs=TOLERANCE)


def _importable_onnx2torch(monkeypatch):
    """onnx2torch imports torchvision for its NMS and RoIAlign converters, which NanoDet does not
    use. PyPI's torchvision wheel is built against the CUDA torch and fails to import beside the CPU
    build the test command installs ("operator torchvision::nms does not exist"); then a stand-in
    whose two ops refuse to run lets the converter load."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):

        def unavailable(*args, **kwargs):
            raise RuntimeError("torchvision is not usable beside this torch build")

        ops = types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = unavailable  # type: ignore[attr-defined]
        stand_in = types.ModuleType("torchvision")
        stand_in.ops = ops  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torchvision", stand_in)
        monkeypatch.setitem(sys.modules, "torchvision.ops", ops)
    from onnx2torch import convert

    return convert


@pytest.mark.real
def test_torchscript_model_reproduces_onnxruntime_map(asset, tmp_path, onnxruntime_map, monkeypatch):
    import onnx
    import torch

    convert = _importable_onnx2torch(monkeypatch)

    module = convert(onnx.load(str(asset(MODEL)))).eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.rand(1, 3, 320, 320) * 255, check_trace=False)
    path = tmp_path / "nanodet.torchscript"
    traced.save(str(path))

    backend = open_backend(path, input_size=(320, 320))
    assert backend.runtime == "torch"
    assert backend.fixed_batch == 1  # traced at batch 1: a Reshape pins it, found by probing
    assert [o.shape for o in backend.outputs] == [o.shape for o in open_backend(asset(MODEL)).outputs]

    spec = tmp_path / "nanodet.yaml"
    spec.write_text("model: nanodet.torchscript\nfamily: nanodet\ninput_size: 320\n")
    map_50_95, map_50, runtime = score(spec, asset)
    assert runtime == ["torch"]
    assert map_50_95 == pytest.approx(onnxruntime_map[0], abs=TOLERANCE)
    assert map_50 == pytest.approx(onnxruntime_map[1], abs=TOLERANCE)


def test_the_suffix_picks_the_runtime_and_a_name_overrides_it(tmp_path):
    assert runtime_for("m.onnx").name == "onnxruntime"
    assert runtime_for("m.XML").name == "openvino"
    assert runtime_for("m.torchscript").name == "torch"
    assert runtime_for("m.ncnn.param").name == "ncnn"
    assert runtime_for("m.onnx", "openvino").name == "openvino"
    with pytest.raises(BackendUnavailableError, match="unknown runtime 'tflite'.*onnxruntime"):
        runtime_for("m.onnx", "tflite")
    assert runtime_for("model.bin").name == "onnxruntime"  # the default, whatever the name
    with pytest.raises(ModelLoadError, match="TensorRT engine.*runtime 'tensorrt'"):
        runtime_for("m.engine")


def test_a_missing_model_file_is_named_before_any_runtime_loads(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        visionpipe.load_model({"model": tmp_path / "absent.xml", "family": "yolox"})


def test_a_runtime_whose_package_is_missing_names_the_extra(tmp_path):
    path = tmp_path / "m.fake"
    path.write_bytes(b"weights")
    register_runtime("fake", "visionpipe_absent_runtime_pkg.backend:Backend", suffixes=(".fake",), extra="fake",
                     package="visionpipe_absent_runtime_pkg")  # fmt: skip
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'visionpipe\[fake\]'"):
            open_backend(path)
    finally:
        RUNTIMES.pop("fake")


def test_a_registered_runtime_is_used_without_touching_the_loader(tmp_path):
    """A new runtime is one class and one registration: here, ONNX Runtime under another name."""
    import numpy as np

    from tests.models.onnx_graphs import constant_model
    from visionpipe.models.backends.onnxruntime import OnnxRuntimeBackend

    class Recording(OnnxRuntimeBackend):
        runtime = "recording"
        calls = 0

        def forward(self, tensor):
            Recording.calls += 1
            return super().forward(tensor)

    path = constant_model(tmp_path / "v8.onnx", np.zeros((84, 100), np.float32), input_hw=(64, 64))
    register_runtime("recording", Recording)
    try:
        model = visionpipe.load_model({"model": path, "family": "yolov8", "runtime": "recording"})
        assert isinstance(model.backend, Recording)
        Pipeline(model)(np.zeros((64, 64, 3), np.uint8))
        assert Recording.calls == 1
    finally:
        RUNTIMES.pop("recording")


def test_tensorrt_runtime_means_the_tensorrt_provider(tmp_path):
    import numpy as np

    from tests.models.onnx_graphs import constant_model

    path = constant_model(tmp_path / "v8.onnx", np.zeros((84, 10), np.float32))
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider|libnvinfer|not 'cuda'"):
        open_backend(path, "tensorrt", device="cuda")
