"""Benchmark model variants side by side: size, load time, latency, throughput, memory and COCO mAP.

::

    config = BenchmarkConfig(images=val_paths, annotations="instances_val2017.json", batch_sizes=(1, 8))
    report = benchmark_models(["yolox_nano.onnx", "yolox_nano_int8.onnx"], config)
    report.write("bench/")  # benchmark.json, benchmark.md, benchmark.png
    print(report.to_markdown())

Every variant runs in a fresh Python process (``python -m visionpipe.optimize._benchmark_worker``),
one after the other: runtimes sharing a process disturb each other's timings (thread pools, allocator
arenas, warmed caches) and a model that crashes or hangs its runtime takes only its own process down.
A variant that fails (unloadable file, worker crash, timeout) becomes a row with its error text and
whatever it measured before failing; the other variants still run.

What the worker measures, in this order:

* **load ms** — :func:`~visionpipe.models.loader.load_model`: ONNX Runtime session creation (graph
  optimisation, provider setup) plus configuring the decoder. ``onnxruntime`` is imported first, so
  the import is not counted.
* **latency** — pure model inference: the wall time of the backend's ``run`` on one batch of images
  that were decoded and preprocessed (and cast to the input's dtype) *before* timing. Decoding,
  preprocessing, box decoding and NMS are not included. ``warmup`` untimed runs then ``repeats``
  timed runs per batch size, the garbage collector paused; p50/p95/p99 (linear interpolation) over
  the timed runs. The timed batches cycle through the first ``max(timing_images, largest batch)``
  images that decode. A model whose batch axis is fixed (``fixed_batch``) gets larger batches the
  way :meth:`Backend.run <visionpipe.models.backend.Backend.run>` gives them to it, as consecutive
  runs at the fixed size (``calls_per_batch`` of them), so its batch-8 latency is eight batch-1
  runs. Sessions are created as the pipeline creates them (intra-op threads not spinning while idle).
* **throughput** — images/s at each batch size: batch / mean latency.
* **memory** — the worker's peak resident set (``VmHWM``; ``ru_maxrss`` off Linux) in MiB: ``baseline_mb`` after imports
  (before the model), ``peak_timing_mb`` after the latency runs, ``peak_mb`` at the end (after
  the mAP run through the full pipeline, if any).
* **mAP** — mAP@.5:.95 and mAP@.5 from pycocotools through the full
  :class:`~visionpipe.pipeline.Pipeline` (decode, preprocess, infer, decode boxes, NMS) at score
  threshold ``conf`` on the images that the COCO json lists, exactly as ``visionpipe eval`` scores.
* **size** — the model file plus any ONNX external-data files it references, in bytes.

Ratios in the report are relative to the first model given (the baseline), measured in the same run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from visionpipe.errors import BenchmarkError

WORKER_MODULE = "visionpipe.optimize._benchmark_worker"
PROGRESS_PREFIX = "@@visionpipe-benchmark "  # worker stderr lines carrying progress events (JSON)
DEVICES = ("cpu", "cuda", "tensorrt")
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchmarkConfig:
    """What to measure and how. ``annotations=None`` skips mAP; ``timeout`` (s) is per variant."""

    images: list[str]
    annotations: str | None = None
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 5
    repeats: int = 30
    device: str = "cpu"
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    conf: float = 0.01  # score threshold of the mAP run, as `visionpipe eval`
    family: str | None = None  # decoder family for every bare model file without metadata
    timeout: float | None = 1800.0
    timing_images: int = 8  # distinct images the timed batches cycle through (at least the largest batch)
    eval_batch_size: int = 1  # batch size of the pipeline in the mAP run
    # passes over the whole list, interleaved and each starting one model later, each variant in a
    # fresh process every pass: on a shared machine a neighbour's burst then hits every variant,
    # and each batch size reports the pass with the median p50 (mAP is measured in the first pass)
    rounds: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.images, (str, os.PathLike)):
            raise BenchmarkError("images must be a list of image paths, not one path")
        self.images = [os.fspath(p) for p in self.images]
        if not self.images:
            raise BenchmarkError("no images were given to benchmark on")
        if self.annotations is not None:
            self.annotations = os.fspath(self.annotations)
        sizes = sorted({int(b) for b in self.batch_sizes})
        if not sizes or sizes[0] < 1:
            raise BenchmarkError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        self.batch_sizes = tuple(sizes)
        if self.warmup < 0:
            raise BenchmarkError(f"warmup must not be negative, got {self.warmup}")
        if self.repeats < 1:
            raise BenchmarkError(f"repeats must be at least 1, got {self.repeats}")
        if self.device not in DEVICES:
            raise BenchmarkError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.intra_op_threads < 0:
            raise BenchmarkError(f"intra_op_threads must not be negative, got {self.intra_op_threads}")
        if not 0.0 <= self.conf <= 1.0:
            raise BenchmarkError(f"conf must lie in [0, 1], got {self.conf}")
        if self.timeout is not None and self.timeout <= 0:
            raise BenchmarkError(f"timeout must be positive, got {self.timeout}")
        if self.timing_images < 1 or self.eval_batch_size < 1 or self.rounds < 1:
            raise BenchmarkError("timing_images, eval_batch_size and rounds must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "batch_sizes" in values:
            values["batch_sizes"] = tuple(values["batch_sizes"])
        return cls(**values)


# --------------------------------------------------------------------------------------------
# results


@dataclass
class BatchLatency:
    """Latency of the backend on one batch of ``batch`` preprocessed images, in ms over ``runs`` timed runs."""

    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput: float  # images/s = batch / mean latency
    runs: int
    calls_per_batch: int = 1  # backend forward calls per batch (> 1 when the batch axis is fixed)
    p90_ms: float | None = None  # None in reports written before it was measured

    @classmethod
    def from_times(cls, batch: int, seconds: Sequence[float], calls_per_batch: int = 1) -> BatchLatency:
        import numpy as np

        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
        mean = float(ms.mean())
        return cls(
            batch=batch,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            mean_ms=mean,
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            throughput=batch / (mean / 1000.0) if mean > 0 else float("inf"),
            runs=len(ms),
            calls_per_batch=calls_per_batch,
            p90_ms=p90,
        )


@dataclass
class BenchmarkRow:
    """One variant's measurements. ``error`` is set when it failed; what it measured before stays."""

    name: str
    model: str  # the model as given (path, or the spec's model file)
    error: str | None = None
    model_path: str | None = None  # the ONNX file actually loaded
    size_bytes: int | None = None
    load_ms: float | None = None
    family: str | None = None
    input_hw: tuple[int, int] | None = None
    providers: list[str] = field(default_factory=list)
    fixed_batch: bool | None = None  # the model's batch axis is fixed (larger batches run as several calls)
    model_batch: int | None = None  # the fixed batch size, None when dynamic
    timing_images: int | None = None
    latency: list[BatchLatency] = field(default_factory=list)
    baseline_mb: float | None = None
    peak_timing_mb: float | None = None
    peak_mb: float | None = None
    map_50_95: float | None = None
    map_50: float | None = None
    map_images: int | None = None  # images scored
    map_detections: int | None = None  # detections scored (at score >= conf)
    failed_images: list[str] = field(default_factory=list)
    wall_s: float | None = None  # the worker's whole run, start-up included
    round_p50_ms: dict[str, list[float]] = field(default_factory=dict)  # batch -> p50 of each round

    @property
    def ok(self) -> bool:
        return self.error is None

    def latency_at(self, batch: int) -> BatchLatency | None:
        return next((lat for lat in self.latency if lat.batch == batch), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_hw"] = None if self.input_hw is None else list(self.input_hw)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkRow:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["latency"] = [BatchLatency(**lat) for lat in values.get("latency", [])]
        if values.get("input_hw") is not None:
            values["input_hw"] = tuple(values["input_hw"])
        return cls(**values)


@dataclass
class BenchmarkReport:
    """Rows in the order the models were given; the first is the baseline of every ratio."""

    rows: list[BenchmarkRow]
    environment: dict[str, Any]
    config: BenchmarkConfig
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    # -- ratios against the baseline ----------------------------------------------------------

    @property
    def baseline(self) -> BenchmarkRow | None:
        return self.rows[0] if self.rows else None

    def size_ratio(self, row: BenchmarkRow) -> float | None:
        """``row``'s size over the baseline's (0.25: a quarter of the bytes)."""
        base = self.baseline
        if base is None or not base.size_bytes or row.size_bytes is None:
            return None
        return row.size_bytes / base.size_bytes

    def speedup(self, row: BenchmarkRow, batch: int) -> float | None:
        """Baseline p50 latency over ``row``'s at ``batch`` (2.0: twice as fast as the baseline)."""
        base = self.baseline.latency_at(batch) if self.baseline is not None else None
        mine = row.latency_at(batch)
        if base is None or mine is None or mine.p50_ms <= 0:
            return None
        return base.p50_ms / mine.p50_ms

    def map_drop(self, row: BenchmarkRow) -> float | None:
        """Baseline mAP@.5:.95 minus ``row``'s (positive: ``row`` is less accurate)."""
        base = self.baseline
        if base is None or base.map_50_95 is None or row.map_50_95 is None:
            return None
        return base.map_50_95 - row.map_50_95

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        small, large = self.config.batch_sizes[0], self.config.batch_sizes[-1]
        rows = []
        for row in self.rows:
            data = row.to_dict()
            # derived, for readers of the json; ignored by from_dict
            data["relative"] = {
                "size_ratio": self.size_ratio(row),
                f"speedup_batch{small}": self.speedup(row, small),
                f"speedup_batch{large}": self.speedup(row, large),
                "map_drop": self.map_drop(row),
            }
            rows.append(data)
        return {"created": self.created, "environment": self.environment, "config": self.config.to_dict(), "rows": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkReport:
        return cls(
            rows=[BenchmarkRow.from_dict(r) for r in data["rows"]],
            environment=dict(data["environment"]),
            config=BenchmarkConfig.from_dict(data["config"]),
            created=data.get("created", ""),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        from visionpipe.io.formats import atomic_open

        with atomic_open(path) as handle:
            json.dump(self.to_dict(), handle, indent=2, allow_nan=False, default=_json_default)
            handle.write("\n")
        return Path(path)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BenchmarkReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # -- Markdown -----------------------------------------------------------------------------

    def to_markdown(self) -> str:
        """A Markdown page: machine and settings, one table row per variant, then the notes."""
        config, env = self.config, self.environment
        sizes = config.batch_sizes
        small, large = sizes[0], sizes[-1]
        speed_batches = (small,) if small == large else (small, large)
        base = self.baseline

        header = ["model", "size MiB", "size ×", "load ms"]
        header += [f"b{b} p50 / p95 / p99 ms" for b in sizes]
        header += [f"b{b} img/s" for b in sizes]
        header += [f"speed × b{b}" for b in speed_batches]
        header += ["peak MiB", "mAP@.5:.95", "mAP@.5", "mAP drop"]

        lines = [
            "# Model benchmark",
            "",
            f"- machine: {env.get('cpu', '?')}, {env.get('logical_cores', '?')} logical cores"
            + (f" ({env['physical_cores']} physical)" if env.get("physical_cores") else "")
            + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
            (
                f"- software: python {env.get('python', '?')}, onnxruntime {env.get('onnxruntime', '?')} "
                f"({', '.join(env.get('providers', [])) or '?'}), device {config.device}"
            ),
            f"- settings: batch sizes {', '.join(map(str, sizes))}; {config.warmup} warm-up + {config.repeats} timed runs "
            f"per batch size"
            + (f", the median-p50 pass of {config.rounds} interleaved passes" if config.rounds > 1 else "")
            + f"; intra-op threads {config.intra_op_threads or 'ONNX Runtime default'}; "
            + (
                f"mAP at conf {config.conf:g} on the annotated ones of {len(config.images)} images"
                if config.annotations
                else f"{len(config.images)} images, no annotations (no mAP)"
            ),
            (
                "- latency: backend inference of one preprocessed batch (no decoding, preprocessing, box decoding "
                "or NMS); img/s = batch / mean latency; peak = the worker process's peak RSS"
            ),
            (
                f"- ratios against the first model{f' ({_md(base.name)})' if base else ''}: size × = size / "
                "baseline size, speed × = baseline p50 / p50 (> 1 is faster), mAP drop = baseline mAP@.5:.95 − "
                "mAP@.5:.95"
            ),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        notes = []
        for row in self.rows:
            name = _md(row.name)
            if row.fixed_batch and large > (row.model_batch or 1):
                name += " ¹"
            if row.error is not None:
                name += " ²"
            cells = [
                name,
                _fmt(_mib(row.size_bytes), ".2f"),
                _fmt(self.size_ratio(row), ".2f", "×"),
                _fmt(row.load_ms, ".0f"),
            ]
            for b in sizes:
                lat = row.latency_at(b)
                cells.append("—" if lat is None else f"{lat.p50_ms:.2f} / {lat.p95_ms:.2f} / {lat.p99_ms:.2f}")
            for b in sizes:
                lat = row.latency_at(b)
                cells.append("—" if lat is None else f"{lat.throughput:.1f}")
            cells += [_fmt(self.speedup(row, b), ".2f", "×") for b in speed_batches]
            cells += [
                _fmt(row.peak_mb if row.peak_mb is not None else row.peak_timing_mb, ".0f"),
                _fmt(row.map_50_95, ".4f"),
                _fmt(row.map_50, ".4f"),
                _fmt(self.map_drop(row), "+.4f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
            if row.error is not None:
                notes.append(f"² **{_md(row.name)} failed**: {_md(_first_line(row.error))}")
        fixed = [r for r in self.rows if r.fixed_batch and large > (r.model_batch or 1)]
        if fixed:
            notes.insert(
                0,
                "¹ fixed batch axis: "
                + "; ".join(
                    f"{_md(r.name)} runs a batch of {large} as {-(-large // (r.model_batch or 1))} runs of {r.model_batch}"
                    for r in fixed
                ),
            )
        if notes:
            lines += ["", *[f"{note}  " for note in notes]]
        return "\n".join(lines) + "\n"

    # -- plot ---------------------------------------------------------------------------------

    def plot(self, path: str | os.PathLike) -> Path:
        """A PNG: p50 latency at the smallest batch (x) against mAP@.5:.95 (y), one labelled point
        per variant; without mAP, horizontal bars of p50 latency at each batch size."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        small = self.config.batch_sizes[0]
        fig = Figure(figsize=(8, 5.5), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        points = [(r, r.latency_at(small)) for r in self.rows if r.map_50_95 is not None and r.latency_at(small)]
        if points:
            for k, (row, lat) in enumerate(points):
                is_base = row is self.baseline
                ax.scatter(
                    lat.p50_ms, row.map_50_95, s=60, marker="*" if is_base else "o", zorder=3, color=f"C{k % 10}"
                )
                ax.annotate(
                    row.name, (lat.p50_ms, row.map_50_95), textcoords="offset points", xytext=(6, 5), fontsize=9
                )
            ax.set_xlabel(f"p50 latency at batch {small} (ms, backend inference only)")
            ax.set_ylabel("mAP@.5:.95")
            ax.grid(True, alpha=0.3)
            ax.set_xlim(left=0, right=max(lat.p50_ms for _, lat in points) * 1.25)
            ax.set_title("accuracy vs latency (up and left is better)")
        else:
            measured = [r for r in self.rows if r.latency]
            if measured:
                height = 0.8 / len(self.config.batch_sizes)
                for j, batch in enumerate(self.config.batch_sizes):
                    ys = [i + j * height for i in range(len(measured))]
                    values = [(r.latency_at(batch).p50_ms if r.latency_at(batch) else 0.0) for r in measured]
                    ax.barh(ys, values, height=height, label=f"batch {batch}")
                ax.set_yticks([i + 0.4 - height / 2 for i in range(len(measured))], [r.name for r in measured])
                ax.invert_yaxis()
                ax.set_xlabel("p50 latency per batch (ms, backend inference only)")
                ax.legend()
                ax.set_title("latency")
            else:
                ax.text(0.5, 0.5, "no variant was measured", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
        subtitle = f"{self.environment.get('cpu', '')} · device {self.config.device}"
        fig.suptitle(subtitle, fontsize=8, y=0.995)
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")
        return Path(path)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """benchmark.json, benchmark.md and benchmark.png in ``out_dir`` (created if needed)."""
        from visionpipe.io.formats import atomic_open

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "benchmark.json", "markdown": out / "benchmark.md", "png": out / "benchmark.png"}
        self.to_json(paths["json"])
        with atomic_open(paths["markdown"]) as handle:
            handle.write(self.to_markdown())
        self.plot(paths["png"])
        return paths


# --------------------------------------------------------------------------------------------
# running


ModelArg = str | os.PathLike | Mapping[str, Any] | Any  # a path, a spec dict or a ModelSpec
ProgressCallback = Callable[[str, dict[str, Any]], None]


def benchmark_models(
    models: Sequence[ModelArg],
    config: BenchmarkConfig,
    *,
    names: Sequence[str] | None = None,
    progress: bool = True,
    on_row: Callable[[BenchmarkRow], None] | None = None,
    runtimes: Sequence[str] | None = None,
) -> BenchmarkReport:
    """Benchmark each model (a model file, a spec file, a spec dict or a ``ModelSpec``) in its own
    worker process, one after another; the first is the baseline of the ratios.

    ``names`` labels the rows (default: each file's stem, made unique). A variant that fails is a
    row with ``error`` set; the others still run. ``on_row`` is called with each finished row (to
    save partial results as they come). ``progress`` shows a Rich progress display on stderr.
    ``runtimes`` (e.g. ``["onnxruntime", "openvino"]``) runs every model on each of those runtimes,
    side by side, labelled ``name [runtime]``.
    """
    if not models:
        raise BenchmarkError("no models were given to benchmark")
    if runtimes:
        models, names = on_runtimes(models, runtimes, names)
    if names is not None and len(names) != len(models):
        raise BenchmarkError(f"{len(names)} names given for {len(models)} models")
    labels = list(names) if names is not None else _unique([_default_name(m) for m in models])
    for model in models:
        _source(model)  # an argument of the wrong kind is an error at once, not half-way through
    environment = collect_environment(config.device)
    passes: list[list[BenchmarkRow]] = [[] for _ in models]
    display = _ProgressDisplay(progress, len(models) * config.rounds, config)
    display.open()
    try:
        for round_number in range(config.rounds):
            this_round = config if round_number == 0 else dataclasses.replace(config, annotations=None)
            # each pass starts one model later: the first process of a pass runs measurably slower
            # here (seen as a 1.3x gap between the fp32 baseline and the same file timed last)
            start = round_number % len(models)
            order = [*range(start, len(models)), *range(start)]
            for index in order:
                label, model, rows = labels[index], models[index], passes[index]
                display.start(label)
                row = run_variant(model, this_round, name=label, on_progress=display.event)
                display.finish(row)
                rows.append(row)
                if on_row is not None and round_number == config.rounds - 1:
                    on_row(_median_pass(rows))
    finally:
        display.close()
    return BenchmarkReport(rows=[_median_pass(rows) for rows in passes if rows], environment=environment, config=config)


def _median_pass(rows: list[BenchmarkRow]) -> BenchmarkRow:
    """The first pass's row (its mAP, size, load time) with each batch size's latency taken from
    the pass whose p50 is the median; the first error of any pass is kept."""
    import statistics

    merged = dataclasses.replace(rows[0], round_p50_ms={})
    merged.error = next((row.error for row in rows if row.error), None)
    if len(rows) == 1:
        return merged
    latency = []
    for first in rows[0].latency:
        measured = [lat for row in rows if (lat := row.latency_at(first.batch)) is not None]
        median = statistics.median_low([lat.p50_ms for lat in measured])
        latency.append(next(lat for lat in measured if lat.p50_ms == median))
        merged.round_p50_ms[str(first.batch)] = [lat.p50_ms for lat in measured]
    merged.latency = latency
    return merged


def run_variant(
    model: ModelArg,
    config: BenchmarkConfig,
    *,
    name: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkRow:
    """Measure one variant in a fresh worker process; never raises for the variant's own failures."""
    name = name or _default_name(model)
    label, source = _source(model)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visionpipe-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job = {"name": name, "label": label, "source": source, "config": config.to_dict()}
        job_path.write_text(json.dumps(job, default=_json_default), encoding="utf-8")
        outcome = _run_worker(job_path, out_path, config.timeout, on_progress)
        row, written = _read_row(out_path, name, label)
    row.wall_s = time.perf_counter() - started

    if outcome.timed_out:
        stage = f" (during {outcome.stage})" if outcome.stage else ""
        row.error = f"timed out after {config.timeout:g} s{stage}"
    elif row.error is None and (outcome.returncode != 0 or not written):
        missing = "" if written else " without writing a result"
        row.error = f"worker {_exit_reason(outcome.returncode)}{missing}" + (
            f": {outcome.tail}" if outcome.tail else ""
        )
    if row.size_bytes is None:
        path = row.model_path or (label if Path(label).suffix.lower() == ".onnx" else None)
        if path is not None and Path(path).is_file():
            row.size_bytes = model_size_bytes(path)
    return row


@dataclass
class _Outcome:
    returncode: int | None
    timed_out: bool
    stage: str | None
    tail: str


def _run_worker(job: Path, out: Path, timeout: float | None, on_progress: ProgressCallback | None) -> _Outcome:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the worker imports this very visionpipe
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", WORKER_MODULE, str(job), str(out)]
    tail: deque[str] = deque(maxlen=20)
    stage: list[str | None] = [None]

    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(PROGRESS_PREFIX):
                try:
                    event = json.loads(line[len(PROGRESS_PREFIX) :])
                except json.JSONDecodeError:
                    continue
                stage[0] = event.get("stage", stage[0])
                if on_progress is not None:
                    with contextlib.suppress(Exception):  # a display problem must not stop the benchmark
                        on_progress(stage[0] or "", event)
            elif line.strip():
                tail.append(line.rstrip())

    reader = threading.Thread(target=read, name="visionpipe-bench-reader", daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if process.poll() is None:  # timed out, or interrupted (Ctrl-C) while waiting
            process.kill()
            process.wait()
        reader.join(timeout=5)
    text = next((line for line in reversed(tail) if "Error" in line), tail[-1] if tail else "")
    return _Outcome(process.returncode, timed_out, stage[0], text)


def _read_row(path: Path, name: str, label: str) -> tuple[BenchmarkRow, bool]:
    """The worker's (possibly partial) row and True, or an empty row and False if it wrote nothing readable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return BenchmarkRow.from_dict(data), True
    except (OSError, ValueError, TypeError, KeyError):
        return BenchmarkRow(name=name, model=label), False


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def on_runtimes(
    models: Sequence[ModelArg], runtimes: Sequence[str], names: Sequence[str] | None = None
) -> tuple[list[ModelArg], list[str]]:
    """Each model once per runtime (as a spec naming it), and the labels ``name [runtime]``."""
    from visionpipe.models.backends import runtime_for
    from visionpipe.models.loader import resolve_spec

    for runtime in runtimes:
        runtime_for("model", runtime)  # an unknown name fails here, before any process starts
    labels = list(names) if names is not None else _unique([_default_name(m) for m in models])
    expanded: list[ModelArg] = []
    expanded_names: list[str] = []
    for model, label in zip(models, labels):
        spec = resolve_spec(model)  # type: ignore[arg-type]
        for runtime in runtimes:
            expanded.append(spec.model_copy(update={"runtime": runtime}))
            expanded_names.append(f"{label} [{runtime}]")
    return expanded, expanded_names


def _source(model: ModelArg) -> tuple[str, dict[str, Any]]:
    """(label, what the worker loads): ``{"path": ...}`` or ``{"spec": {...}}``."""
    if isinstance(model, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(model))
        return os.fspath(model), {"path": path}
    if isinstance(model, Mapping):
        spec = json.loads(json.dumps(dict(model), default=_json_default))
        if "model" in spec:
            spec["model"] = os.path.abspath(str(spec["model"]))
        return str(model.get("model", "?")), {"spec": spec}
    dump = getattr(model, "model_dump", None)  # a ModelSpec
    if callable(dump):
        spec = dump(mode="json", exclude_none=True)
        spec["model"] = os.path.abspath(spec["model"])
        return str(model.model), {"spec": spec}
    raise BenchmarkError(f"cannot benchmark {model!r}: give a model file, a spec file, a spec dict or a ModelSpec")


def _default_name(model: ModelArg) -> str:
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stem
    if isinstance(model, Mapping):
        return str(model.get("name") or Path(str(model.get("model", "model"))).stem)
    return str(getattr(model, "name", None) or Path(str(getattr(model, "model", "model"))).stem)


def _unique(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}#{counts[name]}")
    return out


# --------------------------------------------------------------------------------------------
# sizes and environment


def model_size_bytes(path: str | os.PathLike) -> int:
    """Bytes of an ONNX file plus the external-data files its tensors reference (each counted once)."""
    path = Path(path)
    total = path.stat().st_size
    if path.suffix.lower() in (".xml", ".param") and path.with_suffix(".bin").is_file():  # OpenVINO IR, NCNN
        return total + path.with_suffix(".bin").stat().st_size
    for location in external_data_files(path):
        total += location.stat().st_size
    return total


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The existing external-data files an ONNX model references (empty if none, or unreadable)."""
    try:
        import onnx

        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:
        return []
    base = Path(path).parent
    found: dict[Path, None] = {}

    def visit_tensor(tensor) -> None:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location:
                candidate = (base / location).resolve()
                if candidate.is_file() and candidate != Path(path).resolve():
                    found[candidate] = None

    def visit_graph(graph) -> None:
        for tensor in graph.initializer:
            visit_tensor(tensor)
        for sparse in graph.sparse_initializer:
            visit_tensor(sparse.values)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    visit_tensor(attribute.t)
                for tensor in attribute.tensors:
                    visit_tensor(tensor)
                if attribute.HasField("g"):
                    visit_graph(attribute.g)
                for sub in attribute.graphs:
                    visit_graph(sub)

    visit_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    visit_tensor(attribute.t)
    return list(found)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where that is not available."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields_ = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields_ = {k.strip(): v.strip() for k, v in fields_.items()}
        if "core id" in fields_:
            cores.add((fields_.get("physical id", "0"), fields_["core id"]))
    return len(cores) or None


def collect_environment(device: str = "cpu") -> dict[str, Any]:
    """Machine and software the numbers were measured on."""
    import numpy
    import onnxruntime

    from visionpipe._version import __version__

    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count()
    env: dict[str, Any] = {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "available_cores": available,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": list(onnxruntime.get_available_providers()),
        "visionpipe": __version__,
        "device": device,
    }
    if device != "cpu":
        env["gpu"] = _gpu_name()
    return env


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) or None


# --------------------------------------------------------------------------------------------
# progress display


class _ProgressDisplay:
    """A Rich progress display on stderr: variants done, and the current variant's stage.

    Off a terminal it prints one line per finished variant instead of a live display.
    """

    def __init__(self, enabled: bool, total: int, config: BenchmarkConfig) -> None:
        self.enabled = enabled
        self.total = total
        self.config = config
        self.progress = None
        self.console = None
        self.name = ""
        self.done = 0

    def open(self) -> None:
        if not self.enabled:
            return
        from rich.console import Console

        self.console = Console(stderr=True)
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stage]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.progress.start()
            self.overall = self.progress.add_task("benchmark", total=self.total, stage="")
            self.current = self.progress.add_task("", total=1, stage="", visible=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start(self, name: str) -> None:
        self.name = name
        if self.progress is not None:
            steps = 1 + len(self.config.batch_sizes) + (1 if self.config.annotations else 0)
            self.progress.reset(
                self.current, total=steps, completed=0, description=name, stage="starting", visible=True
            )
            self.progress.update(self.overall, stage=name)

    def event(self, stage: str, event: dict[str, Any]) -> None:
        if self.progress is None:
            return
        text = stage
        if stage == "latency":
            text = f"latency, batch {event.get('batch')}"
        elif stage == "map" and "total" in event:
            text = f"mAP, image {event.get('done', 0)}/{event['total']}"
        if event.get("step") is not None:
            self.progress.update(self.current, completed=event["step"], stage=text)
        else:
            self.progress.update(self.current, stage=text)

    def finish(self, row: BenchmarkRow) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress.update(self.current, visible=False)
            self.progress.update(self.overall, advance=1)
            if row.error is not None:
                self.progress.console.print(
                    f"[red]{row.name} failed:[/red] {_first_line(row.error)}", markup=True, highlight=False
                )
        elif self.console is not None:
            status = f"failed: {_first_line(row.error)}" if row.error else "done"
            wall = f" in {row.wall_s:.1f} s" if row.wall_s is not None else ""
            self.console.print(
                f"[{self.done}/{self.total}] {row.name}: {status}{wall}", markup=False, highlight=False, soft_wrap=True
            )


# --------------------------------------------------------------------------------------------
# formatting helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _mib(size: int | None) -> float | None:
    return None if size is None else size / MIB


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:{spec}}{suffix}"


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


__all__ = [
    "BatchLatency",
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkReport",
    "BenchmarkRow",
    "benchmark_models",
    "collect_environment",
    "model_size_bytes",
    "run_variant",
]
