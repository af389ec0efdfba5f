"""The README's main job runs as written: its first ```bash block that runs `visionpipe`.

The install part of that block (venv, pip install ...) is skipped: the package is already installed
here. Every `visionpipe ...` command after it runs, in order, in an empty folder with the installed
command, and must leave annotated images and a COCO/JSON result with at least one detection per
sample image.
"""

from __future__ import annotations

import json
import re
import shlex

import cv2
import numpy as np

from .conftest import REPO
from .helpers import describe

# Run if the README ever loses its block (test_readme_shows_a_command_block_that_runs_visionpipe then
# fails too), so the main job itself is still exercised.
FALLBACK_COMMANDS = "visionpipe samples samples && visionpipe detect samples --save-images --out out"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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

    # annotated images: one per sample, same size, with boxes drawn on (strong pixel changes that a
    # JPEG re-encode alone does not make: measured max 20 levels on these images)
    annotated = {
        p.name: p for p in tmp_path.rglob("*") if p.parent.name == "annotated" and p.suffix.lower() in IMAGE_SUFFIXES
    }
    assert sorted(annotated) == sorted(p.name for p in sample_images), f"annotated images: {sorted(annotated)}"
    for sample in sample_images:
        original, drawn = cv2.imread(str(sample)), cv2.imread(str(annotated[sample.name]))
        assert drawn is not None and drawn.shape == original.shape, sample.name
        changed = int((np.abs(drawn.astype(int) - original.astype(int)).max(axis=2) > 60).sum())
        assert changed >= 200, f"{sample.name}: nothing drawn on the annotated image ({changed} pixels changed)"

    # the COCO results JSON: readable by json.load, at least one detection for every sample image
    results = [p for p in tmp_path.rglob("detections.json")]
    assert len(results) == 1, f"expected one COCO results file, found {results}"
    with open(results[0], encoding="utf-8") as handle:
        records = json.load(handle)
    assert isinstance(records, list) and records
    for record in records:
        assert {"image_id", "category_id", "bbox", "score"} <= set(record), record
        _, _, w, h = record["bbox"]
        assert w > 0 and h > 0
    # without annotations the COCO image id is the input's position in the run
    assert {r["image_id"] for r in records} == set(range(len(sample_images))), (
        f"{len(sample_images)} sample images, detections for image ids {sorted({r['image_id'] for r in records})}"
    )
