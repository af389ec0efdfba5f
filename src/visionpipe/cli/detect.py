"""``visionpipe detect``: run a model over images and write standard outputs."""

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
    progress,
    quiet_option,
    report_failure,
    report_notes,
    say,
)
from visionpipe.io.dataset_formats import OutputFormat
from visionpipe.postprocess.fusion import FusionMethod

HELP = (
    "Detect objects in images and write a COCO dataset, COCO results, YOLO labels, Pascal VOC, Label Studio "
    "pre-annotations, JSONL or CSV (and annotated images)."
)
EXAMPLE = (
    "Example: visionpipe detect photos/ --model yolox.yaml --format coco --format csv --save-images --out runs/1\n\n"
    "SOURCE may be image files, folders (recursive), glob patterns, .txt files listing paths, or - (paths on stdin). "
    "For videos, cameras and streams use `visionpipe video`."
)


def detect(
    sources: list[str] = typer.Argument(..., metavar="SOURCE...", help="Images, folders, globs, .txt lists or -."),
    model: list[str] = typer.Option(
        [],
        "--model",
        "-m",
        help=MODEL_HELP + " Repeat for an ensemble. Default: the built-in COCO detector yolox-nano-coco.",
    ),
    fusion: FusionMethod | None = typer.Option(None, "--fusion", help=FUSION_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    fusion_iou: float | None = typer.Option(
        None, "--fusion-iou", min=0.0, max=1.0, help="IoU for fusing boxes across models."
    ),
    family: str | None = typer.Option(None, "--family", help="Decoder family of a bare model file without metadata."),
    names_file: Path | None = typer.Option(
        None, "--names-file", help="Class names, one per line (replaces the model's; may be anywhere)."
    ),
    out: Path = typer.Option(
        Path("visionpipe-out"), "--out", "-o", help="Output folder (must be empty or absent, see --exist-ok)."
    ),
    exist_ok: bool = typer.Option(
        False, "--exist-ok", help="Reuse a non-empty --out: an earlier run's outputs there are replaced, others kept."
    ),
    formats: list[OutputFormat] = typer.Option(
        [OutputFormat.COCO, OutputFormat.JSONL],
        "--format",
        "-f",
        help="Output format; repeat for several. coco: OUT/coco.json, a COCO dataset; coco-results: "
        "OUT/detections.json, the results list pycocotools' loadRes reads; yolo: OUT/labels/*.txt with "
        "OUT/data.yaml; voc: OUT/voc/*.xml; label-studio: OUT/label_studio.json; jsonl; csv.",
    ),
    save_txt: bool = typer.Option(False, "--save-txt", help="YOLO labels: the same as --format yolo."),
    save_conf: bool = typer.Option(
        False, "--save-conf", help="Append the score to each YOLO label row (6 columns; training wants 5)."
    ),
    save_images: bool = typer.Option(
        False, "--save-images", "--save", help="Also write annotated images to OUT/annotated/ (--save: Ultralytics')."
    ),
    conf: float | None = typer.Option(
        None, "--conf", min=0.0, max=1.0, help="Score threshold (model default if omitted)."
    ),
    iou: float | None = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    max_det: int | None = typer.Option(
        None, "--max-det", min=1, help="Detections kept per image (model default if omitted)."
    ),
    agnostic: bool = typer.Option(
        False, "--agnostic", "--agnostic-nms", help="Class-agnostic NMS: overlapping boxes compete across classes."
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Filter: keep only these classes, names or ids, comma-separated (the model's class list is not changed).",
    ),
    input_size: str | None = typer.Option(
        None,
        "--input-size",
        "--imgsz",
        help="Model input size: N or H,W (a model with a dynamic input; model/spec default if omitted).",
    ),
    batch_size: int = typer.Option(1, "--batch-size", "--batch", min=1, help="Images per inference batch."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or tensorrt."),
    half: bool = typer.Option(
        False, "--half", help="fp16 inference: needs a GPU device and an fp16 model (visionpipe optimize --fp16)."
    ),
    annotations: Path | None = typer.Option(
        None,
        "--annotations",
        exists=True,
        dir_okay=False,
        help="COCO json whose image and category ids the COCO output uses.",
    ),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Reject images with more pixels than this."),
    quiet: bool = quiet_option(),
    monitor: str | None = monitor_option(),
    monitor_tag: str = monitor_tag_option(),
    shard_size: int | None = typer.Option(
        None,
        "--shard-size",
        min=1,
        help="Run as a sharded, resumable job: inputs per shard (default 1000 when --resume, --workers or "
        "--engine is given). Each shard's results go to OUT/shards/ as Parquet and JSONL; merge them with "
        "visionpipe merge.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the sharded job in OUT, skipping finished shards."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="Sharded job: local processes (default 1), or Ray actors with --engine ray (default: as many as "
        "the cluster's CPUs allow, 0 = the same).",
    ),
    engine: str | None = typer.Option(None, "--engine", help="Sharded job engine: local (default) or ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to join (default: start Ray on this machine)."
    ),
) -> None:
    if shard_size is not None or resume or workers is not None or engine is not None:
        from visionpipe.cli.jobs import detect_job

        detect_job(
            sources,
            out,
            shard_size=shard_size,
            resume=resume,
            workers=workers,
            engine=engine or "local",
            ray_address=ray_address,
            quiet=quiet,
            extra={
                "--save-images": save_images,
                "--annotations": annotations is not None,
                "--monitor": monitor is not None,
                "--save-txt": save_txt or save_conf,
            },
            model=model,
            fusion=fusion.value if fusion is not None else None,
            weights=weights,
            fusion_iou=fusion_iou,
            family=family,
            conf=conf,
            iou=iou,
            max_det=max_det,
            agnostic=agnostic or None,
            classes=classes,
            input_size=parse_input_size(input_size),
            batch_size=batch_size,
            device=device,
            half=half,
            max_pixels=max_pixels,
        )
        return
    from visionpipe.detect_run import detect_to_folder
    from visionpipe.io.images import DecodeLimits

    def load_pipeline():
        pipeline = build_pipeline(
            model,
            fusion,
            weights,
            fusion_iou,
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
            half=half,
            limits=DecodeLimits(max_pixels=max_pixels),
        )
        report_notes(pipeline)
        return pipeline

    report = detect_to_folder(
        sources,
        out,
        load_pipeline,
        formats=[*formats, OutputFormat.YOLO] if save_txt or save_conf else formats,
        save_conf=save_conf,
        save_images=save_images,
        annotations=annotations,
        exist_ok=exist_ok,
        monitor=monitor,
        monitor_tag=monitor_tag,
        progress=lambda total: progress(total, "detect", quiet),
        on_failure=report_failure,
    )
    summary = report.summary
    stopped = ""
    if report.interrupted is not None:
        stopped = f" (stopped by {report.interrupted.signal_name}, {summary['not_processed']} not processed)"
    say(
        f"{summary['processed']}/{summary['images']} images, {summary['detections']} detections, "
        f"{summary['images_per_second']} img/s -> {out}" + stopped
    )
    if report.exit_code:
        raise typer.Exit(report.exit_code)
