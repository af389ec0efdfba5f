"""run.py on a clean machine: a fresh virtual environment with only the bundle's requirements.txt.

Slow (it installs numpy, onnxruntime and opencv-python-headless from the package index, reusing a
pip cache under ~/.cache/visionpipe-tests/pip between runs) and needs the index to be reachable.
No visionpipe is installed there, and no site-packages of this environment are visible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import val_photos
from .test_bundle import compare_with_pipeline

pytestmark = [pytest.mark.real, pytest.mark.slow]

PIP_CACHE = Path(os.environ.get("VISIONPIPE_TEST_PIP_CACHE", Path.home() / ".cache" / "visionpipe-tests" / "pip"))


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / "bin" / "python"


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_CACHE_DIR"] = str(PIP_CACHE)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(args, capture_output=True, text=True, env=env, check=False, **kwargs)


def test_run_py_in_a_fresh_venv_equals_visionpipe(planned, clean_python, asset, tmp_path):
    folder = planned[0].bundle.folder
    install = _run(
        [str(clean_python), "-m", "pip", "install", "-q", "-r", str(folder / "requirements.txt")], timeout=900
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = _run([str(clean_python), "-c", "import visionpipe"])
    assert probe.returncode != 0, "visionpipe must not be importable in the fresh environment"
    check = _run([str(clean_python), str(folder / "run.py"), "--check"], timeout=300)
    assert check.returncode == 0 and "bundle OK" in check.stderr, check.stderr[-2000:]
    photos = val_photos(asset, 16)
    out = tmp_path / "fresh.jsonl"
    proc = _run([str(clean_python), str(folder / "run.py"), *map(str, photos), "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    compare_with_pipeline(folder, photos, out)
