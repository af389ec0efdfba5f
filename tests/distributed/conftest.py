"""Inputs for the job tests: the package's four sample frames (real photos with people and cars),
listed several times in a list file, so a job has many shards without many distinct files."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "src" / "visionpipe" / "data" / "samples").glob("*.jpg"))


def write_listing(path: Path, count: int, extra: tuple[str, ...] = ()) -> Path:
    """A list file of ``count`` sample paths (cycling through the four), then ``extra`` lines."""
    lines = [str(SAMPLES[i % len(SAMPLES)]) for i in range(count)] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def listing(tmp_path):
    def make(count: int, extra: tuple[str, ...] = (), name: str = "inputs.txt") -> Path:
        return write_listing(tmp_path / name, count, extra)

    return make
