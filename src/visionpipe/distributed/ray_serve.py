"""``visionpipe serve --engine ray``: the HTTP server's own FastAPI app, replicated by Ray Serve.

Each replica builds the app with ``serve.app.create_app`` from the same :class:`ServeConfig` (Ray
Serve's ingress, late-bound through ``__serve_build_asgi_app__``, so the app is made in the replica
and its lifespan loads the models there), so routes, limits, API keys, batching and metrics are
those of ``visionpipe serve``; Ray Serve's HTTP proxy spreads requests over ``replicas`` of it.

Metrics are summed over the replicas of a node, as over ``visionpipe serve --workers``: every
replica writes Prometheus' multiprocess files into one folder (named by ``PROMETHEUS_MULTIPROC_DIR``
in the replicas' environment, made on each node), so ``/metrics``, whichever replica answers it,
counts every request the node's replicas took. Scrape each node for a cluster's totals.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
from typing import Any

from visionpipe.errors import MissingExtraError

APP_NAME = "visionpipe"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_metrics_dirs: list[str] = []  # made by start_ray_serve, removed by stop_ray_serve


def _ray_serve():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise MissingExtraError("ray[serve]", "ray", "serving on Ray Serve") from None
    return ray, serve


class ServeReplica:
    """One Ray Serve replica: the visionpipe app for one ServeConfig (passed as JSON)."""

    def __init__(self, config_json: str) -> None:
        self.config_json = config_json

    def __serve_build_asgi_app__(self) -> Any:
        import os

        from visionpipe.serve.app import create_app
        from visionpipe.serve.server import CONFIG_ENV, config_from_env

        os.environ[CONFIG_ENV] = self.config_json
        if os.environ.get(METRICS_ENV):  # on another node than the driver's, the folder is made here
            os.makedirs(os.environ[METRICS_ENV], exist_ok=True)
        return create_app(config_from_env())


def start_ray_serve(config, replicas: int = 1, address: str | None = None) -> Any:
    """Deploy the app on Ray Serve (started here unless ``address`` names a cluster), listening on
    ``config.host:config.port``; returns the deployment handle. Stop with :func:`stop_ray_serve`."""
    ray, serve = _ray_serve()
    from visionpipe.serve.server import config_to_env

    config.check_bind()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(http_options={"host": config.host, "port": config.port})
    # one CPU per replica, or a share when there are more replicas than CPUs (never left pending)
    cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1)) / replicas)
    metrics_dir = tempfile.mkdtemp(prefix="visionpipe-ray-metrics-")
    _metrics_dirs.append(metrics_dir)
    deployment = serve.deployment(
        serve.ingress()(ServeReplica),
        name=APP_NAME,
        num_replicas=replicas,
        # the app batches requests itself; let a replica take as many as its queue allows
        max_ongoing_requests=max(8, config.batching.max_queue),
        ray_actor_options={
            "num_cpus": cpus,
            "num_gpus": 1.0 if config.device in ("cuda", "tensorrt") else 0,
            # set before the replica's process imports prometheus_client, which reads it at import
            "runtime_env": {"env_vars": {METRICS_ENV: metrics_dir}},
        },
    )
    return serve.run(deployment.bind(config_to_env(config)), name=APP_NAME, route_prefix="/")


def stop_ray_serve() -> None:
    _, serve = _ray_serve()
    serve.shutdown()
    while _metrics_dirs:
        shutil.rmtree(_metrics_dirs.pop(), ignore_errors=True)


def serve_on_ray(config, replicas: int = 1, address: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut the deployment down; returns the exit status."""
    ray, _ = _ray_serve()
    started_here = not ray.is_initialized()
    stop = threading.Event()
    start_ray_serve(config, replicas, address)
    # after ray.init, which installs handlers of its own that would end the process uncleanly
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(json.dumps({"serving": f"http://{config.host}:{config.port}", "replicas": replicas}), flush=True)
    try:
        stop.wait()
    finally:
        stop_ray_serve()
        if started_here:
            ray.shutdown()
    return 0
