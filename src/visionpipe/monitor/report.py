"""One self-contained HTML report (and its JSON twin) of a monitoring store.

What it shows: the drift table of the latest window against the reference, the reference and
current histogram of every feature, time series per window (images, empty rate, mean confidence,
mean latency, errors, accuracy once labels arrived) and the latest alerts. What keeps it small at
any data size: no raw rows; histograms over the reference's bins; time series read from the
constant-size window statistics and merged into at most ``max_points`` points; at most
``max_alerts`` alerts; plots as small PNGs. Written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.monitor import drift
from visionpipe.monitor.features import DESCRIPTIONS, IMAGE_FEATURES, PREDICTION_FEATURES
from visionpipe.monitor.store import Store
from visionpipe.monitor.windows import CheckResult, Window, check, reference_window

SERIES = {  # title: (feature, statistic)
    "images per window": ("classes", "n"),
    "empty-image rate": ("empty", "mean"),
    "mean confidence": ("confidence_mean", "mean"),
    "detections per image": ("count", "mean"),
    "mean latency (s)": ("total_seconds", "mean"),
    "error rate": ("error", "mean"),
}


def _series(store: Store, tag: str | None, max_points: int) -> dict[str, dict[str, list]]:
    """Per-window values of SERIES, merged into at most ``max_points`` buckets of whole windows."""
    rows = store.window_stats(tag)
    starts = sorted({r[0] for r in rows})
    if not starts:
        return {}
    per_bucket = max(1, math.ceil(len(starts) / max_points))
    bucket_of = {s: i // per_bucket for i, s in enumerate(starts)}
    n_buckets = bucket_of[starts[-1]] + 1
    bucket_start = [starts[i * per_bucket] for i in range(n_buckets)]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for start, _tag, feature, n, total, *_ in rows:
        b = bucket_of[start]
        sums.setdefault(feature, np.zeros(n_buckets))[b] += total
        counts.setdefault(feature, np.zeros(n_buckets))[b] += n
    out = {}
    for title, (feature, statistic) in SERIES.items():
        if feature not in counts:
            continue
        n = counts[feature]
        values = n if statistic == "n" else np.divide(sums[feature], n, out=np.full(n_buckets, np.nan), where=n > 0)
        out[title] = {"window_start": bucket_start, "value": [None if not np.isfinite(v) else float(v) for v in values]}
    return out


def _accuracy_series(store: Store, max_points: int) -> dict[str, list]:
    rows = store.accuracy()
    step = max(1, math.ceil(len(rows) / max_points))
    rows = rows[::step]
    return {
        "window_start": [r[0] for r in rows],
        "map_50_95": [r[4] for r in rows],
        "map_50": [r[5] for r in rows],
        "images": [r[3] for r in rows],
    }


def _histograms(reference: Window, current: Window, edges: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in IMAGE_FEATURES + PREDICTION_FEATURES:
        if name not in edges or name not in reference.values:
            continue
        bins = np.asarray(edges[name], dtype=np.float64)
        out[name] = {
            "edges": [None if not np.isfinite(e) else float(e) for e in bins],
            "reference": drift.histogram(reference.values[name], bins).tolist(),
            "current": drift.histogram(current.values.get(name, np.empty(0)), bins).tolist(),
        }
    return out


def build_report(
    store: Store,
    *,
    reference: str | None = None,
    last: int | None = 1000,
    tag: str | None = None,
    max_points: int = 300,
    max_alerts: int = 100,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The report's data (the JSON twin): everything the HTML shows, nothing per image."""
    data: dict[str, Any] = {"generated": clock(), "store": _safe_location(store.location), "tag": tag}
    found = store.reference(reference)
    result: CheckResult | None = None
    if found is not None and store.records(tag=tag, last=1, columns="id"):
        result = check(store, reference=found[0], last=last, tag=tag)
        current = Window.from_records(store.records(tag=tag, last=last))
        data["histograms"] = _histograms(reference_window(found[1]), current, found[1].get("edges", {}))
    data["check"] = result.as_dict() if result else None
    data["series"] = _series(store, tag, max_points)
    data["accuracy"] = _accuracy_series(store, max_points)
    data["alerts"] = [
        {"ts": ts, "rule": rule, "metric": metric, "value": value, "threshold": threshold, "message": message}
        for ts, rule, metric, value, threshold, message in store.alerts(max_alerts)
    ]
    return data


def _safe_location(location: str) -> str:
    from visionpipe.monitor.store import _redact

    return _redact(location)


# -- rendering ---------------------------------------------------------------------------------------


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _histogram_png(name: str, item: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    ref = np.asarray(item["reference"], dtype=np.float64)
    cur = np.asarray(item["current"], dtype=np.float64)
    x = np.arange(len(ref))
    figure, axis = plt.subplots(figsize=(3.2, 1.9))
    axis.bar(x - 0.2, ref / max(ref.sum(), 1), width=0.4, label="reference", color="#4c72b0")
    axis.bar(x + 0.2, cur / max(cur.sum(), 1), width=0.4, label="current", color="#dd8452")
    inner = [e for e in item["edges"][1:-1]]
    axis.set_xticks(np.arange(len(inner)) + 0.5, [f"{e:.3g}" for e in inner], rotation=60, fontsize=6)
    axis.set_title(name, fontsize=8)
    axis.tick_params(axis="y", labelsize=6)
    axis.legend(fontsize=6)
    figure.tight_layout()
    return _png(figure)


def _series_png(title: str, starts: list[float], values: list[float | None]) -> str:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.2, 2.0))
    times = [np.datetime64(int(s), "s") for s in starts]
    axis.plot(times, [np.nan if v is None else v for v in values], marker="." if len(values) < 60 else None, lw=1)
    axis.set_title(title, fontsize=8)
    axis.tick_params(labelsize=6)
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    figure.tight_layout()
    return _png(figure)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def render_html(data: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>visionpipe monitoring report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222;background:#fff}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
        "tr.drift{background:#fdd}.grid{display:flex;flex-wrap:wrap;gap:6px}h2{margin-top:1.2em}"
        ".ok{color:#262}.bad{color:#b00;font-weight:bold}</style></head><body>",
        "<h1>visionpipe monitoring report</h1>",
        f"<p>Store {e(data['store'])} · generated {e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(data['generated'])))}</p>",
    ]
    result = data.get("check")
    if result:
        w = result["window"]
        drifted = result["drifted"]
        verdict = (
            f"<span class='bad'>drift: {e(', '.join(drifted))}</span>"
            if drifted
            else "<span class='ok'>no drift</span>"
        )
        parts.append(
            f"<h2>Drift</h2><p id='verdict'>Latest {w['images']} images"
            f"{' of tag ' + e(str(w['tag'])) if w.get('tag') else ''} vs reference {e(result['reference'])}: {verdict}</p>"
        )
        parts.append(
            "<table id='drift-table'><thead><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th>"
            "<th>threshold</th><th>drift</th><th>n ref</th><th>n current</th></tr></thead><tbody>"
        )
        for r in result["results"]:
            parts.append(
                f"<tr class='{'drift' if r['drift'] else ''}'><td>{e(r['feature'])}</td><td>{e(r['test'])}</td>"
                f"<td>{_fmt(r['statistic'])}</td><td>{_fmt(r['p_value'])}</td><td>{_fmt(r['threshold'])}</td>"
                f"<td>{'yes' if r['drift'] else 'no'}</td><td>{r['n_reference']}</td><td>{r['n_current']}</td></tr>"
            )
        parts.append("</tbody></table>")
        levels = result["levels"]
        reference_levels = result["reference_levels"]
        parts.append("<h2>Levels</h2><table id='levels'><tr><th>level</th><th>reference</th><th>current</th></tr>")
        for key in levels:
            parts.append(
                f"<tr><td>{e(key)}</td><td>{_fmt(reference_levels.get(key))}</td><td>{_fmt(levels[key])}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<h2>Drift</h2><p id='verdict'>No reference frozen yet (visionpipe monitor reference).</p>")
    histograms = data.get("histograms") or {}
    if histograms:
        parts.append("<h2>Reference vs current</h2><div class='grid' id='histograms'>")
        for name, item in histograms.items():
            parts.append(
                f"<figure><img alt='{e(name)}' src='{_histogram_png(name, item)}'>"
                f"<figcaption style='font-size:10px'>{e(DESCRIPTIONS.get(name, ''))}</figcaption></figure>"
            )
        parts.append("</div>")
    series = data.get("series") or {}
    accuracy = data.get("accuracy") or {}
    if series or accuracy.get("window_start"):
        parts.append("<h2>Over time</h2><div class='grid' id='series'>")
        for title, item in series.items():
            parts.append(f"<img alt='{e(title)}' src='{_series_png(title, item['window_start'], item['value'])}'>")
        if accuracy.get("window_start"):
            for key, title in (("map_50_95", "mAP@.5:.95"), ("map_50", "mAP@.5")):
                parts.append(f"<img alt='{title}' src='{_series_png(title, accuracy['window_start'], accuracy[key])}'>")
        parts.append("</div>")
    parts.append("<h2>Alerts</h2>")
    if data.get("alerts"):
        parts.append("<table id='alerts'><tr><th>time (UTC)</th><th>rule</th><th>message</th></tr>")
        for a in reversed(data["alerts"]):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["ts"]))
            parts.append(f"<tr><td>{when}</td><td>{e(a['rule'])}</td><td>{e(a['message'])}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p id='alerts'>No alert has fired.</p>")
    parts.append("</body></html>")
    return "".join(parts)


def _finite(value: Any) -> Any:
    """The data with NaN and infinities as null (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(store: Store, out: str | Path, **options: Any) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and its JSON twin beside it (same name, ``.json``); return both paths."""
    from visionpipe.io.formats import atomic_write_bytes

    data = build_report(store, **options)
    out = Path(out)
    twin = out.with_suffix(".json")
    atomic_write_bytes(out, render_html(data).encode("utf-8"))
    atomic_write_bytes(twin, json.dumps(_finite(data), indent=1, allow_nan=False).encode("utf-8"))
    return out, twin
