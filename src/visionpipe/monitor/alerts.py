"""Alert rules over a check's result: YAML rules, sinks (log, JSON lines file, webhook), dedup and cooldown.

A rule compares one metric of a check (see ``METRICS``) with a threshold once the window holds at
least ``min_samples`` images. A firing rule notifies its sinks at most once per ``cooldown``
seconds (also across restarts: the state lives in the store), so a condition that persists, or
flaps, does not flood anyone. The clock comes in as a parameter.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visionpipe.errors import AlertRuleError, WebhookError
from visionpipe.monitor.features import IMAGE_FEATURES, PREDICTION_FEATURES
from visionpipe.monitor.store import Store
from visionpipe.monitor.windows import CheckResult

log = logging.getLogger("visionpipe.monitor.alerts")

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _drifting(check: CheckResult, features: Sequence[str]) -> float:
    return float(sum(1 for r in check.results if r.test == "ks" and r.drift and r.feature in features))


def _level(name: str) -> Callable[[CheckResult], float | None]:
    return lambda check: check.levels.get(name)


def _difference(name: str, sign: int) -> Callable[[CheckResult], float | None]:
    def value(check: CheckResult) -> float | None:
        cur, ref = check.levels.get(name), check.reference_levels.get(name)
        return None if cur is None or ref is None else sign * (cur - ref)

    return value


def _latency_ratio(check: CheckResult) -> float | None:
    cur, ref = check.levels.get("latency_p95_seconds"), check.reference_levels.get("latency_p95_seconds")
    return None if cur is None or not ref else cur / ref


METRICS: dict[str, Callable[[CheckResult], float | None]] = {
    "drift.image": lambda c: _drifting(c, IMAGE_FEATURES),  # image features that drift (KS, Holm)
    "drift.predictions": lambda c: _drifting(c, PREDICTION_FEATURES),
    "drift.class_mix": lambda c: float(any(r.test == "chi2" and r.drift for r in c.results)),
    "drift.multivariate": lambda c: float(any(r.test == "mmd" and r.drift for r in c.results)),
    "empty_rate": _level("empty_rate"),
    "empty_rate_increase": _difference("empty_rate", +1),
    "confidence_mean": _level("confidence_mean"),
    "confidence_drop": _difference("confidence_mean", -1),
    "error_rate": _level("error_rate"),
    "latency_p95_seconds": _level("latency_p95_seconds"),
    "latency_p95_ratio": _latency_ratio,
    "images": _level("images"),
}


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str = ">"
    threshold: float = 0.0
    last: int | None = None  # the window: the newest N images (None: the check's own window)
    min_samples: int = 30
    cooldown: float = 3600.0  # seconds between two notifications of this rule

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise AlertRuleError(f"rule {self.name!r}: unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.op not in OPERATORS:
            raise AlertRuleError(f"rule {self.name!r}: op must be one of {', '.join(OPERATORS)}, got {self.op!r}")


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("image-drift", "drift.image", ">", 0),
    Rule("class-mix-drift", "drift.class_mix", ">", 0),
    Rule("empty-image-rate", "empty_rate_increase", ">", 0.2),
    Rule("confidence-drop", "confidence_drop", ">", 0.1),
    Rule("error-rate", "error_rate", ">", 0.05),
    Rule("latency-p95", "latency_p95_ratio", ">", 2.0),
)


def load_rules(path: str | Path | None) -> list[Rule]:
    """Rules from a YAML file (a list, or a mapping with ``rules:``); the defaults without one."""
    if path is None:
        return list(DEFAULT_RULES)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AlertRuleError(f"cannot read alert rules {path}: {' '.join(str(exc).split())}") from None
    items = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise AlertRuleError(f"{path}: expected a list of rules (or 'rules:' with a list)")
    rules = []
    known = set(Rule.__dataclass_fields__)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "metric" not in item:
            raise AlertRuleError(f"{path}: rule {i + 1} needs at least 'metric'")
        unknown = set(item) - known
        if unknown:
            raise AlertRuleError(f"{path}: rule {i + 1} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        item = {"name": item.get("name", item["metric"]), **item}
        try:
            rules.append(Rule(**item))
        except TypeError as exc:
            raise AlertRuleError(f"{path}: rule {i + 1}: {exc}") from None
    return rules


@dataclass
class Alert:
    rule: str
    metric: str
    value: float
    op: str
    threshold: float
    ts: float
    tag: str | None
    reference: str
    images: int
    drifted: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        what = f"{self.metric} = {self.value:.4g} {self.op} {self.threshold:g}"
        extra = f"; drifting: {', '.join(self.drifted)}" if self.drifted else ""
        return f"[{self.rule}] {what} over {self.images} images vs reference {self.reference!r}{extra}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


# -- sinks -------------------------------------------------------------------------------------------


class Sink:
    def send(self, alert: Alert) -> None:
        raise NotImplementedError


class LogSink(Sink):
    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    def send(self, alert: Alert) -> None:
        self.logger.warning("ALERT %s", alert.message)


class JsonFileSink(Sink):
    """Appends one JSON line per alert and syncs it to disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(alert.as_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class WebhookSink(Sink):
    """POSTs the alert as JSON; retries (with doubling waits) on errors, timeouts and 5xx answers."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise AlertRuleError(f"webhook URL must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.attempts = 0

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.as_dict()).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            self.attempts += 1
            request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                    return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this request: retrying will not help
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = " ".join(str(getattr(exc, "reason", exc)).split()) or type(exc).__name__
        raise WebhookError(f"webhook {self.url} failed after {self.attempts} attempts: {last}")


# -- evaluation ---------------------------------------------------------------------------------------


@dataclass
class RuleOutcome:
    rule: Rule
    value: float | None
    firing: bool  # the condition holds now
    notified: bool  # sinks were told (not suppressed by cooldown)
    alert: Alert | None = None
    sink_errors: list[str] = field(default_factory=list)


def evaluate_rules(
    checks: Mapping[int | None, CheckResult],
    rules: Sequence[Rule],
    store: Store,
    sinks: Sequence[Sink] = (),
    *,
    clock: Callable[[], float] = time.time,
) -> list[RuleOutcome]:
    """Evaluate every rule on the check of its window (``checks[rule.last]``); notify and persist."""
    outcomes = []
    now = clock()
    for rule in rules:
        check = checks.get(rule.last)
        if check is None:
            continue
        key = f"{rule.name}|{check.window.get('tag') or '*'}"
        images = int(check.window.get("images") or 0)
        value = METRICS[rule.metric](check)
        if value is None or images < rule.min_samples:
            outcomes.append(RuleOutcome(rule, value, firing=False, notified=False))
            continue
        firing = OPERATORS[rule.op](value, rule.threshold)
        _, fired_at = store.alert_state(key)
        if not firing:
            store.set_alert_state(key, False, fired_at, value)
            outcomes.append(RuleOutcome(rule, value, firing=False, notified=False))
            continue
        alert = Alert(
            rule.name,
            rule.metric,
            value,
            rule.op,
            rule.threshold,
            now,
            check.window.get("tag"),
            check.reference,
            images,
            check.drifted,
        )
        if fired_at is not None and now - fired_at < rule.cooldown:
            store.set_alert_state(key, True, fired_at, value)  # deduplicated: still firing, already told
            outcomes.append(RuleOutcome(rule, value, firing=True, notified=False, alert=alert))
            continue
        errors = []
        for sink in sinks:
            try:
                sink.send(alert)
            except Exception as exc:  # one failing sink never silences the others
                errors.append(f"{type(sink).__name__}: {exc}")
                log.error("alert sink failed: %s", exc)
        store.set_alert_state(key, True, now, value)
        store.log_alert(now, rule.name, rule.metric, value, rule.threshold, alert.message)
        outcomes.append(RuleOutcome(rule, value, firing=True, notified=True, alert=alert, sink_errors=errors))
    return outcomes


@dataclass
class CheckReport:
    """A check of the latest window and what the alert rules made of it."""

    check: CheckResult
    outcomes: list[RuleOutcome]

    @property
    def firing(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if o.firing]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.check.as_dict(),
            "alerts": [
                {
                    "rule": o.rule.name,
                    "metric": o.rule.metric,
                    "value": o.value,
                    "op": o.rule.op,
                    "threshold": o.rule.threshold,
                    "firing": o.firing,
                    "notified": o.notified,
                    "message": o.alert.message if o.alert else None,
                    "sink_errors": o.sink_errors,
                }
                for o in self.outcomes
            ],
        }


def check_and_alert(
    store: Store,
    *,
    reference: str | None = None,
    last: int | None = None,
    since: float | None = None,
    tag: str | None = None,
    rules: Sequence[Rule] | str | Path | None = None,
    sinks: Sequence[Sink] = (),
    alpha: float | None = None,
    seed: int = 0,
    clock: Callable[[], float] = time.time,
) -> CheckReport:
    """Check the window (newest ``last`` images, or since ``since``) against the reference, check each
    rule's own window where it names one, and evaluate the rules (notifying ``sinks``)."""
    from visionpipe.monitor import drift
    from visionpipe.monitor.windows import check

    if rules is None or isinstance(rules, (str, Path)):
        rules = load_rules(rules)
    options: dict[str, Any] = {"reference": reference, "tag": tag, "seed": seed}
    if alpha is not None:
        options["alpha"] = alpha
    else:
        options["alpha"] = drift.DEFAULT_ALPHA
    checks: dict[int | None, CheckResult] = {None: check(store, last=last, since=since, **options)}
    for rule_last in {r.last for r in rules if r.last is not None}:
        checks[rule_last] = check(store, last=rule_last, **options)
    return CheckReport(checks[None], evaluate_rules(checks, rules, store, sinks, clock=clock))
