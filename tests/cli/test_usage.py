"""The command's surface: help, version, usage errors, models that cannot be loaded, built-in models.

Exit status contract (cli/app.py): 1 for usage errors and models that cannot be loaded, with a
one-line message and no traceback unless --debug.
"""

from __future__ import annotations

import importlib.metadata
import json
import re

import cv2
import numpy as np
import pytest

from .helpers import describe

HELP_COMMANDS = [[], ["detect"], ["eval"], ["models"], ["models", "inspect"], ["models", "list"], ["samples"]]


@pytest.fixture
def photo(tmp_path):
    """A small valid image, so a failure below can only come from the option under test."""
    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), np.full((64, 96, 3), 127, np.uint8))
    return path


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "visionpipe")
def test_help_works_and_shows_an_example(cli, command):
    proc = cli(*command, "--help")
    assert proc.returncode == 0, describe(proc)
    assert "Usage" in proc.stdout
    assert "Example" in proc.stdout, f"`visionpipe {' '.join(command)} --help` shows no example\n{proc.stdout}"
    assert "Traceback" not in proc.stderr


def test_version_prints_the_installed_version(cli):
    proc = cli("--version")
    assert proc.returncode == 0, describe(proc)
    expected = importlib.metadata.version("visionpipe")  # from the installed distribution's metadata
    assert re.fullmatch(rf"visionpipe {re.escape(expected)}\s*", proc.stdout), proc.stdout


def test_models_list_shows_both_builtin_models(cli):
    proc = cli("models", "list")
    assert proc.returncode == 0, describe(proc)
    assert "ppocr-text" in proc.stdout
    assert "yolox-nano-coco" in proc.stdout and "(default)" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["detect", "{photo}", "--bogus"], r"--bogus"),
        (["detect"], r"missing argument"),
        (["detect", "{photo}", "--conf", "2"], r"--conf"),
        (["detect", "{photo}", "--conf", "-0.5"], r"--conf"),
        (["detect", "{photo}", "--batch-size", "0"], r"--batch-size"),
        (["detect", "{photo}", "--format", "xml"], r"--format|xml"),
        (["eval", "--images", "{folder}"], r"missing option.*--annotations"),
        (["models", "inspect"], r"missing argument"),
        (["frobnicate"], r"no such command"),
    ],
    ids=["unknown-option", "missing-source", "conf-2", "conf-negative", "batch-0", "unknown-format", "eval-missing-option",
         "inspect-missing-file", "unknown-command"],
)  # fmt: skip
def test_usage_errors_exit_1_without_traceback(cli, photo, args, says):
    proc = cli(*[a.format(photo=photo, folder=photo.parent) for a in args], cwd=photo.parent)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(says, proc.stderr, re.IGNORECASE | re.DOTALL), describe(proc)
    assert not (photo.parent / "visionpipe-out").exists(), "a usage error still wrote outputs"


@pytest.fixture
def unloadable_models(tmp_path) -> dict[str, str]:
    garbage = tmp_path / "some.txt"
    garbage.write_bytes(b"\x00\x01garbage, not a model\xff\xfe\n" * 8)
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("not protobuf\n", encoding="utf-8")
    broken_spec = tmp_path / "broken.yaml"
    broken_spec.write_text("model: [unclosed\nfamily: yolox\n", encoding="utf-8")
    return {
        "missing.onnx": "missing.onnx",  # does not exist
        "some.txt": str(garbage),
        "fake.onnx": str(fake_onnx),
        "broken.yaml": str(broken_spec),
    }


@pytest.mark.parametrize("name", ["missing.onnx", "some.txt", "fake.onnx", "broken.yaml"])
def test_model_that_cannot_be_loaded_exits_1_with_one_line(cli, photo, unloadable_models, name):
    proc = cli("detect", photo, "--model", unloadable_models[name], "--out", photo.parent / "out", cwd=photo.parent)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message:\n{describe(proc)}"
    assert name in lines[0], lines[0]


@pytest.mark.real
def test_the_same_model_twice_is_an_ensemble_with_distinct_member_names(cli, photo, yolox_spec):
    out = photo.parent / "out"
    proc = cli("detect", photo, "--model", yolox_spec, "--model", yolox_spec, "--out", out, "--format", "jsonl")
    assert proc.returncode == 0, describe(proc)
    summary = json.loads((out / "summary.json").read_text())
    # a model is named after its weights file when the spec gives no name
    assert summary["model"] == "yolox_nano_416_coco#1+yolox_nano_416_coco#2"
