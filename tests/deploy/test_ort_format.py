"""ORT format through ONNX Runtime's own converter: same outputs as the ONNX file, operator config."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from visionpipe.deploy.ort_format import convert_to_ort, onnx_required_operators, read_required_operators
from visionpipe.io.images import decode_image
from visionpipe.models.loader import load_model
from visionpipe.preprocess import preprocess


def _outputs(path, tensor, disabled=()):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
    return session.run(None, {session.get_inputs()[0].name: tensor})


@pytest.mark.real
@pytest.mark.parametrize("model", ["yolox_nano_416_coco.onnx", "nanodet_m_320_coco.onnx"])
@pytest.mark.parametrize(("style", "platform"), [("fixed", "arm"), ("runtime", "arm"), ("fixed", "amd64")])
def test_ort_file_gives_the_onnx_outputs(asset, tmp_path, model, style, platform):
    """Compared with the ONNX file under the same layout optimisations: for ARM the converter leaves
    out x86's NCHWc layout transform, which an x86 session applies to the ONNX file at load (that
    alone moves YOLOX-Nano's outputs by up to 1.6e-4; the conversion itself changes nothing)."""
    source = asset(f"models/{model}")
    result = convert_to_ort(source, tmp_path, style=style, platform=platform)
    assert result.path.suffix == ".ort" and result.path.read_bytes()[4:8] == b"ORTM"
    loaded = load_model(source)
    photo = sorted(asset("coco/images/val2017").glob("*.jpg"))[0]
    tensor, _ = preprocess(decode_image(photo), loaded.input_hw, loaded.preprocess)
    want = _outputs(source, tensor[None], disabled=["NchwcTransformer"] if platform == "arm" else ())
    got = _outputs(result.path, tensor[None])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)
    # visionpipe loads the .ort file directly, as ONNX Runtime does
    assert load_model({"model": result.path, "family": loaded.family}).backend.path == result.path


def _ops_in(ort_file):
    """{domain: op types} of one ORT-format file, read by ONNX Runtime's own tooling."""
    from onnxruntime.tools.ort_format_model.utils import _extract_ops_and_types_from_ort_models

    ops, _ = _extract_ops_and_types_from_ort_models([ort_file], False)
    return {domain: set().union(*by_opset.values()) for domain, by_opset in ops.items()}


@pytest.mark.real
def test_portable_variant_has_no_cpu_only_fused_kernels(asset, tmp_path):
    source = asset("models/nanodet_m_320_coco.onnx")
    fixed = convert_to_ort(source, tmp_path, style="fixed")
    portable = convert_to_ort(source, tmp_path, style="runtime")
    assert "FusedConv" in _ops_in(fixed.path).get("com.microsoft", set())
    assert "com.microsoft" not in _ops_in(portable.path)  # what NNAPI / CoreML can take
    # the reduced-build config lists what either file needs, including the fused kernels replayed on CPU
    listed = read_required_operators(fixed.config_path)
    assert "FusedConv" in listed["com.microsoft;1"] and "Conv" in listed["ai.onnx;11"]
    assert fixed.format_version.isdigit()
    graph_ops = {node.op_type for node in onnx.load(str(source)).graph.node}
    opset = next(i.version for i in onnx.load(str(source)).opset_import if i.domain in ("", "ai.onnx"))
    assert onnx_required_operators(source) == {f"ai.onnx;{opset}": sorted(graph_ops)}
