"""ONNX to NCNN (pnnx) on tiny graphs: the strided-slice rewrite against NumPy slicing, the NCNN model
against ONNX Runtime on the source graph, and a clear error for what NCNN cannot run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionpipe.errors import BackendUnavailableError, MissingExtraError, ModelLoadError, OptimizationError
from visionpipe.models.backends import open_backend
from visionpipe.optimize.benchmark import model_size_bytes
from visionpipe.optimize.checks import ort_session
from visionpipe.optimize.ncnn_export import read_layers, rewrite_strided_slices, to_ncnn


def _ints(name: str, values: list[int]):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def focus_graph(path: Path, height: int = 8, width: int = 6, conv: bool = True) -> Path:
    """YOLOX's Focus stem: the four pixel phases x[..., a::2, b::2] concatenated, then a 1x1 conv."""
    nodes, inits = [], []
    phases = []
    for axis_h_start in (0, 1):
        rows = f"rows{axis_h_start}"
        nodes.append(helper.make_node("Slice", ["images", f"s{axis_h_start}", "end", "ax2", "two"], [rows]))
        inits.append(_ints(f"s{axis_h_start}", [axis_h_start]))
        for axis_w_start in (0, 1):
            out = f"phase{axis_h_start}{axis_w_start}"
            nodes.append(helper.make_node("Slice", [rows, f"s{axis_w_start}", "end", "ax3", "two"], [out]))
            phases.append(out)
    inits += [_ints("end", [2**31 - 1]), _ints("ax2", [2]), _ints("ax3", [3]), _ints("two", [2])]
    nodes.append(helper.make_node("Concat", phases, ["focus" if conv else "output0"], axis=1))
    out_channels = 12
    if conv:
        weights = np.random.default_rng(1).normal(size=(4, 12, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(weights, "w"))
        nodes.append(helper.make_node("Conv", ["focus", "w"], ["output0"]))
        out_channels = 4
    graph = helper.make_graph(
        nodes,
        "focus",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, out_channels, None, None])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def column_pick_graph(path: Path, width: int) -> Path:
    """x[..., ::2] (every other column from the first) followed by a 1x1 conv."""
    weights = np.random.default_rng(1).normal(size=(4, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["images", "zero", "end", "ax3", "two"], ["columns"]),
            helper.make_node("Conv", ["columns", "w"], ["output0"]),
        ],
        "columns",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4, 8, (width + 1) // 2])],
        initializer=[
            _ints("zero", [0]),
            _ints("end", [2**31 - 1]),
            _ints("ax3", [3]),
            _ints("two", [2]),
            numpy_helper.from_array(weights, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_strided_slices_become_convolutions_that_pick_the_same_pixels(tmp_path):
    source = focus_graph(tmp_path / "focus.onnx", conv=False)
    rewritten, count = rewrite_strided_slices(onnx.load(str(source)), (1, 3, 8, 6))
    assert count == 6
    assert [n.op_type for n in rewritten.graph.node].count("Slice") == 0
    x = np.random.default_rng(0).random((1, 3, 8, 6), dtype=np.float32)
    session = ort_session(rewritten.SerializeToString())
    (got,) = session.run(None, {"images": x})
    want = np.concatenate([x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]], 1)
    np.testing.assert_array_equal(got, want)  # a selection: exact, not approximately


def test_a_slice_the_rewrite_cannot_replace_exactly_is_left_alone(tmp_path):
    even = rewrite_strided_slices(onnx.load(str(column_pick_graph(tmp_path / "even.onnx", 6))), (1, 3, 8, 6))
    assert even[1] == 1
    # 7 columns: the slice keeps 4, a stride-2 convolution would make 3
    odd, count = rewrite_strided_slices(onnx.load(str(column_pick_graph(tmp_path / "odd.onnx", 7))), (1, 3, 8, 7))
    assert count == 0 and [n.op_type for n in odd.graph.node] == ["Slice", "Conv"]


def test_to_ncnn_writes_a_model_the_ncnn_runtime_runs_as_onnxruntime_runs_the_source(tmp_path):
    source = focus_graph(tmp_path / "focus.onnx")
    written = to_ncnn(source, tmp_path / "out")
    assert written.path == tmp_path / "out" / "focus.ncnn.param" and written.bin_path.is_file()
    assert written.rewritten_slices == 6 and written.input_shape == (1, 3, 8, 6)
    assert written.spec_path is None  # not a detector: the files alone
    assert not any("." in layer for layer, _, _ in read_layers(written.path))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["focus.ncnn.bin", "focus.ncnn.param"]
    assert model_size_bytes(written.path) == written.path.stat().st_size + written.bin_path.stat().st_size

    backend = open_backend(written.path)  # the suffix picks NCNN; the size comes from the .param
    assert backend.runtime == "ncnn" and backend.input_hw == (8, 6) and backend.fixed_batch == 1
    x = np.random.default_rng(2).random((3, 3, 8, 6), dtype=np.float32)
    session = ort_session(source)
    want = np.concatenate([session.run(None, {"images": image[None]})[0] for image in x])
    (got,) = backend.run(x)  # a batch of 3, fed one image at a time
    assert got.shape == (3, 4, 4, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_what_ncnn_cannot_run_is_refused_naming_the_operator(tmp_path):
    source = column_pick_graph(tmp_path / "odd.onnx", 7)
    with pytest.raises(OptimizationError, match=r"no layer for: Tensor\.slice"):
        to_ncnn(source, tmp_path / "out")
    assert not (tmp_path / "out" / "odd.ncnn.param").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the staging folder is gone too


def test_a_dynamic_size_needs_input_size(tmp_path):
    path = focus_graph(tmp_path / "dyn.onnx")
    model = onnx.load(str(path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    onnx.save(model, str(path))
    with pytest.raises(OptimizationError, match="dynamic height/width: give input_size"):
        to_ncnn(path, tmp_path / "out")
    written = to_ncnn(path, tmp_path / "out", input_size=(8, 6))
    assert written.input_shape == (1, 3, 8, 6)


def test_the_ncnn_runtime_names_what_is_wrong_with_its_files(tmp_path, monkeypatch):
    written = to_ncnn(focus_graph(tmp_path / "focus.onnx"), tmp_path / "out")
    with pytest.raises(BackendUnavailableError, match="'cpu'"):
        open_backend(written.path, device="cuda")
    with pytest.raises(ModelLoadError, match="does not record its input size|takes 8x6"):
        open_backend(written.path, input_size=(16, 16))
    bogus = tmp_path / "bogus.param"
    bogus.write_text("not ncnn\n")
    (tmp_path / "bogus.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="cannot load .*bogus.param with NCNN"):
        open_backend(bogus)
    written.bin_path.unlink()
    with pytest.raises(ModelLoadError, match=r"focus\.ncnn\.bin are not beside it"):
        open_backend(written.path)
    monkeypatch.setitem(sys.modules, "ncnn", None)  # as if the extra were not installed
    (tmp_path / "out" / "focus.ncnn.bin").write_bytes(b"")
    with pytest.raises(MissingExtraError, match=r"pip install 'visionpipe\[ncnn\]'"):
        open_backend(written.path)


def test_conversion_without_pnnx_names_the_export_extra(monkeypatch):
    """The runtime extra is small (a device needs only ncnn); converting needs pnnx, which pulls in
    torch, so its own extra is the one named."""
    from visionpipe.optimize import ncnn_export

    monkeypatch.setattr(ncnn_export.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r"pip install 'visionpipe\[ncnn-export\]'"):
        ncnn_export.pnnx_executable()
