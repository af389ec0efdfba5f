"""Long runs show a progress bar on a terminal, stay quiet in a pipe, and ``--quiet`` silences it.

The terminal is a real pseudo-terminal (``pty``) given to the command as its stderr."""

from __future__ import annotations

import os
import pty
import subprocess

from visionpipe.data import sample_frames

from .conftest import COMMAND_TIMEOUT_S, _environment, visionpipe_command
from .helpers import describe


def run_on_a_terminal(*args: str, cwd) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal; return its status and what the terminal got."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*visionpipe_command(), *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=_environment(),
        )
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the other side closed: the command has exited
                break
            if not chunk:
                break
            chunks.append(chunk)
        status = proc.wait(timeout=COMMAND_TIMEOUT_S)
    finally:
        os.close(controller)
    return status, b"".join(chunks).decode("utf-8", "replace")


def test_detect_shows_a_bar_on_a_terminal_only(cli, tmp_path):
    frame = str(sample_frames()[0])
    status, shown = run_on_a_terminal("detect", frame, "--out", "a", cwd=tmp_path)
    assert status == 0, shown
    assert "━" in shown and "100%" in shown and "img/s" in shown, shown

    status, shown = run_on_a_terminal("detect", frame, "--out", "b", "--quiet", cwd=tmp_path)
    assert status == 0, shown
    assert "━" not in shown and "100%" not in shown, shown
    assert "1/1 images" in shown  # the one-line summary stays

    piped = cli("detect", frame, "--out", "c", cwd=tmp_path)
    assert piped.returncode == 0, describe(piped)
    assert "━" not in piped.stderr and "100%" not in piped.stderr, piped.stderr
