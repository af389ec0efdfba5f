"""The one rule for every command that writes an output folder (``--out``).

- A folder that does not exist, or is empty, is used as it is.
- A folder that holds anything is refused (one line naming it and ``--exist-ok``), so the outputs
  of two runs never mix: an image that fails this time cannot keep the label an earlier run wrote.
- With ``--exist-ok``, what an earlier visionpipe run wrote there is removed first, and nothing
  else: each run lists every file it owns in ``.visionpipe-outputs`` inside the folder (a path is
  listed *before* its file is written, so even a killed run's files, and their ``.part``
  temporaries, are found by the next run). Files visionpipe did not write are left alone; a file
  of the same name as one this run writes is replaced.

Usage, by any command::

    folder = OutputFolder(out, exist_ok=exist_ok)   # refuses a non-empty folder: no side effects
    ...                                              # load the model, expand the inputs
    folder.start()                                   # removes the previous run's outputs
    path = folder.claim("detections.json")           # listed, then written by the caller
    ...
    folder.record_new_files()                        # files written without claim(), e.g. by a library
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from visionpipe.errors import OutputFolderError

MANIFEST_NAME = ".visionpipe-outputs"
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class OutputFolder:
    """An output folder under the rule above; ``flag`` is how the user allows reuse (named in errors)."""

    def __init__(self, path: str | os.PathLike, *, exist_ok: bool = False, flag: str = "--exist-ok") -> None:
        self.path = Path(path)
        self.exist_ok = exist_ok
        self.flag = flag
        self._claimed: set[str] = set()
        self._before: set[str] = set()
        self._lock = threading.Lock()
        self._manifest: IO[str] | None = None
        if self.path.exists() and not self.path.is_dir():
            raise OutputFolderError(f"output folder {self.path} exists and is not a folder")
        if self.holds_anything() and not exist_ok:
            raise OutputFolderError(
                f"output folder {self.path} is not empty; pass {flag} to replace what an earlier run wrote there"
            )

    def holds_anything(self) -> bool:
        try:
            with os.scandir(self.path) as entries:
                return any(e.name != MANIFEST_NAME for e in entries)
        except FileNotFoundError:
            return False

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_NAME

    def start(self, keep: Sequence[str | os.PathLike] = ()) -> OutputFolder:
        """Remove the previous run's outputs (with ``exist_ok``; never the files in ``keep``, such
        as this run's own input) and start this run's list."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.exist_ok:
            self.remove_previous_outputs(keep)
        self._before = set(self._files())
        self._manifest = open(self.manifest, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        return self

    def claim(self, relative: str | os.PathLike) -> Path:
        """The path of an output this run is about to write, listed as this run's first."""
        path = Path(relative)
        if path.is_absolute():
            path = path.relative_to(self.path)
        key = PurePosixPath(path).as_posix()
        with self._lock:
            if key not in self._claimed:
                self._claimed.add(key)
                if self._manifest is not None:
                    self._manifest.write(key + "\n")
                    self._manifest.flush()
        return self.path / path

    def record_new_files(self) -> None:
        """List every file that appeared in the folder since ``start`` (written by library code)."""
        for key in sorted(set(self._files()) - self._before):
            if not _is_temporary(key):
                self.claim(key)

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None

    def __enter__(self) -> OutputFolder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.record_new_files()
        self.close()

    def remove_previous_outputs(self, keep: Sequence[str | os.PathLike] = ()) -> list[Path]:
        """Remove every file the manifest lists (and their temporaries), then the folders they
        leave empty; return what was removed. Entries that point outside the folder are ignored."""
        try:
            with open(self.manifest, encoding="utf-8", errors="surrogateescape") as handle:
                listed = handle.read(_MAX_MANIFEST_BYTES).splitlines()
        except (FileNotFoundError, IsADirectoryError):
            return []
        removed: list[Path] = []
        folders: set[Path] = set()
        kept = {os.path.realpath(p) for p in keep}
        for line in listed:
            relative = PurePosixPath(line.strip())
            if not line.strip() or relative.is_absolute() or ".." in relative.parts:
                continue
            target = self.path.joinpath(*relative.parts)
            for path in [target, *target.parent.glob(f".{target.name}.*.part")]:
                if os.path.realpath(path) in kept:
                    continue
                if path.is_symlink() or path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
            parent = target.parent
            while parent != self.path and self.path in parent.parents:
                folders.add(parent)
                parent = parent.parent
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: foreign files keep their folder
            except OSError:
                pass
        self.manifest.unlink(missing_ok=True)
        return removed

    def _files(self) -> list[str]:
        out = []
        for root, _, files in os.walk(self.path):
            for name in files:
                if name != MANIFEST_NAME or Path(root) != self.path:
                    out.append(PurePosixPath(Path(root, name).relative_to(self.path)).as_posix())
        return out


def _is_temporary(key: str) -> bool:
    name = PurePosixPath(key).name
    return name.startswith(".") and name.endswith(".part")
