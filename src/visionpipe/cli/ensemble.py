"""``visionpipe ensemble``: choose an ensemble's weights and fusion settings on annotated images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from visionpipe.cli.common import MODEL_HELP, annotated_images, quiet_option, stage_progress

app = typer.Typer(
    help="Build ensembles: tune weights and fusion settings, written as a spec file --model accepts.",
    epilog="Example: visionpipe ensemble tune -m yolox.yaml -m nanodet.yaml --images val/ --annotations gt.json "
    "--out ensemble.yaml",
    no_args_is_help=True,
)

TUNE_EXAMPLE = (
    "Example: visionpipe ensemble tune -m yolox.yaml -m nanodet.yaml --images val2017/ "
    "--annotations instances_val2017.json --out ensemble.yaml\n\n"
    "Then: visionpipe detect photos/ --model ensemble.yaml"
)


@app.command("tune", epilog=TUNE_EXAMPLE)
def tune(
    model: list[str] = typer.Option(..., "--model", "-m", help=MODEL_HELP + " At least two."),
    images: Path = typer.Option(..., "--images", exists=True, help="Folder (or file list) of the annotated images."),
    annotations: Path = typer.Option(..., "--annotations", exists=True, dir_okay=False, help="COCO annotation json."),
    out: Path = typer.Option(
        Path("ensemble.yaml"), "--out", "-o", help="The ensemble spec to write (only when it beats every member)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the shuffle that splits the images into two parts."),
    min_gain: float = typer.Option(
        0.001, "--min-gain", min=0.0, help="mAP@.5:.95 an ensemble must gain over the best member, on both parts."
    ),
    device: str = typer.Option("cpu", "--device"),
    quiet: bool = quiet_option(),
) -> None:
    """Search weights and fusion settings: chosen on one half of the images, confirmed on the other.

    Prints each member's mAP on both halves, the chosen ensemble's and the confirmed gain (JSON on
    stdout, a table on stderr), and writes the spec only when the ensemble beats its best member on
    both halves; otherwise it says so and writes nothing.
    """
    from visionpipe.ensemble_tune import tune_ensemble
    from visionpipe.evaluation import load_annotations
    from visionpipe.io.formats import atomic_write_bytes

    if len(model) < 2:
        raise typer.BadParameter("give at least two models (-m A -m B)", param_hint="--model")
    ground_truth = load_annotations(annotations)
    paths = annotated_images(images, annotations, ground_truth)
    with stage_progress(quiet) as report:
        result = tune_ensemble(
            model, paths, ground_truth, seed=seed, min_gain=min_gain, device=device, on_progress=report
        )

    parts = result.images
    typer.echo(
        f"| mAP@.5:.95 | choosing part ({parts['choose']} images) | confirming part ({parts['confirm']}) |", err=True
    )
    typer.echo("|---|---|---|", err=True)
    for name, scores in result.member_map.items():
        typer.echo(f"| {name} alone | {scores['choose']:.4f} | {scores['confirm']:.4f} |", err=True)
    chosen = result.summary()["chosen"]
    label = (
        f"ensemble ({chosen['method']}, weights {':'.join(f'{w:g}' for w in chosen['weights'])}, IoU {chosen['iou']:g})"
    )
    typer.echo(f"| {label} | {result.ensemble_map['choose']:.4f} | {result.ensemble_map['confirm']:.4f} |", err=True)
    typer.echo(
        f"| gain over the best member | {result.gain['choose']:+.4f} | {result.gain['confirm']:+.4f} |", err=True
    )
    typer.echo(result.verdict(), err=True)

    summary = result.summary()
    summary["written"] = None
    if result.beats_best_member:
        atomic_write_bytes(out, result.spec(relative_to=out.parent).to_yaml().encode("utf-8"))
        summary["written"] = str(out)
        typer.echo(f"wrote {out} (use it as --model {out})", err=True)
    else:
        typer.echo(f"nothing written to {out}", err=True)
    typer.echo(json.dumps(summary, indent=2))
