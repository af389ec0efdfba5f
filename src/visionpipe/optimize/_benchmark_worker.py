"""One benchmark variant, measured in a process of its own (see :mod:`visionpipe.optimize.benchmark`).

    python -m visionpipe.optimize._benchmark_worker JOB.json RESULT.json

JOB.json holds ``{"name", "label", "source": {"path": ...} | {"spec": {...}}, "config": {...}}``.
The row is rewritten to RESULT.json (atomically) after every stage, so whatever was measured
survives a later failure, crash or timeout. Progress events go to stderr as lines starting with
``PROGRESS_PREFIX``. Exit status 0: measured; 1: the row holds the error; 2: bad invocation.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from visionpipe.optimize.benchmark import (
    PROGRESS_PREFIX,
    BatchLatency,
    BenchmarkConfig,
    BenchmarkError,
    model_size_bytes,
)


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MiB.

    On Linux this is ``VmHWM`` of /proc/self/status, the high-water mark of this process's own
    address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: Linux carries the
    parent's peak across fork/vfork + exec into the child's ``ru_maxrss``, so a worker started from
    a large process (a test runner, a notebook) would report its parent's peak. Elsewhere
    ``ru_maxrss`` it is (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class _Job:
    def __init__(self, job: dict[str, Any], out: Path) -> None:
        self.source = job["source"]
        self.config = BenchmarkConfig.from_dict(job["config"])
        self.out = out
        self.row: dict[str, Any] = {"name": job["name"], "model": job["label"], "latency": []}
        self.stage = "start"
        self.step = 0

    def emit(self, stage: str, **fields: Any) -> None:
        self.stage = stage
        event = {"stage": stage, "step": self.step, **fields}
        sys.stderr.write(PROGRESS_PREFIX + json.dumps(event) + "\n")
        sys.stderr.flush()

    def save(self) -> None:
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.row, allow_nan=False), encoding="utf-8")
        os.replace(tmp, self.out)

    # -- stages -------------------------------------------------------------------------------

    def run(self) -> None:
        import numpy  # noqa: F401 - imported before the baseline, as every stage needs them
        import onnxruntime  # noqa: F401 - so load_ms does not count importing the runtime

        from visionpipe.models.loader import load_model

        config, row = self.config, self.row
        row["baseline_mb"] = peak_rss_mb()
        self.emit("load")
        source = self.source.get("path") or self.source.get("spec")
        _import_runtime(source)
        start = time.perf_counter()
        model = load_model(source, family=config.family, device=config.device, intra_op_threads=config.intra_op_threads)
        row["load_ms"] = (time.perf_counter() - start) * 1000.0
        backend = model.backend
        fixed = backend.fixed_batch
        row.update(
            model_path=os.fspath(getattr(backend, "path", "")) or None,
            family=model.family,
            input_hw=[int(model.input_hw[0]), int(model.input_hw[1])],
            providers=list(getattr(backend, "providers", [])) or [backend.runtime],
            fixed_batch=fixed is not None,
            model_batch=fixed,
        )
        self.step += 1
        self.save()

        self.emit("preprocess")
        tensors = self.timing_tensors(model)
        row["timing_images"] = len(tensors)
        for batch in config.batch_sizes:
            self.emit("latency", batch=batch)
            row["latency"].append(self.time_batch(backend, tensors, batch).__dict__)
            self.step += 1
            self.save()
        del tensors
        gc.collect()
        row["peak_timing_mb"] = peak_rss_mb()
        self.save()

        if config.annotations:
            self.evaluate(model)
            self.step += 1
        row["peak_mb"] = peak_rss_mb()
        self.save()
        if row["model_path"]:
            row["size_bytes"] = model_size_bytes(row["model_path"])
        self.emit("done")

    def timing_tensors(self, model) -> list:
        """Decoded, preprocessed input tensors (in the input's dtype) of the first images that decode."""
        from visionpipe.errors import VisionpipeError
        from visionpipe.io.images import decode_image
        from visionpipe.preprocess import preprocess

        config = self.config
        wanted = max(config.timing_images, config.batch_sizes[-1])
        dtype = model.backend.image_input.dtype
        tensors, problems = [], []
        for path in config.images:
            if len(tensors) >= wanted:
                break
            try:
                tensor, _ = preprocess(decode_image(path), model.input_hw, model.preprocess)
            except VisionpipeError as exc:
                problems.append(str(exc))
                continue
            tensors.append(tensor.astype(dtype, copy=False))
        if not tensors:
            raise BenchmarkError(
                f"none of the {len(config.images)} images could be used: {problems[0] if problems else ''}"
            )
        return tensors

    def time_batch(self, backend, tensors: list, batch: int) -> BatchLatency:
        """Latency of ``backend.run`` on batches of ``batch`` preprocessed images, cycling through them.

        A batch whose tensors differ in shape (size-"fit" models) runs as one call per shape, as the
        pipeline runs it.
        """
        import numpy as np

        count = len(tensors)
        starts = range(0, count, batch) if count >= batch else [0]
        batches = []
        for start in starts:
            members = [tensors[(start + j) % count] for j in range(batch)]
            groups: dict[tuple[int, ...], list] = {}
            for tensor in members:
                groups.setdefault(tensor.shape, []).append(tensor)
            batches.append([np.stack(group) for group in groups.values()])
        fixed = backend.fixed_batch
        calls = sum(-(-len(a) // fixed) if fixed else 1 for a in batches[0])

        def run(arrays: list) -> None:
            for array in arrays:
                backend.run(array)

        for i in range(self.config.warmup):
            run(batches[i % len(batches)])
        times = []
        clock = time.perf_counter
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i in range(self.config.repeats):
                arrays = batches[i % len(batches)]
                start = clock()
                run(arrays)
                times.append(clock() - start)
        finally:
            if gc_was_enabled:
                gc.enable()
        return BatchLatency.from_times(batch, times, calls_per_batch=calls)

    def evaluate(self, model) -> None:
        """mAP through the full pipeline on the images the annotations list, scored by pycocotools."""
        from visionpipe.evaluation import evaluate_coco, load_annotations
        from visionpipe.pipeline import Pipeline

        config, row = self.config, self.row
        self.emit("map")
        ground_truth = load_annotations(config.annotations)
        known = {Path(img["file_name"]).name for img in ground_truth["images"]}
        paths = [p for p in config.images if Path(p).name in known]
        if not paths:
            raise BenchmarkError(f"none of the {len(config.images)} images is listed in {config.annotations}")
        self.emit("map", done=0, total=len(paths))
        results = []
        with Pipeline(model, conf=config.conf, device=config.device) as pipe:
            for result in pipe.stream(paths, batch_size=config.eval_batch_size):
                results.append(result)
                self.emit("map", done=len(results), total=len(paths))
            class_names = pipe.class_names
        evaluation = evaluate_coco(results, ground_truth, class_names)
        row.update(
            map_50_95=evaluation.map_50_95,
            map_50=evaluation.map_50,
            map_images=evaluation.images,
            map_detections=len(evaluation.detections),
            failed_images=list(evaluation.failed_images),
        )


def _import_runtime(source) -> None:
    """Import the model's runtime package now, so load_ms does not count importing it."""
    from visionpipe.errors import VisionpipeError
    from visionpipe.models.backends import runtime_for
    from visionpipe.models.loader import resolve_spec

    try:
        spec = resolve_spec(source)
        runtime_for(spec.model, spec.runtime).backend_class()
    except (VisionpipeError, ImportError):
        pass  # the load itself reports it


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write(f"usage: python -m {__spec__.name if __spec__ else 'worker'} JOB.json RESULT.json\n")
        return 2
    job_path, out = Path(args[0]), Path(args[1])
    try:
        job = _Job(json.loads(job_path.read_text(encoding="utf-8")), out)
    except Exception as exc:
        sys.stderr.write(f"cannot read the benchmark job {job_path}: {type(exc).__name__}: {exc}\n")
        return 2
    try:
        job.run()
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        job.row["error"] = f"{job.stage}: {type(exc).__name__}: {text}"[:4000]
        try:
            job.save()
        except Exception as save_exc:
            sys.stderr.write(f"cannot write {out}: {save_exc}\n")
        sys.stderr.write(f"{job.row['error']}\n")
        return 1
    job.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
