"""A real server on 127.0.0.1 (a random free port) in a thread, and model repositories built from
the shared assets' ONNX files."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from visionpipe.serve import ServeConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_version(root: Path, name: str, version: str, model: Path, family: str, extra: str = "") -> Path:
    folder = root / name / version
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / f"{name}.yaml"
    spec.write_text(f"model: {model}\nfamily: {family}\n{extra}", encoding="utf-8")
    return spec


@contextmanager
def running(config: ServeConfig, seed: int | None = 0) -> Iterator[tuple[str, object]]:
    """Start the server in a thread; yield (base URL, app state); stop it (bounded waits)."""
    from visionpipe.serve.app import create_app
    from visionpipe.serve.server import make_server

    app = create_app(config, seed=seed)
    server = make_server(config, app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    give_up = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app.state.vp
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="session")
def yolox_model(asset) -> Path:
    return asset("models/yolox_nano_416_coco.onnx")


@pytest.fixture(scope="session")
def nanodet_model(asset) -> Path:
    return asset("models/nanodet_m_320_coco.onnx")


@pytest.fixture(scope="session")
def photos(asset) -> list[Path]:
    return sorted(asset("coco/images/val2017").glob("*.jpg"))
