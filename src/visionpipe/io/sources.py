"""Expand what a user names on the command line into an ordered list of image paths.

Accepted: image files, folders (searched recursively, sorted, image extensions only), glob patterns,
text files listing one path per line (``.txt``; relative to the list's folder), and ``-`` for paths
on standard input. A named file that does not exist is kept, so it is reported as a failed input
rather than silently dropped. So is whatever a folder scan could not look into: an unreadable
subfolder, a symbolic-link loop, a dangling link with an image name. Each becomes an
:class:`~visionpipe.io.files.UnreadablePath` carrying its cause, which decoding reports. Lists are
read only from regular files (a FIFO is refused, not waited on), a line at most 64 KB long.

``iter_sources`` yields the same paths in the same order without building the list: list files and
standard input are read line by line and folders are walked one directory at a time, so a listing
of millions of paths costs no more memory than a short one (a glob pattern is still sorted whole).
"""

from __future__ import annotations

import errno
import glob
import io
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TextIO

from visionpipe.errors import SourceError
from visionpipe.io.files import InputFileError, UnreadablePath, open_regular_file

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm", ".pgm", ".ppm", ".pnm",
     ".jp2", ".sr", ".ras", ".avif"}
)  # fmt: skip
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".asf"}
)  # fmt: skip
MAX_LINE_CHARS = 64 * 1024  # one path per line: far longer than any real path
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
        yield from (Path(line) for line in _lines(stdin, "standard input"))
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
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            raise SourceError(f"cannot read folder {path}: {_why(exc)}") from None
        found = False
        for image in _walk_images(path, set()):
            found = True
            yield image
        if not found:
            raise SourceError(f"no images found in folder {path}")
        return
    if path.suffix.lower() in LIST_EXTENSIONS and path.exists():  # a FIFO named .txt is refused, not read
        base = path.parent
        try:
            handle = open_regular_file(path)
        except InputFileError as exc:
            raise SourceError(str(exc)) from None
        with io.TextIOWrapper(handle, encoding="utf-8") as text:
            for line in _lines(text, str(path)):
                listed = Path(line)
                yield listed if listed.is_absolute() else base / listed
        return
    if path.exists() or path.is_symlink():
        yield path
        return
    if glob.has_magic(source):
        matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not matches:
            raise SourceError(f"pattern {source!r} matches no files")
        yield from matches
        return
    yield path


def _lines(stream: IO[str], name: str) -> Iterator[str]:
    """The non-blank lines of a list, stripped; a line without end (an endless file) is refused."""
    while line := stream.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise SourceError(f"{name}: a line longer than {MAX_LINE_CHARS} characters is not a path")
        if line.strip():
            yield line.strip()


def scan_folder(folder: Path) -> list[Path]:
    """Image files under ``folder`` (see ``_walk_images``); an unreadable ``folder`` is a SourceError."""
    try:
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise SourceError(f"cannot read folder {folder}: {_why(exc)}") from None
    return list(_walk_images(folder, set()))


def _walk_images(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path]:
    """Image files under ``folder`` in the order of ``sorted(folder.rglob(...))``: entries of each
    directory sorted by name, a subfolder's contents at its name's place (paths compare by parts).

    Links to folders are followed once each; what cannot be looked into is yielded as an
    ``UnreadablePath`` naming why: an unreadable subfolder, a link back into the scan, a link
    loop, a dangling link with an image name.
    """
    try:
        top = os.stat(folder)
        seen.add((top.st_dev, top.st_ino))
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        yield UnreadablePath(folder, f"folder cannot be read: {_why(exc)}")
        return
    for entry in entries:
        path = folder / entry.name
        try:
            info = os.stat(entry.path)  # through links
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                yield UnreadablePath(path, "symbolic link loop")
            elif is_image_path(path):
                yield UnreadablePath(path, "dangling symbolic link" if entry.is_symlink() else _why(exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:  # a link back into the scan (or a second link to one folder)
                yield UnreadablePath(path, "symbolic link to a folder already scanned (a loop)")
                continue
            yield from _walk_images(path, seen)
        elif is_image_path(path):
            yield path  # a FIFO or device with an image name is named by the decoder, not skipped


def run_ids(paths: Sequence[Path]) -> list[str]:
    """One id per input, unique in the run: the file name when no two inputs share one, else
    every input's path relative to the inputs' common folder (``a/x.jpg``, ``b/x.jpg``); a path
    named twice gets ``#2``, ``#3``... on its later ids."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath(absolute)
    if root in absolute:  # one input is the common path itself: go one level up
        root = os.path.dirname(root)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for path in absolute:
        relative = Path(os.path.relpath(path, root)).as_posix()
        seen[relative] = seen.get(relative, 0) + 1
        ids.append(relative if seen[relative] == 1 else f"{relative}#{seen[relative]}")
    return ids


def check_unique_names(paths: Sequence[Path], why: str) -> None:
    """Refuse inputs where two different files share a file name (``why`` says what needs them unique)."""
    first: dict[str, Path] = {}
    for path in paths:
        other = first.setdefault(path.name, path)
        if other != path:
            raise SourceError(f"two inputs are named {path.name} ({other} and {path}); {why}")


def _why(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
