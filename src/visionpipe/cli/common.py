"""Pieces the commands share: model loading from ``--model``, progress, failure reporting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

MODEL_HELP = (
    "A spec file (.yaml/.json; an ensemble spec with members and fusion settings too), a model file (.onnx), "
    "or a built-in model's name (see `visionpipe models list`)."
)
FUSION_HELP = "How an ensemble's detections are fused: wbf (default), nms, soft-nms, nmw or vote."
WEIGHTS_HELP = "Per-model weights for fusion, comma-separated in --model order (e.g. 2,1)."


def quiet_option():
    """``--quiet``/``-q``, the same on every long-running command: no progress display."""
    return typer.Option(False, "--quiet", "-q", help="No progress display (it only shows on a terminal anyway).")


def monitor_option():
    return typer.Option(
        None,
        "--monitor",
        help="Record image features, predictions and latencies in this monitoring store: a SQLite file or a "
        "postgresql:// URL (see `visionpipe monitor`).",
    )


def monitor_tag_option():
    return typer.Option("default", "--monitor-tag", help="Tag this run's records in the monitoring store.")


def resolve_model_source(model: str | None):
    """What ``load_model`` should get for a ``--model`` value (the built-in default when omitted)."""
    from visionpipe.models.zoo import resolve_model_source as resolve

    return resolve(model)


def model_sources(models: list[str]):
    """One source, or a list of them for an ensemble (``--model`` given several times)."""
    from visionpipe.models.zoo import model_sources as sources

    return sources(models)


def build_pipeline(models: list[str], fusion, weights: str | None, fusion_iou: float | None, **options):
    """The Pipeline the shared model flags describe: one model, or an ensemble of several."""
    import warnings

    from visionpipe.pipeline import Pipeline, PipelineNote

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineNote)  # printed as notes by report_notes instead
        return Pipeline(
            model_sources(models), fusion=fusion, weights=parse_weights(weights), fusion_iou=fusion_iou, **options
        )


def annotated_images(images: Path, annotations: Path, ground_truth: dict | None = None) -> list[Path]:
    """The images under ``images`` that the COCO json lists (by file name), in folder order."""
    from visionpipe.evaluation import load_annotations
    from visionpipe.io.sources import expand_sources

    ground_truth = ground_truth or load_annotations(annotations)
    known = {Path(img["file_name"]).name for img in ground_truth["images"]}
    paths = [p for p in expand_sources([str(images)]) if p.name in known]
    if not paths:
        raise typer.BadParameter(f"no image of {annotations.name} found in {images}", param_hint="--images")
    return paths


def parse_weights(weights: str | None) -> list[float] | None:
    if not weights:
        return None
    try:
        return [float(w) for w in weights.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"expected numbers separated by commas, got {weights!r}", param_hint="--weights"
        ) from None


def parse_input_size(value: str | None) -> int | tuple[int, int] | None:
    """``--input-size``/``--imgsz``: ``640`` (square) or ``480,640`` (height, width)."""
    if not value:
        return None
    try:
        sizes = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or any(v < 1 for v in sizes):
        raise typer.BadParameter(f"expected N or H,W in pixels, got {value!r}", param_hint="--input-size/--imgsz")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def report_notes(pipeline) -> None:
    """Print what the pipeline decided that the user should know (e.g. a batch size it cannot use)."""
    for note in pipeline.notes:
        typer.echo(f"note: {note}", err=True)


def parse_classes(classes: str | None) -> list[int | str] | None:
    if not classes:
        return None
    return [int(c) if c.strip().isdigit() else c.strip() for c in classes.split(",") if c.strip()]


def shows_progress(quiet: bool) -> bool:
    """Whether a progress display belongs on stderr: a terminal, and not ``--quiet``. In a pipe or a
    log file a bar is noise, so it stays off there."""
    from rich.console import Console

    return not quiet and Console(stderr=True).is_terminal


@contextmanager
def progress(total: int | None, label: str, quiet: bool = False) -> Iterator:
    """A Rich progress bar on stderr with images/s and ETA, on a terminal only and not with
    ``--quiet``; yields ``advance()``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not shows_progress(quiet)) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance() -> None:
            bar.advance(task)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.1f} img/s" if speed else "")

        yield advance


def say(message: str) -> None:
    """A human-facing line on stderr, escaped so that no name in it can drive the terminal."""
    from visionpipe.errors import printable

    typer.echo(printable(message), err=True)


def report_failure(source: str, error: BaseException) -> None:
    """One stderr line per failed input; names are escaped so a file name cannot drive the terminal."""
    from visionpipe.errors import printable

    typer.echo(printable(f"failed: {source}: {error}"), err=True)


@contextmanager
def stage_progress(quiet: bool = False) -> Iterator:
    """Like :func:`progress` for a job of several stages whose sizes the library reports: yields
    ``report(stage, done, total)``, one bar per stage, on a terminal only."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not shows_progress(quiet)) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


@contextmanager
def progress_messages(quiet: bool = False) -> Iterator:
    """For a job that reports progress as messages (optimize): on a terminal a spinner shows the
    latest one; elsewhere each is a line on stderr (a log); ``--quiet`` drops them, except the
    ``failed: ...`` lines, which are not progress. Yields ``say``."""
    from rich.console import Console

    from visionpipe.errors import printable

    if quiet:
        yield lambda message: typer.echo(printable(message), err=True) if message.startswith("failed:") else None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda message: typer.echo(printable(message), err=True)
        return
    with console.status("working") as status:

        def say(message: str) -> None:
            message = printable(message)  # names in it cannot drive the terminal
            console.print(message, markup=False, highlight=False)  # kept above the spinner
            status.update(message[:100], spinner="dots")

        yield say
