"""Expand what a user names on the command line into an ordered list of image paths.

Accepted: image files, folders (searched recursively, sorted, image extensions only), glob patterns,
text files listing one path per line (``.txt``; relative to the list's folder), and ``-`` for paths
on standard input. A named file that does not exist is kept, so it is reported as a failed input
rather than silently dropped.

``iter_sources`` yields the same paths in the same order without building the list: list files and
standard input are read line by line and folders are walked one directory at a time, so a listing
of millions of paths costs no more memory than a short one (a glob pattern is still sorted whole).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
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
    return list(iter_sources(sources, stdin))


def iter_sources(sources: Iterable[str], stdin: TextIO | None = None) -> Iterator[Path]:
    """The paths ``sources`` name, in the order ``expand_sources`` lists them, read lazily."""
    for source in sources:
        yield from _expand_one(source, stdin or sys.stdin)


def _expand_one(source: str, stdin: TextIO) -> Iterator[Path]:
    if source == "-":
        yield from (Path(line.strip()) for line in stdin if line.strip())
        return
    if source.lower().startswith(URL_PREFIXES):
        # fetching whatever a URL serves is not a safe default for a batch tool
        raise SourceError(
            f"{source}: URLs are not fetched; download the images first (or give a stream to `visionpipe video`)"
        )
    path = Path(source)
    if path.suffix.lower() in VIDEO_EXTENSIONS and not path.is_dir():
        raise SourceError(f"{source} is a video: use `visionpipe video {source}`")
    if path.is_dir():
        found = False
        for image in _walk_images(path):
            found = True
            yield image
        if not found:
            raise SourceError(f"no images found in folder {path}")
        return
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        base = path.parent
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    listed = Path(line.strip())
                    yield listed if listed.is_absolute() else base / listed
        return
    if path.exists():
        yield path
        return
    if glob.has_magic(source):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"pattern {source!r} matches no files")
        yield from matches
        return
    yield path


def _walk_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` in the order of ``sorted(folder.rglob(...))``: entries of each
    directory sorted by name, a subfolder's contents at its name's place (paths compare by parts)."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        path = folder / entry.name
        if entry.is_dir():
            yield from _walk_images(path)
        elif entry.is_file() and is_image_path(path):
            yield path
