"""The shard plan: a streamed input listing cut into consecutive, numbered pieces.

Shard ``k`` holds the inputs at positions ``k * size`` to ``(k + 1) * size - 1`` of the listing, so
the same listing and size always give the same shards, on any engine and on every resume. The
listing is consumed lazily: only the shard being cut is held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # position of the shard's first input in the whole listing
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def digest(self) -> str:
        """A fingerprint of the shard's inputs, to notice a listing that changed before a resume."""
        return listing_digest(self.paths)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def listing_digest(paths: Iterable[str]) -> str:
    digest = hashlib.sha1()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def iter_shards(paths: Iterable[str | Path], shard_size: int) -> Iterator[Shard]:
    """Cut ``paths`` into shards of ``shard_size`` inputs (the last may be shorter), lazily."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    listing = iter(paths)
    index = 0
    while True:
        chunk = tuple(str(p) for p in islice(listing, shard_size))
        if not chunk:
            return
        yield Shard(index=index, start=index * shard_size, paths=chunk)
        index += 1
