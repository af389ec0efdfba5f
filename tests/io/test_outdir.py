"""The output folder rule every command follows (visionpipe.io.outdir): a non-empty folder is
refused without exist_ok; with it, exactly what an earlier run listed is removed, foreign files stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from visionpipe.io.outdir import MANIFEST_NAME, OutputFolder, OutputFolderError


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_missing_or_empty_folder_is_used(tmp_path):
    with OutputFolder(tmp_path / "new") as folder:
        folder.claim("a.json").write_text("{}")
    assert files(tmp_path / "new") == [MANIFEST_NAME, "a.json"]
    (tmp_path / "empty").mkdir()
    OutputFolder(tmp_path / "empty").start().close()


def test_a_non_empty_folder_is_refused_naming_it_and_the_flag(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(OutputFolderError, match=r"out is not empty; pass --exist-ok") as info:
        OutputFolder(tmp_path / "out")
    assert str(tmp_path / "out") in str(info.value)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        OutputFolder(tmp_path / "out", flag="--overwrite")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputFolderError, match="not a folder"):
        OutputFolder(tmp_path / "file", exist_ok=True)


def test_exist_ok_removes_the_previous_runs_outputs_and_keeps_foreign_files(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out) as run:
        run.claim("labels/a.txt").parent.mkdir(parents=True)
        (out / "labels" / "a.txt").write_text("old")
        run.claim("only_last_time.csv").write_text("old")
        (out / "untracked_by_claim.json").write_text("written by a library")  # found by record_new_files
    (out / "mine.md").write_text("mine")
    (out / "labels" / ".a.txt.abc123.part").write_text("a killed run's temporary")
    (out / "deep").mkdir()
    (out / "deep" / "mine.txt").write_text("mine")

    with pytest.raises(OutputFolderError):
        OutputFolder(out)
    with OutputFolder(out, exist_ok=True) as run:
        run.claim("summary.json").write_text("new")
    assert files(out) == [MANIFEST_NAME, "deep/mine.txt", "mine.md", "summary.json"]
    assert (out / MANIFEST_NAME).read_text() == "summary.json\n"


def test_entries_that_leave_the_folder_are_never_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / MANIFEST_NAME).write_text(f"../victim.txt\n{victim}\n")
    (out / "x").write_text("")
    OutputFolder(out, exist_ok=True).start().close()
    assert victim.read_text() == "keep me"


def test_files_named_in_keep_survive(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out) as run:
        run.claim("model_int8.onnx").write_text("an earlier output, now this run's input")
    OutputFolder(out, exist_ok=True).start(keep=[out / "model_int8.onnx"]).close()
    assert (out / "model_int8.onnx").exists()


def test_a_killed_run_is_still_cleaned_up(tmp_path):
    """Paths are listed before their files are written, so a run killed mid-way (SIGKILL: no
    clean-up at all) leaves a manifest that names what it had written."""
    out = tmp_path / "out"
    script = (
        "import os, sys\n"
        "from visionpipe.io.outdir import OutputFolder\n"
        "run = OutputFolder(sys.argv[1]).start()\n"
        "run.claim('a.txt').write_text('a')\n"
        "run.claim('b.txt')\n"
        "open(os.path.join(sys.argv[1], '.b.txt.x1.part'), 'w').write('half')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(out)], env=dict(os.environ), timeout=60)
    assert proc.returncode == -9
    assert files(out) == [".b.txt.x1.part", MANIFEST_NAME, "a.txt"]
    OutputFolder(out, exist_ok=True).start().close()
    assert files(out) == [MANIFEST_NAME]
