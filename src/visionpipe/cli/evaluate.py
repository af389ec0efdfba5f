"""``visionpipe eval``: COCO mAP of a model on an annotated image folder, through pycocotools."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from visionpipe.cli.common import (
    FUSION_HELP,
    MODEL_HELP,
    WEIGHTS_HELP,
    annotated_images,
    build_pipeline,
    parse_input_size,
    progress,
    quiet_option,
    report_failure,
    report_notes,
)
from visionpipe.postprocess.fusion import FusionMethod

HELP = (
    "Score a model on images with COCO annotations: the COCO summary (map_50_95, map_50, ..., by size), "
    "precision/recall and per-class AP (pycocotools)."
)
EXAMPLE = (
    "Example: visionpipe eval --model yolox.yaml --images coco/val2017 --annotations instances_val2017.json\n\n"
    "The JSON summary goes to stdout, the table to stderr."
)


def evaluate(
    model: list[str] = typer.Option([], "--model", "-m", help=MODEL_HELP + " Repeat for an ensemble."),
    fusion: FusionMethod | None = typer.Option(None, "--fusion", help=FUSION_HELP),
    weights: str | None = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    fusion_iou: float | None = typer.Option(
        None, "--fusion-iou", min=0.0, max=1.0, help="IoU for fusing boxes across models."
    ),
    images: Path | None = typer.Option(
        None, "--images", exists=True, help="Folder (or file list) of the annotated images."
    ),
    annotations: Path = typer.Option(..., "--annotations", exists=True, dir_okay=False, help="COCO annotation json."),
    family: str | None = typer.Option(None, "--family", help="Decoder family of a bare model file without metadata."),
    names_file: Path | None = typer.Option(
        None, "--names-file", help="Class names, one per line (replaces the model's; may be anywhere)."
    ),
    conf: float = typer.Option(0.01, "--conf", min=0.0, max=1.0, help="Score threshold (low, as evaluation wants)."),
    iou: float | None = typer.Option(
        None, "--iou", min=0.0, max=1.0, help="NMS IoU threshold (model default if omitted)."
    ),
    max_det: int = typer.Option(300, "--max-det", min=1, help="Detections kept per image."),
    batch_size: int = typer.Option(1, "--batch-size", "--batch", min=1),
    input_size: str | None = typer.Option(
        None, "--input-size", "--imgsz", help="Model input size: N or H,W (a model with a dynamic input)."
    ),
    device: str = typer.Option("cpu", "--device"),
    save_detections: Path | None = typer.Option(
        None, "--save-detections", help="Write the scored COCO results JSON here."
    ),
    quiet: bool = quiet_option(),
    detections: Path | None = typer.Option(
        None,
        "--detections",
        exists=True,
        dir_okay=False,
        help="Score stored detections instead of running a model: a COCO results JSON with the annotation "
        "file's image ids (visionpipe merge --annotations), or a detect/merge JSONL file (matched by file name).",
    ),
) -> None:
    from visionpipe.evaluation import coco_records, evaluate_detections_file, load_annotations, score_records
    from visionpipe.io.formats import atomic_open

    if detections is not None:
        if images is not None or model:
            raise typer.BadParameter("stored detections are scored as they are: drop --images and --model")
        stored = evaluate_detections_file(detections, annotations)
        summary = {"model": f"stored detections {detections.name}", "annotations": str(annotations), **stored.summary()}
        _print_table(summary)
        typer.echo(json.dumps(summary, indent=2))
        if stored.failed_images:
            raise typer.Exit(2)
        return
    if images is None:
        raise typer.BadParameter("the annotated images are needed (or --detections)", param_hint="--images")
    ground_truth = load_annotations(annotations)
    paths = annotated_images(images, annotations, ground_truth)

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
        input_size=parse_input_size(input_size),
        batch_size=batch_size,
        device=device,
    )
    report_notes(pipeline)
    results = []
    with pipeline, progress(len(paths), "eval", quiet) as advance:
        for result in pipeline.stream(paths):
            if result.error is not None:
                report_failure(result.source, result.error)
            results.append(result)
            advance()

    records, image_ids, failed = coco_records(results, ground_truth, pipeline.class_names)
    evaluation = score_records(records, ground_truth, image_ids)
    evaluation.failed_images = failed
    if save_detections is not None:
        with atomic_open(save_detections) as handle:
            json.dump(records, handle)

    summary = {"model": pipeline.name, "annotations": str(annotations), "conf": conf, **evaluation.summary()}
    if pipeline.is_ensemble:
        summary["fusion"] = {
            "method": pipeline.fusion.method.value,
            "weights": pipeline.fusion.weights,
            "iou": pipeline.fusion.iou,
        }
        summary["members"] = {}
        for member in pipeline.members:
            alone = [
                replace(r, detections=r.members.get(member.name), error=r.member_errors.get(member.name))
                for r in results
            ]
            member_records, member_ids, _ = coco_records(alone, ground_truth, pipeline.class_names)
            scored = score_records(member_records, ground_truth, member_ids)
            summary["members"][member.name] = {"map_50_95": scored.map_50_95, "map_50": scored.map_50}
    _print_table(summary)
    typer.echo(json.dumps(summary, indent=2))
    if failed:
        raise typer.Exit(2)


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from visionpipe.errors import printable

    def cell(text: object) -> str:  # names come from files: no terminal controls, no Rich markup
        return escape(printable(text))

    table = Table(title=cell(f"{summary['model']} on {summary['images']} images"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        table.add_row(key, f"{summary[key]:.4f}")
    table.add_row(
        f"precision / recall at conf {summary['best_f1_conf']:.3f}",
        f"{summary['precision']:.4f} / {summary['recall']:.4f}",
    )
    for name, scores in summary.get("members", {}).items():
        table.add_row(cell(f"member {name} map_50_95 / map_50"), f"{scores['map_50_95']:.4f} / {scores['map_50']:.4f}")
    for name, ap in sorted(summary["per_class_ap"].items(), key=lambda kv: -kv[1]):
        table.add_row(cell(f"AP {name}"), f"{ap:.4f}")
    Console(stderr=True).print(table)
