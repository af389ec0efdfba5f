"""What the package ships: the built-in COCO detector and the sample frames are in the wheel, they
are the credited files, and NOTICE names every one of them."""

from __future__ import annotations

import hashlib
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
