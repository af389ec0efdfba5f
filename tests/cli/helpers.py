"""Helpers shared by the CLI tests."""

from __future__ import annotations

import subprocess


def describe(proc: subprocess.CompletedProcess) -> str:
    """The command, its status and its output, for assertion messages."""
    return f"$ {' '.join(map(str, proc.args))}\nexit status {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
