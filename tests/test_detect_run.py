"""detect_to_folder: the library function behind ``visionpipe detect`` (the CLI tests in tests/cli/
cover the command; these drive the function directly, with a tiny model and synthetic photos)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe.detect_run import DetectReport, detect_to_folder
from visionpipe.io.dataset_formats import OutputFormat
from visionpipe.io.outdir import OutputFolderError

NAMES = ("cat", "dog", "bird")


@pytest.fixture
def spec(tmp_path):
    """A YOLOv8-layout model with one box (class 0, score 0.9) and one (class 1, score 0.4)."""
    values = np.zeros((4 + len(NAMES), 16), np.float32)
    values[:4, 0] = (100, 150, 40, 60)
    values[4, 0] = 0.9
    values[:4, 1] = (200, 150, 40, 60)
    values[5, 1] = 0.4
    return {"model": str(constant_model(tmp_path / "tiny.onnx", values)), "family": "yolov8", "classes": list(NAMES)}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(240, 320), (320, 200)]):  # not square, in both orientations
        cv2.imwrite(str(folder / f"p{i}.png"), np.full((h, w, 3), 40 * (i + 1), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def test_writes_every_output_and_a_summary_and_names_the_bad_input(spec, photos, tmp_path):
    failed, advanced, totals = [], [], []

    @contextmanager
    def progress(total):
        totals.append(total)
        yield lambda: advanced.append(1)

    out = tmp_path / "out"
    report = detect_to_folder(
        [str(photos)],
        out,
        lambda: visionpipe.Pipeline(spec, conf=0.3),
        formats=[OutputFormat.JSONL, OutputFormat.CSV],
        progress=progress,
        on_failure=lambda source, error: failed.append(source),
    )
    assert isinstance(report, DetectReport) and report.out == out
    assert [p.rsplit("/", 1)[-1] for p in failed] == ["broken.jpg"]
    assert totals == [3] and len(advanced) == 3
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == report.summary
    assert (summary["images"], summary["processed"], summary["detections"]) == (3, 2, 4)  # 2 boxes per photo
    assert [f["path"].rsplit("/", 1)[-1] for f in report.failures] == ["broken.jpg"]
    assert report.exit_code == 2 and report.interrupted is None
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines()]
    sizes = {line["id"]: (line["height"], line["width"]) for line in lines if line["error"] is None}
    assert sizes == {"p0.png": (240, 320), "p1.png": (320, 200)}
    assert (out / "detections.csv").is_file()


def test_a_refused_output_folder_loads_no_model(spec, photos, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("not visionpipe's", encoding="utf-8")
    loaded = []
    with pytest.raises(OutputFolderError):
        detect_to_folder([str(photos)], out, lambda: loaded.append(1) or visionpipe.Pipeline(spec))
    assert loaded == [] and sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_a_pipeline_is_accepted_as_it_is_and_a_clean_run_exits_0(spec, photos, tmp_path):
    (photos / "broken.jpg").unlink()
    report = detect_to_folder([str(photos)], tmp_path / "out", visionpipe.Pipeline(spec, conf=0.5))
    assert report.exit_code == 0 and report.summary["detections"] == 2  # the 0.4 box is below conf
    assert (tmp_path / "out" / "coco.json").is_file() and (tmp_path / "out" / "detections.jsonl").is_file()
