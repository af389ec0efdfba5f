"""Expand what a user names on the command line into an ordered list of image paths.

Accepted: image files, folders (searched recursively, sorted, image extensions only), glob patterns,
text files listing one path per line (``.txt``; relative to the list's folder), and ``-`` for paths
on standard input. A named file that does not exist is kept, so it is reported as a failed input
rather than silently dropped.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from visionpipe.errors import SourceError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm", ".pgm", ".ppm", ".pnm",
     ".jp2", ".sr", ".ras", ".avif"}
)  # fmt: skip
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".asf"}
)  # fmt: skip
URL_PREFIXES = ("http://", "https://", "ftp://", "rtsp://", "rtsps://", "rtmp://", "s3://", "gs://")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_sources(sources: Iterable[str], stdin: TextIO | None = None) -> list[Path]:
    paths: list[Path] = []
    for source in sources:
        paths.extend(_expand_one(source, stdin or sys.stdin))
    return paths


def _expand_one(source: str, stdin: TextIO) -> list[Path]:
    if source == "-":
        return [Path(line.strip()) for line in stdin if line.strip()]
    if source.lower().startswith(URL_PREFIXES):
        # fetching whatever a URL serves is not a safe default for a batch tool
        raise SourceError(
            f"{source}: URLs are not fetched; download the images first (or give a stream to `visionpipe video`)"
        )
    path = Path(source)
    if path.suffix.lower() in VIDEO_EXTENSIONS and not path.is_dir():
        raise SourceError(f"{source} is a video: use `visionpipe video {source}`")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
        if not found:
            raise SourceError(f"no images found in folder {path}")
        return found
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        base = path.parent
        lines = path.read_text(encoding="utf-8").splitlines()
        return [p if p.is_absolute() else base / p for p in (Path(line.strip()) for line in lines if line.strip())]
    if path.exists():
        return [path]
    if glob.has_magic(source):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"pattern {source!r} matches no files")
        return matches
    return [path]
