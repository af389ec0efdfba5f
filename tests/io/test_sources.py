"""expand_sources: files, folders, glob patterns, list files and stdin become an ordered path list."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from visionpipe.errors import VisionpipeError
from visionpipe.io.sources import SourceError, expand_sources


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def tree(tmp_path):
    """photos/ with images at several depths, mixed-case extensions and non-image files."""
    root = tmp_path / "photos"
    files = {
        "b.jpg": True,
        "a.PNG": True,
        "C.JpEg": True,
        "notes.txt": False,
        "data.json": False,
        "noext": False,
        "sub/z.bmp": True,
        "sub/deeper/y.webp": True,
        "sub/deeper/readme.md": False,
        "sub/x.tiff": True,
        "sub2/w.TIF": True,
    }
    for rel in files:
        touch(root / rel)
    return root, sorted(root / rel for rel, is_image in files.items() if is_image)


def test_single_file(tmp_path):
    photo = touch(tmp_path / "one.jpg")
    assert expand_sources([str(photo)]) == [photo]


def test_single_existing_file_with_any_extension_is_kept(tmp_path):
    # named explicitly, so it is the user's choice: kept (and reported later if it is no image)
    other = touch(tmp_path / "frame.raw")
    assert expand_sources([str(other)]) == [other]


def test_folder_is_recursive_sorted_and_images_only(tree):
    root, expected = tree
    got = expand_sources([str(root)])
    assert got == expected
    assert got == sorted(got)
    names = {p.name for p in got}
    assert names == {"b.jpg", "a.PNG", "C.JpEg", "z.bmp", "y.webp", "x.tiff", "w.TIF"}


def test_folder_skips_subfolders_named_like_images(tmp_path):
    touch(tmp_path / "album.jpg" / "inner.png")
    assert expand_sources([str(tmp_path)]) == [tmp_path / "album.jpg" / "inner.png"]


def test_empty_folder_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError) as info:
        expand_sources([str(empty)])
    assert str(empty) in str(info.value)
    assert isinstance(info.value, VisionpipeError)


def test_folder_without_images_is_an_error(tmp_path):
    touch(tmp_path / "docs" / "a.txt")
    touch(tmp_path / "docs" / "b.csv")
    with pytest.raises(SourceError):
        expand_sources([str(tmp_path / "docs")])


def test_glob_pattern(tree):
    root, _ = tree
    got = expand_sources([str(root / "*.jpg")])
    assert got == [root / "b.jpg"]


def test_recursive_glob_pattern(tree):
    root, _ = tree
    got = expand_sources([str(root / "**" / "*.tif*")])
    assert got == sorted([root / "sub" / "x.tiff"])  # fnmatch on Linux is case-sensitive: w.TIF is not matched
    got = expand_sources([str(root / "**" / "*.webp")])
    assert got == [root / "sub" / "deeper" / "y.webp"]


def test_recursive_glob_includes_top_level_and_is_sorted(tmp_path):
    for rel in ["k.jpg", "m/j.jpg", "a/b/c/i.jpg", "a/h.jpg"]:
        touch(tmp_path / rel)
    got = expand_sources([str(tmp_path / "**" / "*.jpg")])
    assert got == sorted(tmp_path / rel for rel in ["k.jpg", "m/j.jpg", "a/b/c/i.jpg", "a/h.jpg"])


def test_glob_matches_files_not_folders(tmp_path):
    touch(tmp_path / "dir.jpg" / "x.png")
    touch(tmp_path / "f.jpg")
    assert expand_sources([str(tmp_path / "*.jpg")]) == [tmp_path / "f.jpg"]


def test_pattern_matching_nothing_is_an_error(tmp_path):
    touch(tmp_path / "a.png")
    with pytest.raises(SourceError) as info:
        expand_sources([str(tmp_path / "*.jpg")])
    assert "*.jpg" in str(info.value)


def test_existing_file_with_glob_characters_in_its_name(tmp_path):
    odd = touch(tmp_path / "shot[1].jpg")
    touch(tmp_path / "shot1.jpg")
    assert expand_sources([str(odd)]) == [odd]


def test_list_file_with_relative_absolute_and_blank_lines(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    elsewhere = touch(tmp_path / "elsewhere" / "abs.png")
    touch(lists / "rel.jpg")
    touch(lists / "nested" / "deep.jpg")
    listing = lists / "inputs.txt"
    listing.write_text(f"rel.jpg\n\n   \nnested/deep.jpg\n  {elsewhere}  \nmissing.jpg\n", encoding="utf-8")
    got = expand_sources([str(listing)])
    assert got == [lists / "rel.jpg", lists / "nested" / "deep.jpg", elsewhere, lists / "missing.jpg"]


def test_list_file_is_relative_to_its_own_folder_not_the_cwd(tmp_path, monkeypatch):
    lists = touch(tmp_path / "a" / "b" / "l.txt", b"img.jpg\n")
    monkeypatch.chdir(tmp_path)
    assert expand_sources([str(Path("a") / "b" / "l.txt")]) == [Path("a") / "b" / "img.jpg"]
    assert lists.exists()


def test_stdin_dash_reads_paths_from_the_given_stream(tmp_path):
    stream = io.StringIO(f"{tmp_path / 'x.jpg'}\n\n  relative/y.png  \n")
    got = expand_sources(["-"], stdin=stream)
    assert got == [tmp_path / "x.jpg", Path("relative/y.png")]


def test_missing_named_file_is_kept_for_later_reporting(tmp_path):
    missing = tmp_path / "gone.jpg"
    assert expand_sources([str(missing)]) == [missing]


def test_several_sources_keep_command_line_order(tree, tmp_path):
    root, images = tree
    single = touch(tmp_path / "solo.jpg")
    missing = tmp_path / "missing.png"
    stream = io.StringIO("from_stdin.jpg\n")
    got = expand_sources([str(single), str(root), str(missing), "-"], stdin=stream)
    assert got == [single, *images, missing, Path("from_stdin.jpg")]


def test_one_bad_source_fails_the_whole_expansion(tmp_path):
    good = touch(tmp_path / "ok.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError):
        expand_sources([str(good), str(empty)])
