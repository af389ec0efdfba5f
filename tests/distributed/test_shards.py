"""The shard plan is deterministic and streamed; the streamed listing matches expand_sources."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from visionpipe.distributed.shards import iter_shards, listing_digest
from visionpipe.io.sources import expand_sources, iter_sources


def test_shards_cut_the_listing_by_position():
    paths = [f"/p/{i}.jpg" for i in range(10)]
    shards = list(iter_shards(paths, 4))
    assert [s.index for s in shards] == [0, 1, 2]
    assert [s.start for s in shards] == [0, 4, 8]
    assert [list(s.paths) for s in shards] == [paths[0:4], paths[4:8], paths[8:10]]
    assert [s.name for s in shards] == ["shard-000000", "shard-000001", "shard-000002"]
    # the same listing gives the same plan, fingerprints included
    assert [s.digest for s in iter_shards(paths, 4)] == [s.digest for s in shards]
    assert shards[0].digest != listing_digest(paths[1:5])


def test_shards_read_the_listing_lazily():
    pulled = []

    def listing():
        for i in range(1_000_000):
            pulled.append(i)
            yield f"/p/{i}.jpg"

    first = next(iter_shards(listing(), 3))
    assert first.paths == ("/p/0.jpg", "/p/1.jpg", "/p/2.jpg")
    assert len(pulled) == 3


def test_shard_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_shards(["a"], 0))


def test_streamed_sources_equal_the_expanded_list(tmp_path):
    for rel in ["b.jpg", "a/c.png", "a/b/d.jpg", "a.jpg", "a0/e.jpg", "notes.txt"]:
        (tmp_path / "photos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / rel).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("x.jpg\n\n/abs/y.jpg\n", encoding="utf-8")
    sources = [str(tmp_path / "photos"), str(listing), "-", str(tmp_path / "photos" / "*.jpg")]
    expected = expand_sources(sources, stdin=io.StringIO("s1.jpg\ns2.jpg\n"))
    streamed = iter_sources(sources, stdin=io.StringIO("s1.jpg\ns2.jpg\n"))
    assert next(streamed) == expected[0]  # a generator, not a list
    assert [expected[0], *streamed] == expected
    assert expected[:5] == sorted((tmp_path / "photos").rglob("*.[jp][pn]g"))
    assert Path("/abs/y.jpg") in expected and tmp_path / "x.jpg" in expected
