"""Read a file the user named, safely: regular files only, never more than a size cap.

A FIFO, a device or a socket given where a file is expected would block (or stream) for ever, and
an endless or huge file would be read until memory runs out. Every user-named file visionpipe
reads (images, path lists, specs, names files, annotations) goes through :func:`read_file`, which
opens without blocking, checks that it holds a regular file, and reads at most ``max_bytes``.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from visionpipe.errors import InputFileError

# caps for the small text files visionpipe reads; images have their own (DecodeLimits.max_bytes)
MAX_SPEC_BYTES = 1024 * 1024
MAX_NAMES_BYTES = 1024 * 1024
MAX_ANNOTATIONS_BYTES = 2 * 1024 * 1024 * 1024  # COCO's train2017 instances file is 450 MB


class UnreadablePath(type(Path())):  # type: ignore[misc]
    """A path found while expanding the user's sources that cannot be read, and why: it is
    carried to the decoder so the run reports it as a failed input with that cause."""

    def __init__(self, path: str | os.PathLike, cause: str = "cannot be read") -> None:
        if sys.version_info >= (3, 12):
            super().__init__(path)
        self.cause = cause

    def __new__(cls, path: str | os.PathLike, cause: str = "cannot be read"):
        if sys.version_info >= (3, 12):
            return object.__new__(cls)
        return super().__new__(cls, path)


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """A regular file opened for reading (binary), or :class:`InputFileError` saying why not;
    opened without blocking, so a FIFO is refused instead of waited on."""
    fd, _ = _open_regular(path)
    return os.fdopen(fd, "rb")


def _open_regular(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    if isinstance(path, UnreadablePath):
        raise InputFileError(path, path.cause)
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one for ever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ValueError as exc:  # a NUL character in the name
        raise InputFileError(repr(str(path)), f"invalid path: {exc}") from None
    except OSError as exc:
        raise InputFileError(path, _cause(path, exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(path, f"is {file_kind(info.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or :class:`InputFileError` saying why."""
    fd, info = _open_regular(path)
    path = Path(path)
    try:
        if info.st_size > max_bytes:
            raise InputFileError(path, f"{info.st_size} bytes exceeds the limit of {max_bytes}")
        chunks, total = [], 0
        while total <= max_bytes:  # the file may grow while it is read: stop one byte past the cap
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InputFileError(path, _cause(path, exc)) from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise InputFileError(path, f"size exceeds the limit of {max_bytes} bytes")
    return b"".join(chunks)


def read_text(path: str | os.PathLike, max_bytes: int) -> str:
    """A regular UTF-8 text file of at most ``max_bytes``."""
    data = read_file(path, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text (byte {exc.start})") from None


def _cause(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "dangling symbolic link" if path.is_symlink() else "file not found"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.EISDIR:
        return "is a folder, not a regular file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)
