"""Fixtures for the end-to-end tests of the ``visionpipe`` command: the real command, run as a
subprocess exactly as a user would run it, on the shared assets (see tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# generous: a hung command must not hang the suite, but no test asserts on time
COMMAND_TIMEOUT_S = 300


def visionpipe_command() -> list[str]:
    """How to start the installed command: ``python -m visionpipe`` when the package has a
    ``__main__``, else the console script installed next to this interpreter."""
    if (REPO / "src" / "visionpipe" / "__main__.py").is_file():
        return [sys.executable, "-m", "visionpipe"]
    script = Path(sys.executable).parent / ("visionpipe.exe" if os.name == "nt" else "visionpipe")
    if not script.is_file():
        pytest.fail(
            f"the `visionpipe` console script is not installed next to {sys.executable} and the package has no "
            "__main__.py; install the project into this environment (pip install -e .) to run the CLI tests",
            pytrace=False,
        )
    return [str(script)]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # plain text output whatever the CI sets: Rich honours NO_COLOR and FORCE_COLOR
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    return env


@pytest.fixture(scope="session")
def cli():
    """``cli(*args, cwd=None, stdin=None)`` runs ``visionpipe args...`` and returns the
    CompletedProcess (text stdout/stderr), never raising on a non-zero exit status."""
    command = visionpipe_command()
    env = _environment()

    def run(*args, cwd: str | os.PathLike | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *map(str, args)],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def yolox_spec(asset, tmp_path_factory) -> Path:
    """A spec file naming the YOLOX-Nano asset and its family (the MANIFEST's first model)."""
    spec = tmp_path_factory.mktemp("spec") / "yolox.yaml"
    spec.write_text(f"model: {asset('models/yolox_nano_416_coco.onnx')}\nfamily: yolox\n", encoding="utf-8")
    return spec
