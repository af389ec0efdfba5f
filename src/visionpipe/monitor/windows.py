"""References and windows: freeze a reference from stored records, read a current window, compare.

A reference is frozen from the records of a tag and/or a time range: a capped random sample of
every feature (so drift tests keep working after raw rows expire), bin edges at its quantiles
(every later window histogram uses them), its class counts, and summary levels for alert rules.
The current window is the newest N records or a time range.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from visionpipe.errors import MonitorDataError
from visionpipe.monitor import drift
from visionpipe.monitor.features import IMAGE_FEATURES, PREDICTION_FEATURES
from visionpipe.monitor.monitor import CLASSES
from visionpipe.monitor.store import Store

DRIFT_FEATURES = IMAGE_FEATURES + PREDICTION_FEATURES
MMD_FEATURES = IMAGE_FEATURES  # the multivariate test looks at the images; predictions get their own tests
MAX_REFERENCE_SAMPLES = 5000


@dataclass
class Window:
    """Per-feature values (one per image, NaN where undefined) and class counts of some records."""

    values: dict[str, np.ndarray]
    classes: dict[str, int]
    images: int
    errors: int
    first_ts: float | None = None
    last_ts: float | None = None

    @classmethod
    def from_records(cls, rows: list[tuple]) -> Window:
        """From ``Store.records`` rows (id, ts, tag, image_id, error, features, classes, ...)."""
        ok = [row for row in rows if row[4] is None]
        parsed = [json.loads(row[5]) for row in ok]
        names = list(dict.fromkeys(name for record in parsed for name in record))
        values = {
            name: np.array([np.nan if r.get(name) is None else r[name] for r in parsed], dtype=np.float64)
            for name in names
        }
        classes: dict[str, int] = {}
        for row in ok:
            for name, count in json.loads(row[6]).items():
                classes[name] = classes.get(name, 0) + count
        return cls(
            values,
            classes,
            images=len(rows),
            errors=len(rows) - len(ok),
            first_ts=rows[0][1] if rows else None,
            last_ts=rows[-1][1] if rows else None,
        )

    def matrix(self, names: tuple[str, ...]) -> np.ndarray:
        present = [n for n in names if n in self.values]
        if not present:
            return np.empty((0, 0))
        return np.column_stack([self.values[n] for n in present])

    def levels(self) -> dict[str, float | None]:
        """The summary levels alert rules compare: rates, means and the latency p95."""

        def mean(name: str) -> float | None:
            v = self.values.get(name)
            v = v[np.isfinite(v)] if v is not None else np.empty(0)
            return float(v.mean()) if len(v) else None

        latency = self.values.get("total_seconds")
        latency = latency[np.isfinite(latency)] if latency is not None else np.empty(0)
        return {
            "images": float(self.images),
            "error_rate": self.errors / self.images if self.images else None,
            "empty_rate": mean("empty"),
            "confidence_mean": mean("confidence_mean"),
            "count_mean": mean("count"),
            "latency_p95_seconds": float(np.percentile(latency, 95)) if len(latency) else None,
        }


def freeze_reference(
    store: Store,
    name: str,
    *,
    tag: str | None = None,
    since: float | None = None,
    until: float | None = None,
    bins: int = 10,
    max_samples: int = MAX_REFERENCE_SAMPLES,
    seed: int = 0,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Freeze the records of ``tag`` between ``since`` and ``until`` as reference ``name``."""
    window = Window.from_records(store.records(tag=tag, since=since, until=until))
    if window.images - window.errors < drift.MIN_SAMPLES:
        raise MonitorDataError(
            f"a reference needs at least {drift.MIN_SAMPLES} recorded images; found {window.images - window.errors}"
            + (f" with tag {tag!r}" if tag else "")
        )
    rng = np.random.default_rng(seed)
    n = window.images - window.errors
    keep = np.sort(rng.choice(n, max_samples, replace=False)) if n > max_samples else np.arange(n)
    samples = {k: v[keep] for k, v in window.values.items()}
    spec = {
        "name": name,
        "tag": tag,
        "since": since,
        "until": until,
        "images": window.images,
        "samples": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in samples.items()},
        "edges": {k: drift.reference_edges(v, bins).tolist() for k, v in window.values.items()},
        "classes": window.classes,
        "levels": window.levels(),
    }
    store.save_reference(name, clock(), spec)
    return spec


def reference_window(spec: dict) -> Window:
    values = {
        k: np.array([np.nan if x is None else x for x in v], dtype=np.float64) for k, v in spec["samples"].items()
    }
    n = len(next(iter(values.values()))) if values else 0
    return Window(values, dict(spec["classes"]), images=n, errors=0)


@dataclass
class CheckResult:
    """A comparison of a current window with a reference."""

    reference: str
    window: dict  # how the window was chosen and its time span
    results: list[drift.DriftResult]
    levels: dict[str, float | None]
    reference_levels: dict[str, float | None]
    drifted: list[str] = field(default_factory=list)  # features (and "class_mix", "all") that drift

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "window": self.window,
            "levels": self.levels,
            "reference_levels": self.reference_levels,
            "drifted": self.drifted,
            "results": [r.as_dict() for r in self.results],
        }


def compare(
    reference: Window,
    current: Window,
    *,
    edges: dict | None = None,
    alpha: float = drift.DEFAULT_ALPHA,
    seed: int = 0,
    permutations: int = drift.MMD_PERMUTATIONS,
) -> list[drift.DriftResult]:
    """Every drift test of the current window against the reference (see ``drift``)."""
    ref = {k: reference.values[k] for k in DRIFT_FEATURES if k in reference.values}
    cur = {k: current.values[k] for k in DRIFT_FEATURES if k in current.values}
    edges_arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (edges or {}).items()}
    results = drift.feature_tests(ref, cur, edges_arrays, alpha)
    results += drift.class_mix_tests(
        reference.classes, current.classes, alpha, design_effect=max(_design_effect(reference), _design_effect(current))
    )
    names = tuple(n for n in MMD_FEATURES if n in reference.values and n in current.values)
    if names:
        thin = (_thinning(reference, names), _thinning(current, names))
        mmd = drift.mmd_test(
            reference.matrix(names), current.matrix(names), alpha=alpha, seed=seed, permutations=permutations, thin=thin
        )
        if mmd is not None:
            results.append(mmd)
    return results


def _design_effect(window: Window) -> float:
    """Boxes per image (boxes of one image are not independent draws) over the serial correlation
    of the per-image box count."""
    count = window.values.get("count")
    if count is None or not len(count):
        return 1.0
    boxes_per_image = max(1.0, float(np.nanmean(count)))
    return boxes_per_image / drift.effective_fraction(count)


def _thinning(window: Window, names: tuple[str, ...]) -> int:
    """Keep every k-th image for the MMD so that the kept rows are about independent."""
    fractions = [drift.effective_fraction(window.values[n]) for n in names if n in window.values]
    return max(1, round(1 / min(fractions))) if fractions else 1


def check(
    store: Store,
    *,
    reference: str | None = None,
    last: int | None = None,
    since: float | None = None,
    until: float | None = None,
    tag: str | None = None,
    alpha: float = drift.DEFAULT_ALPHA,
    seed: int = 0,
    permutations: int = drift.MMD_PERMUTATIONS,
) -> CheckResult:
    """Compare the newest ``last`` records (or those between ``since`` and ``until``) with a reference."""
    found = store.reference(reference)
    if found is None:
        raise MonitorDataError(
            f"no reference named {reference!r} in the store" if reference else "the store has no reference yet"
        )
    name, spec = found
    rows = store.records(tag=tag, last=last, since=since, until=until)
    if not rows and last is None:
        return check_histograms(store, name, spec, since=since, until=until, tag=tag, alpha=alpha)
    current = Window.from_records(rows)
    if not rows:
        raise MonitorDataError("no records in the chosen window")
    results = compare(
        reference_window(spec), current, edges=spec.get("edges"), alpha=alpha, seed=seed, permutations=permutations
    )
    drifted = list(dict.fromkeys(r.feature for r in results if r.drift and r.p_value is not None))
    return CheckResult(
        reference=name,
        window={
            "tag": tag,
            "last": last,
            "since": since,
            "until": until,
            "images": current.images,
            "first_ts": current.first_ts,
            "last_ts": current.last_ts,
        },
        results=results,
        levels=current.levels(),
        reference_levels=spec.get("levels", {}),
        drifted=drifted,
    )


def check_histograms(
    store: Store,
    name: str,
    spec: dict,
    *,
    since: float | None = None,
    until: float | None = None,
    tag: str | None = None,
    alpha: float = drift.DEFAULT_ALPHA,
) -> CheckResult:
    """A time range whose raw rows have expired, checked on the window histograms alone.

    Only windows written while this reference was in force carry its bins. Per feature: a
    chi-square test of homogeneity of the reference's and the window's bin counts (Holm-corrected
    across features, like KS on raw rows) and PSI; the class mix as usual. Serial correlation cannot
    be estimated from histograms, so these tests assume independent images.
    """
    # whole windows that start inside the range
    rows = [r for r in store.window_stats(tag) if (since is None or r[0] >= since) and (until is None or r[0] < until)]
    if not rows:
        raise MonitorDataError("no records and no window statistics in the chosen time range")
    reference = reference_window(spec)
    edges = spec.get("edges", {})
    counts: dict[str, np.ndarray] = {}
    totals: dict[str, list[float]] = {}
    classes: dict[str, int] = {}
    images = 0
    for _start, _tag, feature, n, total, _sq, _lo, _hi, ref_name, bins in rows:
        if feature == CLASSES:
            images += n
            for cls, count in (bins or {}).items():
                classes[cls] = classes.get(cls, 0) + count
            continue
        item = totals.setdefault(feature, [0.0, 0.0])
        item[0] += n
        item[1] += total
        if ref_name == name and bins is not None and feature in edges and len(bins) == len(edges[feature]) - 1:
            counts[feature] = counts.get(feature, np.zeros(len(bins))) + np.asarray(bins, dtype=np.float64)
    chi2, others = [], []
    for feature in DRIFT_FEATURES:
        if feature not in counts or feature not in reference.values:
            continue
        bins = np.asarray(edges[feature], dtype=np.float64)
        ref = drift.histogram(reference.values[feature], bins).astype(np.float64)
        cur = counts[feature]
        seen = (ref + cur) > 0
        if ref.sum() < drift.MIN_SAMPLES or cur.sum() < drift.MIN_SAMPLES or seen.sum() < 2:
            continue
        statistic, p, _, _ = stats.chi2_contingency(np.vstack([ref[seen], cur[seen]]), correction=False)
        n_ref, n_cur = int(ref.sum()), int(cur.sum())
        chi2.append(
            drift.DriftResult(feature, "chi2_binned", float(statistic), float(p), alpha, p <= alpha, n_ref, n_cur)
        )
        psi = drift.psi_from_counts(ref, cur)
        others.append(
            drift.DriftResult(feature, "psi", psi, None, drift.PSI_THRESHOLD, psi > drift.PSI_THRESHOLD, n_ref, n_cur)
        )
    results = drift.holm(chi2, alpha) + others + drift.class_mix_tests(reference.classes, classes, alpha)
    means = {k: v[1] / v[0] for k, v in totals.items() if v[0] > 0}
    levels: dict[str, float | None] = {
        "images": float(images),
        "error_rate": means.get("error"),
        "empty_rate": means.get("empty"),
        "confidence_mean": means.get("confidence_mean"),
        "count_mean": means.get("count"),
        "latency_p95_seconds": None,  # a percentile cannot be read back from sums
    }
    return CheckResult(
        reference=name,
        window={"tag": tag, "last": None, "since": since, "until": until, "images": images, "source": "histograms"},
        results=results,
        levels=levels,
        reference_levels=spec.get("levels", {}),
        drifted=list(dict.fromkeys(r.feature for r in results if r.drift and r.p_value is not None)),
    )


__all__ = ["CheckResult", "MonitorDataError", "Window", "check", "compare", "freeze_reference", "reference_window"]
