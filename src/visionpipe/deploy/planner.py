"""Measure every candidate on this machine and choose the most accurate one that meets a target.

Each candidate is measured by the benchmark the ``benchmark`` command uses
(:func:`visionpipe.optimize.benchmark.run_variant`: a fresh process per model) at the target's
thread count (capped at this machine's cores):

* **size** — the exact bytes of every file the model needs;
* **latency** — p50 and p90 of the model alone on one preprocessed image. It is measured here, not
  on the device: a *host proxy* that ranks candidates and catches gross misses;
* **memory** — the measuring process's peak resident set after the timed runs, minus its footprint
  before the model was loaded;
* **mAP** — mAP@.5:.95 through the full pipeline on the confirmation images; the accuracy loss is
  the float32 source's mAP minus the candidate's, on the same images in the same run.

The choice: among candidates meeting every limit (format, precision, size, p90 latency, memory,
accuracy loss), the highest mAP; ties go to the smaller, then the faster file. Every other candidate
gets the reason it was not chosen. When none fits, :attr:`Plan.nearest_miss` names the candidate
whose worst violation is relatively smallest, with each limit it misses and by how much.

Measurements are cached by the candidate files' sha256 and the measuring settings, so re-planning
the same model for another target with the same thread count measures nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionpipe.deploy.candidates import Candidate
from visionpipe.deploy.targets import Target
from visionpipe.models.bundle import sha256_file

MIB = 1024 * 1024
Progress = Callable[[str], None]


@dataclass
class MeasureSettings:
    """How candidates are measured; small values keep tests fast, the defaults give steadier numbers."""

    images: list[str]  # confirmation images (timed on the first few, scored on all)
    annotations: str
    warmup: int = 5
    repeats: int = 30
    timing_images: int = 8
    timeout: float = 1800.0
    conf: float = 0.01

    def key(self, threads: int) -> dict[str, Any]:
        return {
            "images": [sha256_file(p) for p in self.images],
            "annotations": sha256_file(self.annotations),
            "warmup": self.warmup,
            "repeats": self.repeats,
            "timing_images": self.timing_images,
            "conf": self.conf,
            "threads": threads,
        }


@dataclass
class Measurement:
    size_bytes: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    memory_mb: float | None = None
    map_50_95: float | None = None
    map_50: float | None = None
    load_ms: float | None = None
    threads: int = 0
    error: str | None = None

    @property
    def size_mb(self) -> float | None:
        return None if self.size_bytes is None else self.size_bytes / MIB


@dataclass
class Violation:
    constraint: str  # size, latency, memory, accuracy, format, precision, measurement
    text: str
    excess: float = float("inf")  # how far over the limit, as a fraction of it (inf: not a number)


@dataclass
class Assessment:
    candidate: Candidate
    measurement: Measurement
    accuracy_loss: float | None = None
    violations: list[Violation] = field(default_factory=list)
    pareto: bool = False
    verdict: str = ""

    @property
    def fits(self) -> bool:
        return not self.violations

    @property
    def worst_excess(self) -> float:
        return max((v.excess for v in self.violations), default=0.0)


@dataclass
class Plan:
    target: Target
    assessments: list[Assessment]
    baseline_map: float | None
    environment: dict[str, Any]
    threads: int  # the thread count measured at
    validation_images: int
    chosen: Assessment | None = None
    nearest_miss: Assessment | None = None
    notes: list[str] = field(default_factory=list)

    def nearest_miss_text(self) -> str:
        miss = self.nearest_miss
        if miss is None:
            return "no candidate could be measured"
        return f"nearest miss: {miss.candidate.name}: " + "; ".join(v.text for v in miss.violations)

    def to_dict(self) -> dict[str, Any]:
        def row(a: Assessment) -> dict[str, Any]:
            return {
                "candidate": a.candidate.to_dict(),
                "measurement": asdict(a.measurement),
                "accuracy_loss": a.accuracy_loss,
                "violations": [asdict(v) for v in a.violations],
                "pareto": a.pareto,
                "verdict": a.verdict,
            }

        return {
            "target": self.target.constraints(),
            "chosen": None if self.chosen is None else self.chosen.candidate.name,
            "nearest_miss": None if self.nearest_miss is None else self.nearest_miss_text(),
            "baseline_map": self.baseline_map,
            "threads": self.threads,
            "validation_images": self.validation_images,
            "environment": self.environment,
            "notes": self.notes,
            "candidates": [row(a) for a in self.assessments],
        }

    def to_markdown(self) -> str:
        env = self.environment
        t = self.target
        lines = [
            f"Target `{t.name}`: size ≤ {t.max_size_mb:g} MiB, p90 latency ≤ {t.max_latency_ms:g} ms at "
            f"{t.thread_label()}, memory ≤ {'—' if t.max_memory_mb is None else f'{t.max_memory_mb:g} MiB'}, "
            f"mAP loss ≤ {t.max_accuracy_loss:g}; formats {', '.join(t.formats)}; precisions {', '.join(t.precisions)}.",
            f"Latency and memory are a host proxy: {env.get('cpu', '?')}, measured at "
            f"{f'{self.threads} thread(s)' if self.threads else 'all cores'}, "
            f"onnxruntime {env.get('onnxruntime', '?')}. mAP@.5:.95 on {self.validation_images} confirmation images; "
            f"loss against the float32 source ({_fmt(self.baseline_map, '.4f')}).",
            "",
            "| candidate | format | precision | size MiB | p50 ms | p90 ms | memory MiB | mAP@.5:.95 | loss | Pareto | verdict |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|:-:|---|",
        ]
        for a in self.assessments:
            m = a.measurement
            lines.append(
                f"| {a.candidate.name} | {a.candidate.format} | {a.candidate.precision} | {_fmt(m.size_mb, '.2f')} | "
                f"{_fmt(m.p50_ms, '.1f')} | {_fmt(m.p90_ms, '.1f')} | {_fmt(m.memory_mb, '.0f')} | "
                f"{_fmt(m.map_50_95, '.4f')} | {_fmt(a.accuracy_loss, '+.4f')} | {'●' if a.pareto else ''} | "
                f"{a.verdict.replace('|', '/')} |"
            )
        lines.append("")
        if self.chosen is not None:
            lines.append(f"Chosen: **{self.chosen.candidate.name}**.")
        else:
            lines.append(f"No candidate meets every limit; {self.nearest_miss_text()}.")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# measuring


def measurement_threads(target: Target) -> int:
    """The intra-op thread count candidates are timed at: the target's, capped at this machine's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return min(target.threads, cores) if target.threads else 0


def measure(
    candidate: Candidate,
    settings: MeasureSettings,
    threads: int,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """One candidate's numbers, from the cache when the same files were measured the same way."""
    from visionpipe.optimize.benchmark import BenchmarkConfig, run_variant

    if candidate.error:
        return Measurement(threads=threads, error=candidate.error)
    key = _cache_key(candidate, settings, threads)
    cached = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return Measurement(**json.loads(cached.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            pass
    if progress:
        progress(f"measuring {candidate.name}")
    config = BenchmarkConfig(
        images=list(settings.images),
        annotations=settings.annotations,
        batch_sizes=(1,),
        warmup=settings.warmup,
        repeats=settings.repeats,
        intra_op_threads=threads,
        conf=settings.conf,
        timeout=settings.timeout,
        timing_images=min(settings.timing_images, len(settings.images)),
    )
    row = run_variant(candidate.spec, config, name=candidate.name)
    latency = row.latency_at(1)
    measurement = Measurement(
        size_bytes=sum(Path(f).stat().st_size for f in candidate.files),
        p50_ms=None if latency is None else latency.p50_ms,
        p90_ms=None if latency is None else latency.p90_ms,
        memory_mb=(
            None
            if row.peak_timing_mb is None or row.baseline_mb is None
            else max(0.0, row.peak_timing_mb - row.baseline_mb)
        ),
        map_50_95=row.map_50_95,
        map_50=row.map_50,
        load_ms=row.load_ms,
        threads=threads,
        error=None if row.error is None else f"not measurable: {row.error}",
    )
    if cached is not None and measurement.error is None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".part")
        tmp.write_text(json.dumps(asdict(measurement)), encoding="utf-8")
        os.replace(tmp, cached)
    return measurement


def _cache_key(candidate: Candidate, settings: MeasureSettings, threads: int) -> str:
    spec = {k: v for k, v in candidate.spec.items() if k != "model"}
    data = {
        "files": [sha256_file(f) for f in candidate.files],
        "spec": spec,
        "settings": settings.key(threads),
        "version": 1,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------------------------
# choosing


def assess(
    candidates: Sequence[Candidate],
    measurements: Sequence[Measurement],
    target: Target,
    baseline_map: float | None,
) -> list[Assessment]:
    """Each candidate's violations of the target's limits, Pareto membership and verdict (no choice yet)."""
    out = []
    seen: dict[tuple[str, ...], str] = {}
    for candidate, m in zip(candidates, measurements):
        a = Assessment(candidate, m)
        if m.map_50_95 is not None and baseline_map is not None:
            a.accuracy_loss = baseline_map - m.map_50_95
        a.violations = _violations(candidate, m, a.accuracy_loss, target)
        # two builds can produce the same file (the accuracy-aware loop may settle on all-8-bit)
        digest = tuple(sha256_file(f) for f in candidate.files) if not candidate.error else ()
        if digest and digest in seen:
            a.violations.append(Violation("duplicate", f"the same file as {seen[digest]}", float("inf")))
        elif digest:
            seen[digest] = candidate.name
        out.append(a)
    _mark_pareto(out)
    return out


def choose(assessments: list[Assessment]) -> tuple[Assessment | None, Assessment | None]:
    """(chosen, nearest miss): the most accurate fitting candidate, else the relatively closest miss."""
    fitting = [a for a in assessments if a.fits]
    chosen = None
    if fitting:
        chosen = max(
            fitting,
            key=lambda a: (
                round(a.measurement.map_50_95 or 0.0, 4),
                -(a.measurement.size_bytes or 0),
                -(a.measurement.p90_ms or 0.0),
            ),
        )
    for a in assessments:
        if a is chosen:
            a.verdict = "chosen: meets every limit, most accurate"
        elif a.fits and chosen is not None:
            a.verdict = (
                f"meets every limit; less accurate than {chosen.candidate.name} "
                f"({_fmt(a.measurement.map_50_95, '.4f')} vs {_fmt(chosen.measurement.map_50_95, '.4f')})"
                if round(a.measurement.map_50_95 or 0, 4) < round(chosen.measurement.map_50_95 or 0, 4)
                else f"meets every limit; as accurate as {chosen.candidate.name} but larger or slower"
            )
        else:
            a.verdict = "rejected: " + "; ".join(v.text for v in a.violations)
    nearest = None
    if chosen is None:
        # a miss on numbers only (format and precision allowed, measured) is nearer than any other
        numeric = [a for a in assessments if all(v.excess != float("inf") for v in a.violations)]
        pool = numeric or [a for a in assessments if a.measurement.error is None]
        if pool:
            nearest = min(pool, key=lambda a: (a.worst_excess, -(a.measurement.map_50_95 or 0.0)))
    return chosen, nearest


def _violations(candidate: Candidate, m: Measurement, loss: float | None, target: Target) -> list[Violation]:
    out = []
    if candidate.format not in target.formats:
        out.append(Violation("format", f"format {candidate.format} not allowed by {target.name}"))
    if candidate.precision not in target.precisions:
        out.append(Violation("precision", f"precision {candidate.precision} not allowed by {target.name}"))
    if m.error:
        out.append(Violation("measurement", m.error))
        return out
    out += _over("size", m.size_mb, target.max_size_mb, "MiB", ".2f")
    out += _over("latency", m.p90_ms, target.max_latency_ms, "ms (p90, host proxy)", ".1f")
    if target.max_memory_mb is not None:
        out += _over("memory", m.memory_mb, target.max_memory_mb, "MiB", ".0f")
    if loss is None:
        out.append(Violation("accuracy", "mAP not measured"))
    elif loss > target.max_accuracy_loss + 1e-9:
        excess = (loss - target.max_accuracy_loss) / max(target.max_accuracy_loss, 0.001)
        out.append(
            Violation(
                "accuracy",
                f"mAP loss {loss:.4f} over the {target.max_accuracy_loss:g} limit by {loss - target.max_accuracy_loss:.4f}",
                excess,
            )
        )
    return out


def _over(name: str, value: float | None, limit: float, unit: str, spec: str) -> list[Violation]:
    if value is None:
        return [Violation(name, f"{name} not measured")]
    if value <= limit:
        return []
    over = value - limit
    return [
        Violation(
            name,
            f"{name} {value:{spec}} {unit.split(' ')[0]} over the {limit:g} {unit} limit by {over:{spec}} "
            f"({over / limit:.0%})",
            over / limit,
        )
    ]


def _mark_pareto(assessments: list[Assessment]) -> None:
    """Pareto-optimal on (size, p90 latency, mAP) among the measured candidates."""
    measured = [a for a in assessments if a.measurement.error is None and a.measurement.map_50_95 is not None]

    def objectives(a: Assessment) -> tuple[float, float, float]:
        m = a.measurement
        return (m.size_bytes or 0, m.p90_ms or 0.0, -(m.map_50_95 or 0.0))

    for a in measured:
        mine = objectives(a)
        a.pareto = not any(
            all(o <= v for o, v in zip(objectives(b), mine)) and objectives(b) != mine for b in measured if b is not a
        )


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


__all__ = [
    "Assessment",
    "MeasureSettings",
    "Measurement",
    "Plan",
    "Violation",
    "assess",
    "choose",
    "measure",
    "measurement_threads",
]
