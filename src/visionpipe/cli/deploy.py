"""``visionpipe deploy`` (plan a model for a target, write a bundle) and ``visionpipe bundle`` (verify, sign)."""

from __future__ import annotations

from pathlib import Path

import typer

from visionpipe.cli.common import MODEL_HELP, annotated_images, resolve_model_source

DEPLOY_HELP = (
    "Plan MODEL for a target (size, latency, memory, accuracy limits) on measured numbers and write a "
    "self-checking bundle of the most accurate candidate that fits; exit 2 naming the nearest miss when none "
    "does. `visionpipe deploy targets` lists the built-in targets."
)
DEPLOY_EXAMPLE = (
    "Example: visionpipe deploy yolox.onnx --target mobile --calibration train2017/ "
    "--validate instances_val2017.json --images val2017/ --out deploy/yolox-mobile"
)
bundle_app = typer.Typer(help="Check and sign deployment bundles.", no_args_is_help=True)


def deploy(
    model: str = typer.Argument(..., help=MODEL_HELP + " Or `targets` to list the built-in targets."),
    target: str | None = typer.Option(None, "--target", "-t", help="A built-in target's name or a target YAML file."),
    out: Path | None = typer.Option(None, "--out", help="Folder for plan.md, plan.json and the bundle."),
    calibration: Path | None = typer.Option(None, "--calibration", exists=True, help="int8 calibration images."),
    calibration_count: int = typer.Option(
        128, "--calibration-count", min=1, help="Calibration images used, the first N (as optimize)."
    ),
    validate: Path | None = typer.Option(
        None, "--validate", exists=True, dir_okay=False, help="COCO json of the validation images."
    ),
    images: Path | None = typer.Option(None, "--images", exists=True, help="The annotated validation images."),
    tune_images: Path | None = typer.Option(
        None,
        "--tune-images",
        exists=True,
        help="Annotated images the int8 build is tuned on (default: half of --images; the other half confirms).",
    ),
    tune_annotations: Path | None = typer.Option(
        None, "--tune-annotations", exists=True, dir_okay=False, help="COCO json of --tune-images."
    ),
    candidate: list[str] = typer.Option(
        [], "--candidate", help="Another model file or spec, or size=HxW; repeat for several."
    ),
    cache: Path | None = typer.Option(None, "--cache", help="Build and measurement cache (default: OUT/cache)."),
    repeats: int = typer.Option(30, "--repeats", min=1, help="Timed runs per candidate."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed runs per candidate."),
    int8_measurements: int = typer.Option(
        24, "--int8-measurements", min=1, help="Budget of sensitivity measurements of the accuracy-aware int8 build."
    ),
    sign_key: Path | None = typer.Option(
        None, "--sign-key", exists=True, dir_okay=False, help="ed25519 private key (PEM) to sign the manifest."
    ),
    name: str | None = typer.Option(None, "--name", help="Bundle name (default: <model>-<target>)."),
    exist_ok: bool = typer.Option(
        False,
        "--exist-ok",
        help="Reuse a non-empty --out: an earlier run's plan and bundle there are replaced, its cache reused, "
        "other files kept.",
    ),
) -> None:
    from visionpipe.deploy.deploy import PLAN_FILES, deploy_model
    from visionpipe.deploy.targets import describe_targets

    if model == "targets" and not Path(model).exists():
        typer.echo(describe_targets())
        return
    missing = [flag for flag, value in (("--target", target), ("--out", out), ("--validate", validate)) if not value]
    missing += [] if images else ["--images"]
    if missing:
        raise typer.BadParameter(f"deploy needs {', '.join(missing)}", param_hint=missing[0])
    if (tune_images is None) != (tune_annotations is None):
        raise typer.BadParameter("--tune-images and --tune-annotations go together", param_hint="--tune-images")
    assert target is not None and out is not None and validate is not None and images is not None
    from visionpipe.deploy.targets import load_target
    from visionpipe.io.outdir import OutputFolder
    from visionpipe.io.sources import expand_sources

    folder = OutputFolder(out, exist_ok=exist_ok)  # refused now, before anything is loaded or built
    # what can be refused is refused before the folder is touched
    target_limits = load_target(target)
    calibration_images = expand_sources([str(calibration)])[:calibration_count] if calibration else []
    validation_images = annotated_images(images, validate)
    tuning = annotated_images(tune_images, tune_annotations) if tune_images and tune_annotations else None

    folder.start(keep=[model] if Path(model).is_file() else [])
    # the plan files are listed before they are written; the bundle's once it is in place (it is
    # assembled in a hidden sibling and moved in whole). The build and measurement cache is not an
    # output: it is keyed by the files' sha256, so a run with --exist-ok reuses it.
    for planned in PLAN_FILES:
        folder.claim(planned)
    try:
        result = deploy_model(
            resolve_model_source(model),
            target_limits,
            calibration_images=calibration_images,
            validation_images=validation_images,
            annotations=validate,
            tune_images=tuning,
            tune_annotations=tune_annotations,
            candidates=candidate,
            out_dir=out,
            cache_dir=cache,
            measure_settings={"repeats": repeats, "warmup": warmup},
            int8_options={"max_measurements": int8_measurements},
            signing_key=sign_key,
            bundle_name=name,
            progress=lambda message: typer.echo(f"deploy: {message}", err=True),
        )
        if result.bundle is not None:
            for path in [*sorted(result.bundle.folder.rglob("*")), result.bundle.archive]:
                if path.is_file():
                    folder.claim(path.relative_to(folder.path))
    finally:
        folder.close()
    typer.echo(result.plan.to_markdown())
    for label, path in result.written.items():
        typer.echo(f"wrote {label}: {path}", err=True)
    if result.bundle is None:
        typer.echo(f"no candidate meets target {result.plan.target.name}: {result.plan.nearest_miss_text()}", err=True)
    raise typer.Exit(result.exit_code)


@bundle_app.command(
    "verify", help="Check a bundle on this machine: checksums, golden pair, latency. Exit 2 if any fails."
)
def verify(
    bundle: Path = typer.Argument(..., help="The bundle folder."),
    public_key: Path | None = typer.Option(
        None, "--public-key", exists=True, dir_okay=False, help="ed25519 public key (PEM): also check the signature."
    ),
    runs: int = typer.Option(30, "--runs", min=1, help="Timed runs of the latency self-benchmark."),
    threads: int | None = typer.Option(None, "--threads", min=0, help="Threads (default: the target's)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency self-benchmark."),
) -> None:
    from visionpipe.deploy.verify import verify_bundle

    report = verify_bundle(
        bundle, public_key=public_key, latency_runs=runs, threads=threads, check_latency=not no_latency
    )
    typer.echo(report.to_text())
    raise typer.Exit(0 if report.ok else 2)


@bundle_app.command("keygen", help="Write an ed25519 key pair (NAME.key, NAME.pub) for signing bundles.")
def keygen(
    out: Path = typer.Option(..., "--out", help="Folder for the key pair."),
    name: str = typer.Option("bundle", "--name", help="File name stem of the keys."),
) -> None:
    from visionpipe.deploy.signing import generate_keypair

    key, pub = generate_keypair(out, name)
    typer.echo(f"wrote {key} (private: keep it off devices) and {pub}")


@bundle_app.command("sign", help="Sign a bundle's manifest with an ed25519 private key (writes manifest.sig).")
def sign(
    bundle: Path = typer.Argument(..., help="The bundle folder."),
    key: Path = typer.Option(..., "--key", exists=True, dir_okay=False, help="ed25519 private key (PEM)."),
) -> None:
    from visionpipe.deploy.signing import sign_manifest
    from visionpipe.models.bundle import verified_manifest

    verified_manifest(bundle)  # never sign a bundle that is already not intact
    typer.echo(f"wrote {sign_manifest(bundle, key)}")
