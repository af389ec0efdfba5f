"""``visionpipe video``: detect (and track) objects in a video file, camera or stream."""

from __future__ import annotations

from pathlib import Path

import typer

from visionpipe.cli.common import (
    FUSION_HELP,
    MODEL_HELP,
    WEIGHTS_HELP,
    build_pipeline,
    monitor_option,
    monitor_tag_option,
    parse_classes,
    parse_input_size,
    report_notes,
    say,
)
from visionpipe.postprocess.fusion import FusionMethod
from visionpipe.video.buffer import BufferPolicy

HELP = "Run a model over a video file, image folder, camera index or network stream, in real time."
EXAMPLE = (
    "Example: visionpipe video clip.mp4 -m yolox.yaml --out annotated.mp4 --jsonl frames.jsonl --track "
    "--line 0,300,768,300\n\n"
    "Offline, --policy wait processes every frame; live, drop_oldest keeps latency bounded."
)


def video(
    source: str = typer.Argument(..., help="Video file, image folder, camera index (0) or URL (rtsp://...)."),
    model: list[str] = typer.Option(
        [], "--model", "-m", help=MODEL_HELP + " Repeat for an ensemble. Default: the built-in yolox-nano-coco."
    ),
    fusion: FusionMethod | None = typer.Option(None, "--fusion", help=FUSION_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    family: str | None = typer.Option(None, "--family", help="Decoder family of a bare model file without metadata."),
    names_file: Path | None = typer.Option(
        None, "--names-file", help="Class names, one per line (replaces the model's; may be anywhere)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write an annotated MP4 here."),
    jsonl: Path | None = typer.Option(None, "--jsonl", help="Write one JSON line per processed frame here."),
    policy: BufferPolicy = typer.Option(
        BufferPolicy.WAIT, "--policy", help="When the buffer is full: wait, drop_oldest or drop_latest."
    ),
    buffer_size: int = typer.Option(8, "--buffer", min=1, help="Frames the buffer holds."),
    stride: int = typer.Option(1, "--stride", "--vid-stride", min=1, help="Process every Nth frame."),
    max_fps: float | None = typer.Option(
        None, "--max-fps", min=0.001, help="Process at most this many frames per second."
    ),
    realtime: bool = typer.Option(
        False, "--realtime", help="Play a file at its own frame rate (as a live source would)."
    ),
    speed: float = typer.Option(
        1.0, "--speed", min=0.01, help="With --realtime: play at this multiple of the file's rate."
    ),
    track: bool = typer.Option(False, "--track", help="Track objects across frames (ByteTrack) and give them ids."),
    line: str | None = typer.Option(
        None,
        "--line",
        help="Count tracks crossing the segment x1,y1,x2,y2 (implies --track). Moving from the right of the "
        "directed segment to its left is 'in', as in supervision's LineZone: for 0,216,768,216, walking up.",
    ),
    zones: list[str] = typer.Option(
        [],
        "--zone",
        help="Count objects standing in the polygon x1,y1,x2,y2,x3,y3,... (bottom-centre of each box); repeat for several.",
    ),
    conf: float | None = typer.Option(
        None, "--conf", min=0.0, max=1.0, help="Score threshold (model default if omitted)."
    ),
    iou: float | None = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    max_det: int | None = typer.Option(None, "--max-det", min=1, help="Detections kept per frame."),
    agnostic: bool = typer.Option(False, "--agnostic", "--agnostic-nms", help="Class-agnostic NMS."),
    classes: str | None = typer.Option(
        None, "--classes", help="Filter: keep only these classes, names or ids, comma-separated."
    ),
    input_size: str | None = typer.Option(
        None, "--input-size", "--imgsz", help="Model input size: N or H,W (a model with a dynamic input)."
    ),
    batch_size: int = typer.Option(1, "--batch-size", "--batch", min=1),
    device: str = typer.Option("cpu", "--device"),
    monitor: str | None = monitor_option(),
    monitor_tag: str = monitor_tag_option(),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics."
    ),
    open_timeout: float = typer.Option(
        10.0, "--open-timeout", min=0.1, help="Seconds a network stream may take to open, per attempt."
    ),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", min=0.1, help="Seconds a network stream may go without a frame before a reconnect."
    ),
    retries: int = typer.Option(
        5, "--retries", min=0, help="Reconnection attempts for a stream that fails or drops (backoff 0.5 s to 10 s)."
    ),
) -> None:
    import json

    from visionpipe.interrupt import Interrupted, stop_on_signals
    from visionpipe.monitor.monitor import monitoring
    from visionpipe.video.processor import VideoProcessor
    from visionpipe.video.sinks import JsonlSink, VideoFileSink
    from visionpipe.video.sources import ReconnectPolicy, open_source
    from visionpipe.video.tracking import ByteTracker
    from visionpipe.video.zones import LineCounter, PolygonZone, ZoneError

    polygons = []
    for text in zones:
        try:
            values = [float(v) for v in text.split(",")]
            if len(values) % 2:
                raise ValueError
            polygons.append(PolygonZone(list(zip(values[::2], values[1::2]))))
        except (ValueError, ZoneError):
            raise typer.BadParameter(
                f"expected x1,y1,x2,y2,x3,y3,... (3 or more points), got {text!r}", param_hint="--zone"
            ) from None
    counter = None
    if line is not None:
        try:
            x1, y1, x2, y2 = (float(v) for v in line.split(","))
        except ValueError:
            raise typer.BadParameter(f"expected x1,y1,x2,y2, got {line!r}", param_hint="--line") from None
        counter = LineCounter((x1, y1), (x2, y2))
        track = True
    pipeline = build_pipeline(
        model,
        fusion,
        weights,
        None,
        family=family,
        names_file=names_file,
        conf=conf,
        iou=iou,
        max_det=max_det,
        agnostic=agnostic or None,
        classes=parse_classes(classes),
        input_size=parse_input_size(input_size),
        batch_size=batch_size,
        device=device,
    )
    report_notes(pipeline)
    src = open_source(
        source, reconnect=ReconnectPolicy(max_attempts=retries), open_timeout=open_timeout, read_timeout=read_timeout
    )
    sinks = []
    try:
        if jsonl is not None:
            sinks.append(JsonlSink(jsonl))
        if out is not None:
            sinks.append(VideoFileSink(out, lambda: src.fps))
    except ValueError as exc:
        raise typer.BadParameter(
            str(exc), param_hint="--jsonl" if jsonl is not None and not sinks else "--out"
        ) from None
    processor = VideoProcessor(
        pipeline,
        src,
        policy=policy,
        buffer_size=buffer_size,
        batch_size=batch_size,
        stride=stride,
        max_fps=max_fps,
        realtime=realtime,
        speed=speed,
        tracker=ByteTracker() if track else None,
        line_counter=counter,
        zones=polygons,
        sinks=sinks,
    )
    most_in_zone = [0] * len(polygons)
    interrupted: Interrupted | None = None
    with (
        monitoring(pipeline, monitor, tag=monitor_tag, metrics_port=metrics_port, video=processor),
        stop_on_signals(),
    ):
        try:
            processor.start()
            with _status() as show:
                for result in processor.results():
                    if result.overlay is not None:
                        most_in_zone = [max(m, z.count) for m, z in zip(most_in_zone, result.overlay.zones)]
                    show(processor.stats)
        except Interrupted as exc:
            interrupted = exc  # stop capturing, drop what waits, close every output
        stats = processor.stop(drain=interrupted is None)
    summary = stats.as_dict()
    if counter is not None:
        summary["line"] = {"in": counter.in_count, "out": counter.out_count}
    if polygons:
        summary["zones"] = [
            {"points": zone.polygon.tolist(), "count": zone.current_count, "max_count": most}
            for zone, most in zip(polygons, most_in_zone)
        ]
    if interrupted is not None:
        summary["interrupted"] = interrupted.signal_name
    typer.echo(json.dumps(summary, indent=2))
    if stats.source_state == "failed":
        say(f"source failed: {stats.source_message}")
    for output, error in stats.sink_errors.items():
        say(f"output failed ({output}): {error}")
    if interrupted is not None:
        raise typer.Exit(interrupted.exit_code)
    if stats.source_state == "failed" or stats.errors:
        raise typer.Exit(2)


def _status():
    """A one-line live status on stderr: frames, FPS, latency, drops."""
    from contextlib import contextmanager

    from rich.console import Console
    from rich.live import Live

    @contextmanager
    def live():
        console = Console(stderr=True)
        if not console.is_terminal:
            yield lambda stats: None
            return
        with Live(console=console, refresh_per_second=4, transient=True) as view:

            def show(stats) -> None:
                p95 = "-" if stats.latency_p95 is None else f"{stats.latency_p95 * 1000:.0f} ms"
                view.update(
                    f"frames {stats.processed}/{stats.captured}  {stats.fps:.0f} fps  p95 {p95}  dropped {stats.dropped_total}"
                )

            yield show

    return live()
