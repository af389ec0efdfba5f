"""Detect objects in image files and write every output into one folder: what ``visionpipe detect``
runs (the command only parses its flags, calls :func:`detect_to_folder` and prints the report).

The order of a run keeps its promises: the output folder and the inputs are checked before a model
loads (a typo costs no loading time); each result is written to every output before the next one
is counted (a signal waits for it); a bad input is reported and the rest still processed; on an
interrupt what was accepted is still published, and ``summary.json`` says the run was stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionpipe.io.dataset_formats import OutputFormat

if TYPE_CHECKING:
    from visionpipe.interrupt import Interrupted
    from visionpipe.pipeline import Pipeline

# (total inputs) -> a context yielding advance(), called once per input done
Progress = Callable[[int], AbstractContextManager[Callable[[], None]]]


@dataclass
class DetectReport:
    """What a run did: ``summary`` is what ``summary.json`` in ``out`` holds (images, processed,
    failed inputs with their causes, detections, seconds, images per second, and when a signal
    stopped the run, which one and how many inputs were not processed).

    Example::

        report = detect_to_folder(["photos/"], "runs/1", Pipeline("yolox.yaml"))
        raise SystemExit(report.exit_code)   # 2 when some input could not be read
    """

    out: Path
    summary: dict[str, Any]
    interrupted: Interrupted | None = None

    @property
    def failures(self) -> list[dict[str, str]]:
        return self.summary["failed"]

    @property
    def exit_code(self) -> int:
        """What a command should exit with: 128 + the signal's number when one stopped the run, 2
        when some input failed, else 0."""
        if self.interrupted is not None:
            return self.interrupted.exit_code
        return 2 if self.failures else 0


@contextmanager
def _no_progress(total: int) -> Iterator[Callable[[], None]]:
    yield lambda: None


def detect_to_folder(
    sources: Sequence[str],
    out: str | Path,
    pipeline: Pipeline | Callable[[], Pipeline],
    *,
    formats: Sequence[OutputFormat] = (OutputFormat.COCO, OutputFormat.JSONL),
    save_conf: bool = False,
    save_images: bool = False,
    annotations: str | Path | None = None,
    exist_ok: bool = False,
    monitor: str | None = None,
    monitor_tag: str = "default",
    progress: Progress = _no_progress,
    on_failure: Callable[[str, BaseException], None] | None = None,
) -> DetectReport:
    """Run ``pipeline`` over ``sources`` (files, folders, globs, .txt lists, ``-``) and write
    ``formats`` (plus YOLO labels' score column with ``save_conf``, annotated images with
    ``save_images``) and ``summary.json`` into ``out``.

    ``pipeline`` is a Pipeline or a function making one, called once the folder and the inputs are
    checked (the image pixel limit is the pipeline's: ``Pipeline(..., limits=DecodeLimits(...))``).
    ``annotations`` (a COCO json) gives the COCO output its image and category ids.
    ``monitor`` records each result in that monitoring store. ``progress(total)`` is entered around
    the run and its ``advance()`` called per input; ``on_failure(source, error)`` per bad input.

    Example::

        report = detect_to_folder(["photos/"], "runs/1", lambda: Pipeline("yolox.yaml"), formats=[OutputFormat.CSV])
        print(report.summary["detections"], report.exit_code)
    """
    from visionpipe.evaluation import load_annotations
    from visionpipe.interrupt import Interrupted, stop_on_signals
    from visionpipe.io.annotate import annotate, encode_image
    from visionpipe.io.dataset_formats import open_writers
    from visionpipe.io.formats import abort_writers, atomic_open, atomic_write_bytes, close_writers, unique_name
    from visionpipe.io.outdir import OutputFolder
    from visionpipe.io.sources import check_unique_names, expand_sources, run_ids
    from visionpipe.monitor.monitor import monitoring
    from visionpipe.pipeline import Pipeline

    out = Path(out)
    folder = OutputFolder(out, exist_ok=exist_ok)  # refused now, before anything is loaded
    paths = expand_sources(list(sources))
    ids = run_ids(paths)
    gt = load_annotations(Path(annotations)) if annotations else None
    if gt is not None:
        check_unique_names(paths, "--annotations matches images by file name")
    pipe = pipeline if isinstance(pipeline, Pipeline) else pipeline()
    folder.start()
    writers = open_writers(
        list(formats),
        out,
        pipe.class_names,
        gt,
        save_conf=save_conf,
        model_name=pipe.name,
        claim=folder.claim,  # every output listed in the folder's manifest before it is written
    )

    failures: list[dict] = []
    boxes = 0
    done = 0
    used_names: set[str] = set()
    interrupted: Interrupted | None = None
    start = time.perf_counter()
    try:
        with stop_on_signals() as stop:
            try:
                with pipe, monitoring(pipe, monitor, tag=monitor_tag), progress(len(paths)) as advance:
                    for result in pipe.stream(paths, keep_images=save_images):
                        with stop.critical():  # a signal waits until this result is written everywhere
                            result.image_id = ids[result.index]
                            for writer in writers:
                                writer.write(result)
                            done += 1
                            if result.error is not None:
                                failures.append({"path": result.source, "error": str(result.error)})
                                if on_failure is not None:
                                    on_failure(result.source, result.error)
                            else:
                                found, image = result.detections, result.image
                                assert found is not None  # a result without an error has its detections
                                boxes += len(found)
                                if save_images:
                                    assert image is not None  # kept by keep_images=True
                                    # the frame already decoded: the file may have changed since
                                    name = unique_name(result.image_id, result.index, used_names)
                                    drawn = annotate(image, found)
                                    result.image = None
                                    target = folder.claim(Path("annotated") / name)
                                    atomic_write_bytes(target, encode_image(drawn, Path(name).suffix))
                            advance()
            except Interrupted as exc:
                interrupted = exc  # stop taking inputs; what was accepted is still published
            close_writers(writers)
    except BaseException:
        abort_writers(writers)
        raise
    finally:
        folder.record_new_files()
    elapsed = time.perf_counter() - start

    summary: dict[str, Any] = {
        "model": pipe.name,
        "family": "+".join(m.model.family for m in pipe.members),
        "images": len(paths),
        "processed": done - len(failures),
        "failed": failures,
        "detections": boxes,
        "seconds": round(elapsed, 3),
        "images_per_second": round(done / elapsed, 2) if elapsed > 0 else None,
    }
    if interrupted is not None:
        summary["interrupted"] = interrupted.signal_name
        summary["not_processed"] = len(paths) - done
    with atomic_open(folder.claim("summary.json")) as handle:
        json.dump(summary, handle, indent=2)
    folder.close()
    return DetectReport(out=out, summary=summary, interrupted=interrupted)


__all__ = ["DetectReport", "detect_to_folder"]
