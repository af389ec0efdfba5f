"""``visionpipe models``: inspect a model file, list the built-in models."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Inspect model files and list built-in models.",
    epilog="Example: visionpipe models inspect model.onnx --json",
    no_args_is_help=True,
)


@app.command("inspect", epilog="Example: visionpipe models inspect yolox_nano_416_coco.onnx --json")
def inspect(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A model file (ONNX, OpenVINO IR, TorchScript)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Inputs, outputs, the decoder family that fits, embedded metadata, and batch dynamism."""
    from visionpipe.errors import SpecError, UnknownOutputLayoutError
    from visionpipe.models.backends import open_backend
    from visionpipe.models.loader import build_model
    from visionpipe.models.spec import ModelSpec

    backend = open_backend(file)
    try:
        model = build_model(ModelSpec(model=file), backend)
        family, family_note = model.family, ""
        input_size, classes = list(model.input_hw), len(model.class_names)
    except (UnknownOutputLayoutError, SpecError) as exc:
        family, family_note, input_size, classes = None, str(exc), None, None
    info = {
        "file": str(file),
        "size_bytes": file.stat().st_size,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in backend.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in backend.outputs],
        "dynamic_batch": backend.fixed_batch is None,
        "family": family,
        "family_note": family_note,
        "input_size": input_size,
        "classes": classes,
        "metadata": {k: (v if len(v) <= 200 else v[:200] + "...") for k, v in backend.metadata.items()},
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=file.name, show_header=False)
    table.add_row("family", family or f"[red]none[/red] ({family_note})")
    table.add_row("input size", str(input_size))
    table.add_row("classes", str(classes))
    table.add_row(
        "dynamic batch", "yes" if info["dynamic_batch"] else "no (runs one batch of the fixed size at a time)"
    )
    for t in info["inputs"]:
        table.add_row("input", f"{t['name']} {t['shape']} {t['dtype']}")
    for t in info["outputs"]:
        table.add_row("output", f"{t['name']} {t['shape']} {t['dtype']}")
    for key, value in info["metadata"].items():
        table.add_row(f"meta {key}", value)
    console.print(table)


@app.command("list", epilog="Example: visionpipe models list")
def list_models() -> None:
    """Built-in models (shipped inside installed packages, nothing downloaded) and known families."""
    from rich.console import Console
    from rich.table import Table

    from visionpipe.models.decoders import available_decoders
    from visionpipe.models.zoo import BUILTINS, DEFAULT_MODEL

    table = Table(title="built-in models")
    for column in ("name", "family", "description", "file", "licence"):
        table.add_column(column)
    for model in BUILTINS.values():
        path = model.locate()
        name = model.name + (" (default)" if model.name == DEFAULT_MODEL else "")
        where = str(path) if path else f"[red]not installed[/red]: pip install {model.package}"
        table.add_row(name, model.spec.get("family", ""), model.description, where, model.licence)
    console = Console()
    console.print(table)
    families = Table(title="decoder families (for your own models: a spec with `model` and `family`)")
    families.add_column("family")
    families.add_column("output layout")
    for name, decoder in available_decoders().items():
        families.add_row(name, decoder.summary)
    console.print(families)
