"""The README's main job runs as written: its first ```bash block that runs `visionpipe`.

The install part of that block (venv, pip install ...) is skipped: the package is already installed
here. Every `visionpipe ...` command after it runs, in order, in an empty folder with the installed
command, and must box the people and cars in the real sample frames (with the built-in COCO
detector, offline: the model and frames ship inside the package) and leave annotated images and a
COCO results file.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np

from .conftest import REPO
from .helpers import describe

# Run if the README ever loses its block (test_readme_shows_a_command_block_that_runs_visionpipe then
# fails too), so the main job itself is still exercised.
FALLBACK_COMMANDS = "visionpipe samples samples && visionpipe detect samples --save-images --out out"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}

# Labelled BY EYE on the shipped frames (768 x 432, viewed with a 50 px grid): what each shows, as
# axis-aligned (x1, y1, x2, y2) boxes in pixels. A detection of that class must overlap it with
# IoU > 0.5 (the labels are loose by a few pixels; a detector box of the right object scores > 0.8).
SAMPLE_FRAMES = {
    "person_0800.jpg": ("person", (365, 32, 500, 380)),
    "person_1300.jpg": ("person", (355, 0, 525, 395)),
    "car_0101.jpg": ("car", (285, 0, 397, 63)),
    "car_0233.jpg": ("car", (305, 0, 420, 60)),
}
MIN_IOU = 0.5


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def readme_command_block(readme: str) -> str | None:
    """The body of the first ```bash fenced block that runs `visionpipe` as a command."""
    for match in re.finditer(r"^```(?:bash|sh|shell|console)[^\n]*\n(.*?)^```", readme, re.MULTILINE | re.DOTALL):
        if visionpipe_commands(match.group(1)):
            return match.group(1)
    return None


def visionpipe_commands(block: str) -> list[list[str]]:
    """The `visionpipe ...` commands of a shell block, in order, as argument lists; everything else
    (comments, prompts, venv activation, pip install, the test run) is dropped."""
    text = re.sub(r"\\\n", " ", block)  # line continuations
    commands = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)  # a "$ " prompt
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;", line):
            words = shlex.split(part, comments=True)
            if words and words[0] == "visionpipe":
                commands.append(words[1:])
    return commands


def test_readme_shows_a_command_block_that_runs_visionpipe():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_command_block(readme) is not None, (
        "README.md has no ```bash block running `visionpipe` (the install-and-run main job)"
    )


def test_visionpipe_commands_are_extracted_from_a_block():
    block = 'python3 -m venv .venv && . .venv/bin/activate && pip install "visionpipe[builtin]" \\\n  && visionpipe samples s\n# run\n$ visionpipe detect s --out "o 1"\n'
    assert visionpipe_commands(block) == [["samples", "s"], ["detect", "s", "--out", "o 1"]]
    assert readme_command_block("```bash\npip install x && python -m pytest\n```\n") is None


def test_readme_main_job_runs_and_produces_results(cli, tmp_path):
    block = readme_command_block((REPO / "README.md").read_text(encoding="utf-8"))
    commands = visionpipe_commands(block if block is not None else FALLBACK_COMMANDS)
    assert any(c and c[0] == "detect" for c in commands), f"no `visionpipe detect` among {commands}"

    for args in commands:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, describe(proc)
        assert "Traceback" not in proc.stderr

    samples = next((c for c in commands if c and c[0] == "samples"), None)
    assert samples is not None, "the README's commands make no sample images to run on"
    positional = [a for a in samples[1:] if not a.startswith("-")]
    sample_dir = tmp_path / (positional[0] if positional else "samples")
    sample_images = sorted(p for p in sample_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    assert sample_images, f"no sample images in {sample_dir}"

    # the shipped frames are among the samples, and their people and cars are found where they are
    from visionpipe.data import sample_frames

    assert sorted(p.name for p in sample_frames()) == sorted(SAMPLE_FRAMES), "package data missing or changed"
    names = {p.name for p in sample_images}
    assert set(SAMPLE_FRAMES) <= names, f"the real frames are not among the samples: {sorted(names)}"
    records = {}
    for path in tmp_path.rglob("detections.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            records[Path(record["path"]).name] = record
    for frame, (what, label) in SAMPLE_FRAMES.items():
        assert frame in records, f"{frame}: no JSONL record among {sorted(records)}"
        found = [d["xyxy"] for d in records[frame]["detections"] if d["class_name"] == what]
        best = max((iou(label, box) for box in found), default=0.0)
        assert best > MIN_IOU, f"{frame}: no {what} boxed at {label} (best IoU {best:.2f}; {records[frame]})"

    # annotated images: one per sample, same size, with boxes drawn on the frames (strong pixel
    # changes that a JPEG re-encode alone does not make: measured max 20 levels on these images)
    annotated = {
        p.name: p for p in tmp_path.rglob("*") if p.parent.name == "annotated" and p.suffix.lower() in IMAGE_SUFFIXES
    }
    assert sorted(annotated) == sorted(names), f"annotated images: {sorted(annotated)}"
    for sample in sample_images:
        original, drawn = cv2.imread(str(sample)), cv2.imread(str(annotated[sample.name]))
        assert drawn is not None and drawn.shape == original.shape, sample.name
        if sample.name in SAMPLE_FRAMES:
            changed = int((np.abs(drawn.astype(int) - original.astype(int)).max(axis=2) > 60).sum())
            assert changed >= 200, f"{sample.name}: nothing drawn on the annotated image ({changed} pixels changed)"

    # the COCO dataset: readable by json.load, every sample an image of it with its size (with or
    # without detections), and valid annotations with scores
    datasets = [p for p in tmp_path.rglob("coco.json")]
    assert len(datasets) == 1, f"expected one COCO dataset, found {datasets}"
    with open(datasets[0], encoding="utf-8") as handle:
        dataset = json.load(handle)
    assert isinstance(dataset, dict) and {"images", "categories", "annotations"} <= set(dataset)
    assert sorted(Path(img["file_name"]).name for img in dataset["images"]) == sorted(p.name for p in sample_images)
    for image in dataset["images"]:
        height, width = cv2.imread(
            str(next(p for p in sample_images if p.name == Path(image["file_name"]).name))
        ).shape[:2]
        assert (image["width"], image["height"]) == (width, height), image
    records = dataset["annotations"]
    assert records
    for record in records:
        assert {"id", "image_id", "category_id", "bbox", "score", "area"} <= set(record), record
        _, _, w, h = record["bbox"]
        assert w > 0 and h > 0
    assert {r["image_id"] for r in records} <= {img["id"] for img in dataset["images"]}, (
        f"{len(sample_images)} sample images, detections for image ids {sorted({r['image_id'] for r in records})}"
    )
