"""The flags and inputs people bring from other tools: Ultralytics spellings, a video or a URL given
to ``detect``, a batch size the model cannot use, --imgsz, --half, --max-det, --agnostic-nms."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from .helpers import describe

DYNAMIC = "models/yolov8n_random_dynamic.onnx"  # dynamic batch and size, random weights
FIXED = "models/yolox_nano_416_coco.onnx"  # batch fixed at 1, 416x416
PHOTOS = "coco/images/val2017"


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), np.full((64, 96, 3), 127, np.uint8))
    return path


def one_line(proc) -> str:
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(proc)
    return lines[0]


def test_detect_on_a_video_file_says_to_use_video(cli, asset, tmp_path):
    clip = asset("video/one-by-one-person-detection.mp4")
    line = one_line(cli("detect", clip, "--out", tmp_path / "out"))
    assert "visionpipe video" in line and "is a video" in line


@pytest.mark.parametrize("url", ["https://example.com/cat.jpg", "http://10.0.0.1/img.png", "rtsp://cam/stream"])
def test_detect_on_a_url_says_urls_are_not_fetched(cli, tmp_path, url):
    line = one_line(cli("detect", url, "--out", tmp_path / "out"))
    assert "URLs are not fetched" in line and "file not found" not in line


def test_batch_size_on_a_fixed_batch_model_says_it_runs_one_at_a_time(cli, asset, tmp_path):
    photos = sorted(asset(PHOTOS).glob("*.jpg"))[:2]
    proc = cli("detect", *photos, "--model", asset(FIXED), "--family", "yolox", "--batch-size", "8",
               "--format", "jsonl", "--out", tmp_path / "out")  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "fixed batch of 1" in proc.stderr and "one at a time" in proc.stderr, describe(proc)


def test_imgsz_sets_a_dynamic_models_input_and_is_refused_for_a_fixed_one(cli, asset, photo, tmp_path):
    ok = cli("detect", photo, "--model", asset(DYNAMIC), "--imgsz", "320", "--format", "jsonl",
             "--out", tmp_path / "a")  # fmt: skip
    assert ok.returncode == 0, describe(ok)
    same = cli("detect", photo, "--model", asset(DYNAMIC), "--input-size", "320,320", "--format", "jsonl",
               "--out", tmp_path / "b")  # fmt: skip
    assert same.returncode == 0, describe(same)
    line = one_line(cli("detect", photo, "--model", asset(FIXED), "--family", "yolox", "--imgsz", "640",
                        "--out", tmp_path / "c"))  # fmt: skip
    assert "416" in line and "640" in line


def test_half_on_cpu_is_refused_with_the_reason(cli, asset, photo, tmp_path):
    line = one_line(cli("detect", photo, "--model", asset(DYNAMIC), "--half", "--out", tmp_path / "out"))
    assert "GPU" in line


def test_max_det_and_agnostic_nms_reach_the_pipeline(cli, asset, yolox_spec, tmp_path):
    photo = sorted(asset(PHOTOS).glob("*.jpg"))[0]

    def boxes(*flags):
        out = tmp_path / "-".join(flags or ("plain",))
        proc = cli("detect", photo, "--model", yolox_spec, "--conf", "0.01", *flags, "--format", "jsonl",
                   "--out", out)  # fmt: skip
        assert proc.returncode == 0, describe(proc)
        return json.loads((out / "detections.jsonl").read_text(encoding="utf-8"))["detections"]

    plain = boxes()
    assert len(plain) > 5
    assert len(boxes("--max-det", "5")) == 5
    agnostic = boxes("--agnostic-nms")
    assert 0 < len(agnostic) < len(plain)  # boxes of different classes now suppress each other
    assert len(boxes("--agnostic")) == len(agnostic)  # our spelling, the same setting


def test_ultralytics_spellings_save_batch_and_vid_stride(cli, asset, photo, tmp_path):
    out = tmp_path / "out"
    proc = cli("detect", photo, "--model", asset(DYNAMIC), "--save", "--batch", "2", "--format", "jsonl", "--out", out)
    assert proc.returncode == 0, describe(proc)
    assert (out / "annotated" / photo.name).is_file()

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(9):
        writer.write(np.full((64, 96, 3), 20 * i, np.uint8))
    writer.release()
    proc = cli("video", clip, "--model", asset(DYNAMIC), "--vid-stride", "3", "--imgsz", "96")
    assert proc.returncode == 0, describe(proc)
    summary = json.loads(proc.stdout)
    assert summary["processed"] == 3 and summary["dropped"]["stride"] == 6


def test_dataset_outputs_are_owned_by_their_run(cli, asset, tmp_path):
    """Every new output (data.yaml, classes.txt, YOLO labels, VOC files, the COCO dataset, Label
    Studio tasks) is listed in the output folder's manifest, so a later run with --exist-ok removes
    them (and leaves a file visionpipe did not write)."""
    photos = sorted(asset(PHOTOS).glob("*.jpg"))[:2]
    out = tmp_path / "out"
    first = cli("detect", *photos, "--model", asset(FIXED), "--family", "yolox", "--out", out,
                "--format", "coco", "--format", "yolo", "--format", "voc", "--format", "label-studio")  # fmt: skip
    assert first.returncode == 0, describe(first)
    written = ["coco.json", "data.yaml", "classes.txt", "label_studio.json"]
    written += [f"labels/{p.stem}.txt" for p in photos] + [f"voc/{p.stem}.xml" for p in photos]
    assert all((out / name).is_file() for name in written)
    (out / "mine.txt").write_text("not visionpipe's")
    second = cli("detect", photos[0], "--model", asset(FIXED), "--family", "yolox", "--out", out,
                 "--format", "jsonl", "--exist-ok")  # fmt: skip
    assert second.returncode == 0, describe(second)
    assert not any((out / name).exists() for name in written), sorted(p.name for p in out.rglob("*"))
    assert (out / "mine.txt").read_text() == "not visionpipe's" and (out / "detections.jsonl").is_file()
