"""Alert rules with a fake clock, a real SQLite store, and real webhook servers on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionpipe.monitor import Store
from visionpipe.monitor.alerts import (
    DEFAULT_RULES,
    AlertRuleError,
    JsonFileSink,
    Rule,
    WebhookError,
    WebhookSink,
    evaluate_rules,
    load_rules,
)
from visionpipe.monitor.drift import DriftResult
from visionpipe.monitor.windows import CheckResult


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def a_check(drifting: bool, images: int = 100, confidence: float = 0.6) -> CheckResult:
    ks = DriftResult(
        "brightness", "ks", 0.5 if drifting else 0.05, 1e-9 if drifting else 0.6, 0.001, drifting, 128, images
    )
    return CheckResult(
        reference="ref",
        window={"tag": "cam1", "images": images},
        results=[ks],
        levels={"images": images, "confidence_mean": confidence, "error_rate": 0.0},
        reference_levels={"confidence_mean": 0.6},
        drifted=["brightness"] if drifting else [],
    )


class Recorder:
    def __init__(self) -> None:
        self.alerts = []

    def send(self, alert) -> None:
        self.alerts.append(alert)


def test_cooldown_and_dedup_with_a_fake_clock_and_persisted_state(tmp_path):
    clock, sink = FakeClock(), Recorder()
    rule = Rule("image-drift", "drift.image", ">", 0, cooldown=600, min_samples=30)
    with Store.open(tmp_path / "m.db") as store:
        first = evaluate_rules({None: a_check(True)}, [rule], store, [sink], clock=clock)
        assert first[0].firing and first[0].notified and len(sink.alerts) == 1
        assert "brightness" in sink.alerts[0].message
        clock.now += 300  # still drifting, within the cooldown: firing but not repeated
        again = evaluate_rules({None: a_check(True)}, [rule], store, [sink], clock=clock)
        assert again[0].firing and not again[0].notified and len(sink.alerts) == 1
        clock.now += 100  # resolved, then drifting again, still within the cooldown: no flood
        assert not evaluate_rules({None: a_check(False)}, [rule], store, [sink], clock=clock)[0].firing
        clock.now += 100
        assert not evaluate_rules({None: a_check(True)}, [rule], store, [sink], clock=clock)[0].notified
    with Store.open(tmp_path / "m.db") as store:  # a new process: the state is read back
        assert not evaluate_rules({None: a_check(True)}, [rule], store, [sink], clock=clock)[0].notified
        clock.now += 600
        assert evaluate_rules({None: a_check(True)}, [rule], store, [sink], clock=clock)[0].notified
        assert len(sink.alerts) == 2 and len(store.alerts()) == 2


def test_min_samples_and_default_rules(tmp_path):
    clock, sink = FakeClock(), Recorder()
    with Store.open(tmp_path / "m.db") as store:
        small = evaluate_rules({None: a_check(True, images=10)}, DEFAULT_RULES, store, [sink], clock=clock)
        assert not any(o.firing for o in small) and not sink.alerts
        outcomes = evaluate_rules({None: a_check(True, confidence=0.3)}, DEFAULT_RULES, store, [sink], clock=clock)
    fired = {o.rule.name for o in outcomes if o.notified}
    assert fired == {"image-drift", "confidence-drop"}


def test_rules_yaml(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: dark, metric: drift.image, threshold: 0, last: 200, cooldown: 60}\n")
    (rule,) = load_rules(path)
    assert (rule.name, rule.op, rule.last, rule.cooldown, rule.min_samples) == ("dark", ">", 200, 60, 30)
    assert load_rules(None) == list(DEFAULT_RULES)
    path.write_text("- {metric: nonsense}\n")
    with pytest.raises(AlertRuleError, match="unknown metric 'nonsense'"):
        load_rules(path)
    path.write_text("- {metric: error_rate, treshold: 1}\n")
    with pytest.raises(AlertRuleError, match="unknown keys"):
        load_rules(path)


def test_json_file_sink_appends_lines(tmp_path):
    clock = FakeClock()
    sink = JsonFileSink(tmp_path / "alerts" / "alerts.jsonl")
    with Store.open(tmp_path / "m.db") as store:
        evaluate_rules(
            {None: a_check(True)}, [Rule("a", "drift.image"), Rule("b", "drift.image")], store, [sink], clock=clock
        )
    lines = [json.loads(line) for line in (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()]
    assert [line["rule"] for line in lines] == ["a", "b"] and lines[0]["value"] == 1.0


# -- webhooks against real local servers ---------------------------------------------------------------


class _Server:
    def __init__(self, behaviour) -> None:
        self.received: list[dict] = []
        self.calls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                owner.calls += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, delay = behaviour(owner.calls)
                time.sleep(delay)
                if status == 200:
                    owner.received.append(json.loads(body))
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(url, tmp_path, **options):
    waits = []
    sink = WebhookSink(url, sleep=waits.append, **options)
    with Store.open(tmp_path / "m.db") as store:
        (outcome,) = evaluate_rules(
            {None: a_check(True)}, [Rule("drift", "drift.image")], store, [sink], clock=FakeClock()
        )
    return sink, outcome, waits


def test_webhook_delivers_and_retries_server_errors(tmp_path):
    with _Server(lambda call: (503, 0) if call < 3 else (200, 0)) as server:
        sink, outcome, waits = _send(server.url, tmp_path, retries=3, backoff=0.5)
    assert outcome.notified and not outcome.sink_errors
    assert server.calls == 3 and sink.attempts == 3 and waits == [0.5, 1.0]
    assert server.received[0]["rule"] == "drift" and "brightness" in server.received[0]["message"]


def test_webhook_that_times_out_is_reported_not_raised(tmp_path):
    with _Server(lambda call: (200, 1.5)) as server:  # answers after 1.5 s; the sink waits 0.3 s
        start = time.monotonic()
        sink, outcome, waits = _send(server.url, tmp_path, timeout=0.3, retries=2, backoff=0.1)
        elapsed = time.monotonic() - start
    assert outcome.firing and outcome.notified  # recorded as notified; the failure is reported
    assert outcome.sink_errors and "after 3 attempts" in outcome.sink_errors[0]
    assert sink.attempts == 3 and waits == [0.1, 0.2] and elapsed < 3.0


def test_webhook_client_error_is_not_retried(tmp_path):
    with _Server(lambda call: (400, 0)) as server:
        _, outcome, _ = _send(server.url, tmp_path, retries=3)
    assert server.calls == 1 and "HTTP 400" in outcome.sink_errors[0]


def test_webhook_refused_connection(tmp_path):
    with _Server(lambda call: (200, 0)) as server:
        url = server.url
    with pytest.raises(WebhookError, match="failed after 2 attempts"):
        WebhookSink(url, retries=1, sleep=lambda s: None, timeout=1).send(a_alert())


def a_alert():
    from visionpipe.monitor.alerts import Alert

    return Alert("r", "drift.image", 1.0, ">", 0.0, 0.0, None, "ref", 100)
