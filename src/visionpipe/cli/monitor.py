"""``visionpipe monitor``: freeze a reference, check for drift and alert, ingest labels, write a report."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer

app = typer.Typer(
    help="Watch a deployed detector: references, drift checks with alerts, accuracy from labels, reports.",
    no_args_is_help=True,
)

STORE_HELP = "Monitoring store: a SQLite file (as given to --monitor) or a postgresql:// URL."
ALERT_EXIT = 3


def parse_time(value: str | None, option: str) -> float | None:
    """Seconds since the epoch from epoch seconds or an ISO 8601 time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"expected epoch seconds or an ISO 8601 time, got {value!r}", param_hint=option
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _store(location: str):
    from visionpipe.monitor.store import Store

    return Store.open(location)


@app.command("reference", help="Freeze a reference from the records of a tag and/or a time range.")
def reference(
    store: str = typer.Argument(..., help=STORE_HELP),
    tag: str | None = typer.Option(None, "--tag", help="Records of this tag (as given to --monitor-tag)."),
    since: str | None = typer.Option(None, "--since", help="From this time (epoch seconds or ISO 8601, UTC)."),
    until: str | None = typer.Option(None, "--until", help="Up to this time (excluded)."),
    name: str | None = typer.Option(None, "--name", help="Name of the reference (default: the tag, or 'reference')."),
) -> None:
    from visionpipe.monitor.windows import freeze_reference

    with _store(store) as opened:
        spec = freeze_reference(
            opened,
            name or tag or "reference",
            tag=tag,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
        )
    typer.echo(json.dumps({"reference": spec["name"], "images": spec["images"], "tag": tag, "levels": spec["levels"]}))


@app.command("check", help="Compare the latest window with a reference; alert. Exit 0 quiet, 3 when an alert fires.")
def check(
    store: str = typer.Argument(..., help=STORE_HELP),
    reference: str | None = typer.Option(None, "--reference", help="Reference name (default: the newest)."),
    last: int | None = typer.Option(None, "--last", min=5, help="The newest N images (default: all, or --since)."),
    since: str | None = typer.Option(None, "--since", help="Images from this time on (epoch seconds or ISO 8601)."),
    tag: str | None = typer.Option(None, "--tag", help="Only records of this tag."),
    rules: Path | None = typer.Option(None, "--rules", exists=True, dir_okay=False, help="Alert rules YAML."),
    alerts_file: Path | None = typer.Option(None, "--alerts-file", help="Append fired alerts here (JSON lines)."),
    webhook: list[str] = typer.Option([], "--webhook", help="POST fired alerts to this URL (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    from visionpipe.monitor.alerts import JsonFileSink, LogSink, Sink, WebhookSink, check_and_alert

    sinks: list[Sink] = [LogSink()]
    if alerts_file is not None:
        sinks.append(JsonFileSink(alerts_file))
    sinks.extend(WebhookSink(url) for url in webhook)
    with _store(store) as opened:
        report = check_and_alert(
            opened,
            reference=reference,
            last=last,
            since=parse_time(since, "--since"),
            tag=tag,
            rules=rules,
            sinks=sinks,
        )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        window = report.check.window
        drifted = ", ".join(report.check.drifted) or "none"
        typer.echo(f"{window['images']} images vs reference {report.check.reference!r}: drift in {drifted}")
        for outcome in report.firing:
            assert outcome.alert is not None
            suffix = "" if outcome.notified else " (already notified; in cooldown)"
            typer.echo(f"ALERT {outcome.alert.message}{suffix}")
    if report.firing:
        raise typer.Exit(ALERT_EXIT)


@app.command("labels", help="Ingest labels (COCO json or a folder of YOLO txt): mAP per window, precision/recall.")
def labels(
    store: str = typer.Argument(..., help=STORE_HELP),
    annotations: Path = typer.Option(
        ..., "--annotations", exists=True, help="COCO json, or a folder of YOLO txt files."
    ),
    tag: str | None = typer.Option(None, "--tag", help="Only records of this tag."),
    conf: float = typer.Option(0.5, "--conf", min=0.0, max=1.0, help="Operating threshold for precision/recall."),
) -> None:
    from visionpipe.monitor.accuracy import ingest_labels

    with _store(store) as opened:
        report = ingest_labels(opened, annotations, tag=tag, conf=conf)
    typer.echo(json.dumps(report.as_dict(), indent=2))


@app.command("report", help="Write one self-contained HTML report (and its JSON twin beside it).")
def report(
    store: str = typer.Argument(..., help=STORE_HELP),
    out: Path = typer.Option(Path("monitor-report.html"), "--out", "-o", help="The HTML file to write."),
    reference: str | None = typer.Option(None, "--reference", help="Reference name (default: the newest)."),
    last: int = typer.Option(1000, "--last", min=5, help="The window compared with the reference: newest N images."),
    tag: str | None = typer.Option(None, "--tag", help="Only records of this tag."),
) -> None:
    from visionpipe.monitor.report import write_report

    with _store(store) as opened:
        html_path, json_path = write_report(opened, out, reference=reference, last=last, tag=tag)
    typer.echo(f"{html_path} ({html_path.stat().st_size / 1024:.0f} KiB), {json_path}", err=True)
