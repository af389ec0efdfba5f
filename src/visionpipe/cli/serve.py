"""``visionpipe serve``: detectors over HTTP (Open Inference Protocol + an image route)."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Serve detectors over HTTP: KServe v2 / Open Inference Protocol routes (tritonclient works) and "
    "POST /v1/models/NAME/detect for plain images, with dynamic batching, a bounded queue (503 when full), "
    "deadlines (504), API keys, metrics at /metrics and versioned model folders."
)
EXAMPLE = (
    "Example: visionpipe serve models/ --port 8000\n\n"
    "models/ holds NAME/VERSION/spec.yaml folders (a bare spec or .onnx file is served as version 1). "
    "Binding anything but 127.0.0.1 needs --api-keys; make a key with --new-key NAME."
)


def serve(
    sources: list[Path] = typer.Argument(None, help="A model repository folder, or spec/model files."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond loopback, --api-keys is required."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (metrics summed across them)."),
    api_keys: Path | None = typer.Option(
        None, "--api-keys", dir_okay=False, help="File of 'NAME sha256:HEX' lines: the accepted keys, hashed."
    ),
    rate_limit: float = typer.Option(50.0, "--rate-limit", min=0.0, help="Requests per second per key (0: none)."),
    max_body_bytes: int = typer.Option(20 * 1024 * 1024, "--max-body-bytes", min=1, help="Larger bodies get 413."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1, help="Larger images get 413."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Images per batch, across requests."),
    max_queue_delay_ms: float = typer.Option(
        2.0, "--max-queue-delay-ms", min=0.0, help="Longest wait to fill a batch."
    ),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Images waiting per model; beyond: 503 at once."),
    deadline_ms: float = typer.Option(10_000.0, "--deadline-ms", min=1.0, help="Per-request deadline (504 after)."),
    device: str = typer.Option("cpu", "--device"),
    allow_model_control: bool = typer.Option(
        False, "--allow-model-control", help="Allow loading/unloading models over HTTP (off by default)."
    ),
    poll_seconds: float = typer.Option(
        10.0, "--poll-seconds", min=0.0, help="Rescan the repository for new versions this often (0: never)."
    ),
    cache_entries: int = typer.Option(1024, "--cache-entries", min=0, help="Response cache size (0: off)."),
    cache_ttl: float = typer.Option(60.0, "--cache-ttl", min=0.0, help="Seconds a cached response stays valid."),
    monitor: str | None = typer.Option(
        None,
        "--monitor",
        help="Record each answered image in this monitoring store (SQLite path or postgresql:// URL), tagged MODEL/VERSION.",
    ),
    new_key: str | None = typer.Option(
        None, "--new-key", help="Print a new API key named NAME and its line for the keys file, then exit."
    ),
    engine: str = typer.Option(
        "uvicorn", "--engine", help="uvicorn (default), or ray: the same app as Ray Serve replicas."
    ),
    replicas: int = typer.Option(1, "--replicas", min=1, help="With --engine ray: replicas of the app."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="With --engine ray: the cluster to join (default: start Ray here)."
    ),
) -> None:
    from visionpipe.serve import BatchingConfig, ServeConfig
    from visionpipe.serve.auth import new_key as make_key

    if new_key is not None:
        key, line = make_key(new_key)
        typer.echo(f"key (give it to the client; it is not stored): {key}")
        typer.echo(f"line for the keys file: {line}")
        return
    if not sources:
        raise typer.BadParameter("give a model repository folder or spec/model files", param_hint="SOURCES")
    config = ServeConfig(
        sources=tuple(sources),
        host=host,
        port=port,
        workers=workers,
        api_keys_file=api_keys,
        rate_limit=rate_limit,
        max_body_bytes=max_body_bytes,
        max_pixels=max_pixels,
        batching=BatchingConfig(
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_queue=max(max_queue, max_batch_size),
            deadline_ms=deadline_ms,
        ),
        device=device,
        allow_model_control=allow_model_control,
        poll_seconds=poll_seconds,
        cache_entries=cache_entries,
        cache_ttl=cache_ttl,
        monitor=monitor,
    )
    if engine == "ray":
        from visionpipe.distributed.ray_serve import serve_on_ray

        raise typer.Exit(serve_on_ray(config, replicas=replicas, address=ray_address))
    if engine != "uvicorn":
        raise typer.BadParameter(f"expected uvicorn or ray, got {engine!r}", param_hint="--engine")
    from visionpipe.serve import serve as run

    raise typer.Exit(run(config))
