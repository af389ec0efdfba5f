"""The model repository: versions on disk, loaded, checked, warmed up and swapped in without a gap.

Layout (as Triton's)::

    models/
      yolox/
        serve.yaml        optional: traffic split, fallback, batching and deadline for this model
        1/yolox.yaml      a spec (or a model file with its sidecar spec / embedded metadata)
        2/yolox.yaml
        3/manifest.json   or a deployment bundle (`visionpipe deploy`), checksums verified on load
      nanodet/
        1/nanodet.yaml

``serve.yaml`` keys (all optional)::

    traffic: {"1": 90, "2": 10}   # A/B: weights per version; default: the newest version takes all
    fallback: nanodet             # answer with this model when this one fails or misses its deadline
    max_batch_size: 8
    max_queue_delay_ms: 2
    max_queue: 64
    deadline_ms: 10000

Loaded are the newest version and the versions named in ``traffic``. :meth:`ModelRepository.refresh`
(called by the poller and the model-control routes) loads what is new, runs it on a synthetic image
to check it and warm it up, and only then switches the routing table; a version that fails its
check is reported and the running ones keep serving. A retired version stops taking requests at
once but finishes the ones it holds before it is closed.

A bare spec or model file given instead of a folder is served as version ``1`` of a model named
after the file.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from visionpipe.errors import ModelNotFoundError, SpecError
from visionpipe.io.images import DecodeLimits
from visionpipe.models.bundle import is_bundle
from visionpipe.models.loader import SPEC_SUFFIXES
from visionpipe.pipeline import Pipeline
from visionpipe.serve.batcher import BatchStats, DynamicBatcher
from visionpipe.serve.config import BatchingConfig, ServeConfig
from visionpipe.serve.runner import ModelRunner

log = logging.getLogger("visionpipe.serve")

MODEL_SUFFIXES = {".onnx"}
SETTINGS_FILE = "serve.yaml"


@dataclass(frozen=True)
class ModelSettings:
    """A model's ``serve.yaml``."""

    batching: BatchingConfig
    traffic: dict[str, float] | None = None
    fallback: str | None = None

    @classmethod
    def read(cls, folder: Path, defaults: BatchingConfig) -> ModelSettings:
        path = folder / SETTINGS_FILE
        if not path.is_file():
            return cls(defaults)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"{path}: {exc}") from None
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: expected a mapping")
        known = {"traffic", "fallback", "max_batch_size", "max_queue_delay_ms", "max_queue", "deadline_ms", "lanes"}
        unknown = set(raw) - known
        if unknown:
            raise SpecError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        traffic = raw.get("traffic")
        if traffic is not None:
            if not isinstance(traffic, dict) or not traffic:
                raise SpecError(f"{path}: traffic must map versions to weights")
            traffic = {str(k): float(v) for k, v in traffic.items()}
            if any(w < 0 for w in traffic.values()) or not any(traffic.values()):
                raise SpecError(f"{path}: traffic weights must be >= 0 with one positive")
        batching = replace(defaults, **{k: raw[k] for k in known - {"traffic", "fallback"} if k in raw})
        return cls(batching, traffic, raw.get("fallback"))


def version_source(folder: Path) -> Path:
    """What a version folder is loaded from: the folder itself when it is a deployment bundle
    (``manifest.json``: every checksum is verified before the model opens, so a tampered bundle is
    refused), else its one spec file, else its one model file (configured by a sidecar spec or
    its own metadata)."""
    if is_bundle(folder):
        return folder
    specs = sorted(p for p in folder.iterdir() if p.suffix.lower() in SPEC_SUFFIXES and p.name != SETTINGS_FILE)
    if len(specs) == 1:
        return specs[0]
    if len(specs) > 1:
        raise SpecError(f"{folder} holds several specs ({', '.join(p.name for p in specs)}); keep one per version")
    models = sorted(p for p in folder.iterdir() if p.suffix.lower() in MODEL_SUFFIXES)
    if len(models) == 1:
        return models[0]
    raise SpecError(f"{folder} holds no single spec or model file")


class LoadedVersion:
    """A runner and its batcher, with a count of requests holding it (so retiring waits for them)."""

    def __init__(self, runner: ModelRunner, batcher: DynamicBatcher, source: Path, signature: str) -> None:
        self.runner = runner
        self.batcher = batcher
        self.source = source
        self.signature = signature
        self.active = 0
        self.retired = False

    @property
    def name(self) -> str:
        return self.runner.name

    @property
    def version(self) -> str:
        return self.runner.version

    def close(self) -> None:
        self.batcher.stop()
        self.runner.close()


@dataclass
class Endpoint:
    """A model name: its loaded versions and how traffic is split over them."""

    name: str
    settings: ModelSettings
    versions: dict[str, LoadedVersion] = field(default_factory=dict)

    @property
    def weights(self) -> list[tuple[str, float]]:
        if self.settings.traffic:
            chosen = [(v, w) for v, w in self.settings.traffic.items() if v in self.versions and w > 0]
            if chosen:
                return chosen
        return [(newest(self.versions), 1.0)] if self.versions else []

    def choose(self, sticky: str | None, rng: random.Random) -> LoadedVersion:
        """A version by weight; the same ``sticky`` value always lands on the same version."""
        weights = self.weights
        if not weights:
            raise ModelNotFoundError(f"model {self.name!r} has no loaded version")
        total = sum(w for _, w in weights)
        if sticky:
            digest = hashlib.sha256(f"{self.name}\0{sticky}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64 * total
        else:
            point = rng.random() * total
        for version, weight in weights:
            point -= weight
            if point < 0:
                return self.versions[version]
        return self.versions[weights[-1][0]]


def newest(versions: dict[str, Any]) -> str:
    return max(versions, key=lambda v: (int(v) if v.isdigit() else -1, v))


class ModelRepository:
    """Loaded models by name and version; thread-safe; :meth:`refresh` swaps versions in."""

    def __init__(
        self,
        config: ServeConfig,
        *,
        on_batch: Callable[[LoadedVersion, BatchStats], None] | None = None,
        on_depth: Callable[[LoadedVersion, int], None] | None = None,
        seed: int | None = None,
        warm_up_runs: int = 2,
    ) -> None:
        self.config = config
        self.limits = DecodeLimits(max_pixels=config.max_pixels, max_bytes=config.max_body_bytes)
        self.on_batch = on_batch
        self.on_depth = on_depth
        self.rng = random.Random(seed)
        self.warm_up_runs = warm_up_runs
        self.endpoints: dict[str, Endpoint] = {}
        self.failed: dict[str, str] = {}  # "name/version" -> why it was refused (kept until its files change)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._retiring: list[threading.Thread] = []

    # -- what is on disk ----------------------------------------------------------------------

    def scan(self) -> dict[str, tuple[Path | None, dict[str, Path]]]:
        """Model name -> (its folder or None, {version: source file}) for every source."""
        found: dict[str, tuple[Path | None, dict[str, Path]]] = {}
        for source in self.config.sources:
            source = Path(source)
            if source.is_file():
                found[source.stem] = (None, {"1": source})
            elif source.is_dir():
                for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
                    versions = {}
                    for version_dir in folder.iterdir():
                        if version_dir.is_dir() and version_dir.name.isdigit():
                            try:
                                versions[version_dir.name] = version_source(version_dir)
                            except SpecError as exc:
                                self.failed[f"{folder.name}/{version_dir.name}"] = str(exc)
                    if versions:
                        found[folder.name] = (folder, versions)
            else:
                raise SpecError(f"model source {source} does not exist")
        return found

    # -- loading and swapping -----------------------------------------------------------------

    def refresh(self) -> dict[str, list[str]]:
        """Load new versions (checked and warmed up), switch traffic, retire what is no longer wanted.

        Returns what happened: ``{"loaded": [...], "retired": [...], "failed": [...]}``.
        """
        report: dict[str, list[str]] = {"loaded": [], "retired": [], "failed": []}
        with self._refresh_lock:
            for name, (folder, sources) in self.scan().items():
                try:
                    settings = (
                        ModelSettings.read(folder, self.config.batching)
                        if folder
                        else ModelSettings(self.config.batching)
                    )
                except SpecError as exc:
                    report["failed"].append(f"{name}: {exc}")
                    continue
                wanted = {newest(sources)} | {v for v in settings.traffic or {} if v in sources}
                endpoint = self.endpoints.get(name)
                current = dict(endpoint.versions) if endpoint else {}
                loaded: dict[str, LoadedVersion] = {}
                for version in sorted(wanted):
                    signature = _signature(sources[version])
                    running = current.get(version)
                    if running is not None and running.signature == signature:
                        loaded[version] = running
                        continue
                    key = f"{name}/{version}"
                    if self.failed.get(key, "").startswith(signature):
                        # refused before and unchanged since: not tried again, still reported
                        report["failed"].append(f"{key}: {self.failed[key].partition(' ')[2]}")
                        if running is not None:
                            loaded[version] = running
                        continue
                    try:
                        loaded[version] = self._load(name, version, sources[version], settings.batching, signature)
                        self.failed.pop(key, None)
                        report["loaded"].append(key)
                    except Exception as exc:
                        self.failed[key] = f"{signature} {exc}"
                        report["failed"].append(f"{key}: {exc}")
                        log.error("version refused", extra={"model": name, "version": version, "error": str(exc)})
                        if running is not None:
                            loaded[version] = running  # keep serving the old files
                if not loaded:
                    continue
                with self._lock:  # the swap itself: one assignment under the lock
                    self.endpoints[name] = Endpoint(name, settings, loaded)
                for version, old in current.items():
                    if loaded.get(version) is not old:
                        report["retired"].append(f"{name}/{version}")
                        self._retire(old)
        for key in report["loaded"]:
            log.info("version loaded", extra={"model": key})
        return report

    def _load(self, name: str, version: str, source: Path, batching: BatchingConfig, signature: str) -> LoadedVersion:
        pipeline = Pipeline(source, device=self.config.device)
        runner = ModelRunner(pipeline, name, version, self.limits)
        try:
            runner.warm_up(self.warm_up_runs, batch_size=min(2, batching.max_batch_size))
        except Exception:
            runner.close()
            raise
        lanes = batching.lanes or pipeline.concurrency
        holder: list[LoadedVersion] = []
        on_batch, on_depth = self.on_batch, self.on_depth
        batcher = DynamicBatcher(
            lambda payloads: _run_batch(runner, payloads),
            max_batch_size=batching.max_batch_size,
            max_queue_delay=batching.max_queue_delay_ms / 1000,
            max_queue=batching.max_queue,
            lanes=lanes,
            name=f"{name}/{version}",
            on_batch=(lambda stats: on_batch(holder[0], stats)) if on_batch else None,
            on_depth=(lambda depth: on_depth(holder[0], depth)) if on_depth else None,
        )
        loaded = LoadedVersion(runner, batcher, source, signature)
        holder.append(loaded)
        batcher.start()
        return loaded

    def _retire(self, version: LoadedVersion) -> None:
        """Stop routing to it (done by the swap), then close it once no request holds it."""

        def wait_and_close() -> None:
            with self._lock:
                version.retired = True
            while True:
                with self._lock:
                    if version.active == 0:
                        break
                threading.Event().wait(0.01)
            version.close()
            log.info("version retired", extra={"model": f"{version.name}/{version.version}"})

        thread = threading.Thread(target=wait_and_close, name=f"retire-{version.name}", daemon=True)
        thread.start()
        self._retiring.append(thread)

    def unload(self, name: str) -> None:
        with self._lock:
            endpoint = self.endpoints.pop(name, None)
        if endpoint is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        for version in endpoint.versions.values():
            self._retire(version)

    # -- requests -----------------------------------------------------------------------------

    @contextmanager
    def lease(self, name: str, version: str | None = None, sticky: str | None = None) -> Iterator[LoadedVersion]:
        """The version that serves a request, held (not closed) until the block ends."""
        with self._lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                raise ModelNotFoundError(f"unknown model {name!r}")
            if version is None:
                chosen = endpoint.choose(sticky, self.rng)
            elif version in endpoint.versions:
                chosen = endpoint.versions[version]
            else:
                raise ModelNotFoundError(f"model {name!r} has no loaded version {version!r}")
            chosen.active += 1
        try:
            yield chosen
        finally:
            with self._lock:
                chosen.active -= 1

    def endpoint(self, name: str) -> Endpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return endpoint

    @property
    def ready(self) -> bool:
        return bool(self.endpoints)

    def close(self) -> None:
        """Finish queued requests and close every version."""
        with self._lock:
            endpoints, self.endpoints = self.endpoints, {}
        for endpoint in endpoints.values():
            for version in endpoint.versions.values():
                self._retire(version)
        for thread in self._retiring:
            thread.join()


def _run_batch(runner: ModelRunner, payloads: list[list[Any]]) -> list[list[list[Any]]]:
    """One backend run over every request's tensors; each request gets its own outputs back."""
    flat = [tensor for tensors in payloads for tensor in tensors]
    outputs = runner.infer(flat)
    results, start = [], 0
    for tensors in payloads:
        results.append(outputs[start : start + len(tensors)])
        start += len(tensors)
    return results


def _signature(source: Path) -> str:
    """Changes when the version's files change (size and modification time of its folder's files)."""
    folder = source if source.is_dir() else source.parent
    parts = []
    for path in sorted(folder.rglob("*") if source.is_dir() else folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
