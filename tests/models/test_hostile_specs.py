"""Spec files and model files someone may hand you: names files outside the spec's folder, huge or
endless files, deep nesting, nonsense options, metadata asking for huge inputs, models without
inputs. Each is refused (or capped) at load with a typed error naming the cause, never a traceback
from deep inside."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import ModelLoadError, Pipeline, SpecError
from visionpipe.models.loader import MAX_METADATA_INPUT_SIDE, ModelWarning

NAMES = ("cat", "dog", "bird")


def tiny_yolov8(path, nc=3, **kwargs):
    values = np.zeros((4 + nc, 16), np.float32)
    values[:4, 0] = (100, 150, 40, 60)
    values[4, 0] = 0.9
    return constant_model(path, values, **kwargs)


@pytest.fixture
def spec_dir(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    tiny_yolov8(folder / "tiny.onnx")
    return folder


# -- item 2: names_file stays in the spec's folder unless the user names it ---------------------------


@pytest.mark.parametrize("where", ["../secret.txt", "ABSOLUTE", "link.txt"])
def test_a_names_file_outside_the_specs_folder_is_refused(spec_dir, where):
    secret = spec_dir.parent / "secret.txt"
    secret.write_text("cat\ndog\nbird\n")
    if where == "ABSOLUTE":
        where = str(secret)
    elif where == "link.txt":
        (spec_dir / "link.txt").symlink_to(secret)  # a link inside pointing outside counts as outside
    (spec_dir / "tiny.yaml").write_text(f"model: tiny.onnx\nfamily: yolov8\nnames_file: {where}\n")
    with pytest.raises(SpecError, match="outside the spec's folder.*--names-file") as info:
        visionpipe.load_model(spec_dir / "tiny.yaml")
    assert "were given" not in str(info.value)  # nothing about the file's content (its line count)


def test_a_names_file_inside_the_specs_folder_still_works(spec_dir):
    (spec_dir / "sub").mkdir()
    (spec_dir / "sub" / "names.txt").write_text("cat\ndog\nbird\n")
    (spec_dir / "tiny.yaml").write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: sub/names.txt\n")
    assert visionpipe.load_model(spec_dir / "tiny.yaml").class_names == NAMES


def test_a_names_file_the_caller_passes_may_be_anywhere(spec_dir, tmp_path):
    names = tmp_path / "elsewhere" / "names.txt"
    names.parent.mkdir()
    names.write_text("a\nb\nc\n")
    (spec_dir / "tiny.yaml").write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: ../../x.txt\n")
    with pytest.raises(SpecError):
        visionpipe.load_model(spec_dir / "tiny.yaml")
    model = visionpipe.load_model(spec_dir / "tiny.onnx", family="yolov8", names_file=names)
    assert model.class_names == ("a", "b", "c")
    with Pipeline(spec_dir / "tiny.onnx", family="yolov8", names_file=names) as pipe:
        assert pipe.class_names == ("a", "b", "c")


# -- items 4 and 5: FIFOs and endless files ---------------------------------------------------------


def test_a_huge_names_file_is_refused_by_size(spec_dir):
    with open(spec_dir / "names.txt", "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    (spec_dir / "tiny.yaml").write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: names.txt\n")
    with pytest.raises(SpecError, match="exceeds the limit"):
        visionpipe.load_model(spec_dir / "tiny.yaml")


def test_an_endless_device_as_names_file_is_refused(spec_dir):
    """/dev/zero as the caller's names file: a device, refused before any read."""
    with pytest.raises(SpecError, match="device"):
        visionpipe.load_model(spec_dir / "tiny.onnx", family="yolov8", names_file="/dev/zero")


@pytest.mark.parametrize("which", ["spec", "names"])
def test_a_fifo_as_spec_or_names_file_is_named_without_blocking(spec_dir, which):
    fifo = spec_dir / ("tiny.yaml" if which == "spec" else "names.txt")
    os.mkfifo(fifo)
    if which == "names":
        (spec_dir / "spec.yaml").write_text("model: tiny.onnx\nfamily: yolov8\nnames_file: names.txt\n")
    done = []
    worker = threading.Thread(
        target=lambda: done.append(
            _error_of(lambda: visionpipe.load_model(spec_dir / ("tiny.yaml" if which == "spec" else "spec.yaml")))
        ),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the stuck reader so the test process can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert isinstance(done[0], SpecError) and "FIFO" in str(done[0]), done


def _error_of(call):
    try:
        call()
    except Exception as exc:
        return exc
    return None


# -- item 18: validated at load, not a traceback later -------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[" * 5000 + "]" * 5000, "model: tiny.onnx\ndecoder: " + "{a: " * 60 + "1" + "}" * 60]
)
def test_a_deeply_nested_spec_is_a_spec_error(spec_dir, text):
    (spec_dir / "deep.yaml").write_text(text)
    with pytest.raises(SpecError, match="nested|mapping"):
        visionpipe.load_model(spec_dir / "deep.yaml")


@pytest.mark.parametrize("strides", ["abc", "[0, 16, 32]", "[8, -16, 32]", "[]", "[8.5, 16, 32]"])
def test_bad_decoder_strides_are_a_spec_error(tmp_path, strides):
    values = np.zeros((3549, 85), np.float32)  # YOLOX-416 layout: 52^2 + 26^2 + 13^2 cells
    constant_model(tmp_path / "m.onnx", values, input_hw=(416, 416))
    (tmp_path / "m.yaml").write_text(f"model: m.onnx\nfamily: yolox\ndecoder: {{strides: {strides}}}\n")
    with pytest.raises(SpecError, match="strides"):
        visionpipe.load_model(tmp_path / "m.yaml")


def test_a_model_with_no_inputs_is_a_load_error(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        "no-inputs",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "none.onnx")
    with pytest.raises(ModelLoadError, match="no inputs"):
        visionpipe.load_model(tmp_path / "none.onnx", family="yolov8")


@pytest.mark.parametrize("classes", [[999], [3], ["cat", 7]])
def test_class_ids_out_of_range_are_refused_in_specs_and_options(spec_dir, classes):
    (spec_dir / "tiny.yaml").write_text(
        f"model: tiny.onnx\nfamily: yolov8\nclasses: [cat, dog, bird]\nthresholds: {{classes: {classes}}}\n"
    )
    with pytest.raises(SpecError, match="out of range.*3 classes"):
        visionpipe.load_model(spec_dir / "tiny.yaml")
    with pytest.raises(SpecError, match="out of range"):
        Pipeline({"model": spec_dir / "tiny.onnx", "family": "yolov8", "classes": list(NAMES)}, classes=classes)


@pytest.mark.parametrize("size", ["0", "-32", "[0, 320]", "[320, -1]", "100000"])
def test_an_input_size_of_zero_negative_or_huge_is_refused(spec_dir, size):
    tiny_yolov8(spec_dir / "dyn.onnx", input_hw=None)
    (spec_dir / "dyn.yaml").write_text(f"model: dyn.onnx\nfamily: yolov8\ninput_size: {size}\n")
    with pytest.raises(SpecError, match="input_size"):
        visionpipe.load_model(spec_dir / "dyn.yaml")


# -- item 7: a huge input size from metadata is capped, and said ----------------------------------------


def test_metadata_asking_a_huge_input_on_a_dynamic_model_is_capped_with_a_warning(tmp_path):
    meta = {"names": "{0: 'cat', 1: 'dog', 2: 'bird'}", "task": "detect", "imgsz": "[20000, 20000]", "stride": "32"}
    path = tiny_yolov8(tmp_path / "big.onnx", input_hw=None, metadata=meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = visionpipe.load_model(path)
    assert model.input_hw == (MAX_METADATA_INPUT_SIDE, MAX_METADATA_INPUT_SIDE)
    assert MAX_METADATA_INPUT_SIDE <= 2048
    messages = [str(w.message) for w in caught if issubclass(w.category, ModelWarning)]
    assert len(messages) == 1 and "20000" in messages[0] and str(MAX_METADATA_INPUT_SIDE) in messages[0]
    # a spec may still ask for a large size deliberately
    spec = tmp_path / "big.yaml"
    spec.write_text("model: big.onnx\ninput_size: [2560, 2560]\n")
    assert visionpipe.load_model(spec).input_hw == (2560, 2560)
