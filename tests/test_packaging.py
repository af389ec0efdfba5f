"""What the package ships: the built-in COCO detector and the sample frames are in the wheel, they
are the credited files, and NOTICE names every one of them."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile

from tests.conftest import REPO

SHIPPED = ["visionpipe/data/yolox_nano_416_coco.onnx"] + [
    f"visionpipe/data/samples/{name}" for name in ("car_0101.jpg", "car_0233.jpg", "person_0800.jpg", "person_1300.jpg")
]


def test_wheel_contains_the_model_the_frames_and_notice(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("visionpipe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in SHIPPED:
        assert shipped in names, f"{shipped} is not in the wheel"
    assert any(n.endswith("NOTICE") for n in names), "NOTICE is not in the wheel"


def test_notice_credits_every_shipped_file():
    notice = (REPO / "NOTICE").read_text(encoding="utf-8")
    for shipped in SHIPPED:
        assert shipped.rsplit("/", 1)[1] in notice, f"NOTICE does not credit {shipped}"
    assert "Apache License" in notice and "CC BY 4.0" in notice


def test_builtin_model_is_the_credited_yolox_nano(asset):
    """The shipped weights are byte for byte the published YOLOX-Nano export the assets describe,
    and NOTICE records the same checksum."""
    shipped = (REPO / "src" / SHIPPED[0]).read_bytes()
    assert shipped == asset("models/yolox_nano_416_coco.onnx").read_bytes()
    assert hashlib.sha256(shipped).hexdigest() in (REPO / "NOTICE").read_text(encoding="utf-8")


def _extras() -> dict[str, set[str]]:
    """Each extra of pyproject.toml with the extras it pulls in, transitively."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    direct = {
        name: {
            inner
            for req in reqs
            for m in [re.match(r"visionpipe\[([\w,-]+)\]", req)]
            if m
            for inner in m.group(1).split(",")
        }
        for name, reqs in declared.items()
    }
    closure: dict[str, set[str]] = {}
    for name in direct:
        seen, todo = set(), [name]
        while todo:
            for inner in direct[todo.pop()]:
                if inner not in seen:
                    seen.add(inner)
                    todo.append(inner)
        closure[name] = seen
    return closure


def test_no_extra_includes_itself_and_every_named_extra_exists():
    extras = _extras()
    assert [name for name, inner in extras.items() if name in inner] == []
    for name, inner in extras.items():
        assert inner <= extras.keys(), f"{name} pulls in undeclared extras {inner - extras.keys()}"
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src" / "visionpipe").rglob("*.py"))
    named = set(re.findall(r'MissingExtraError\(\s*"[^"]+",\s*"([\w-]+)"', source))
    named |= set(re.findall(r'\bextra="([\w-]+)"', source)) - {"forbid", "mnn"}  # mnn: the docstring's example plugin
    assert named, "found no extra named in the source"
    assert named <= extras.keys(), f"errors name extras pyproject.toml lacks: {named - extras.keys()}"


# What the test extra deliberately leaves out: hardware the CI machine lacks, a package only the
# README's adapter section needs, and torch, which the test command names as the CPU build.
NOT_TESTED_IN_CI = {"gpu", "tensorrt", "fiftyone", "torch"}


def test_the_test_extra_installs_every_extra_the_tests_exercise():
    """So a test of an optional feature never meets its missing-extra error in CI (the NCNN
    converter once moved to its own extra and the test extra kept the old one)."""
    extras = _extras()
    missing = set(extras) - {"test"} - NOT_TESTED_IN_CI - extras["test"]
    assert missing == set(), f"the test extra does not install: {sorted(missing)}"
