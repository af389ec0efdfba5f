"""Every setting of the server in one place, with the safe defaults.

The CLI flags carry the same names (``--max-batch-size`` is ``max_batch_size``). Per-model files
(``<repository>/<model>/serve.yaml``) may override the batching and deadline settings, see
:mod:`visionpipe.serve.repository`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from visionpipe.errors import ServeConfigError
from visionpipe.serve.auth import is_loopback


@dataclass(frozen=True)
class BatchingConfig:
    """How one model's requests are batched and when they are given up."""

    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue: int = 64  # images waiting; beyond it requests get 503 at once
    deadline_ms: float = 10_000.0  # per request, from arrival; 504 after it
    lanes: int | None = None  # batches run side by side; None: 2 on CPU, 1 on a GPU


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server (all processes of it)."""

    sources: tuple[Path, ...] = ()  # a repository folder, or spec/model files served as version 1
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_keys_file: Path | None = None
    rate_limit: float = 50.0  # requests per second per key (bursts up to the same number)
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    device: str = "cpu"
    allow_model_control: bool = False  # load/unload over HTTP
    poll_seconds: float = 10.0  # rescan the repository for new versions; 0: never
    cache_entries: int = 1024
    cache_ttl: float = 60.0
    sticky_header: str = "x-client-id"
    monitor: str | None = None
    log_level: str = "info"
    graceful_seconds: float = 30.0  # on SIGTERM, how long in-flight requests may take

    def check_bind(self) -> None:
        """Refuse to listen beyond this machine without API keys."""
        if not is_loopback(self.host) and self.api_keys_file is None:
            raise ServeConfigError(
                f"refusing to listen on {self.host} without API keys: pass --api-keys FILE "
                "(make a key with `visionpipe serve --new-key NAME`), or bind 127.0.0.1"
            )
