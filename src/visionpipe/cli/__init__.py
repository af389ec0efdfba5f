"""The ``visionpipe`` command. Imports stay inside commands so ``--help`` and one-image runs start fast."""

from visionpipe.cli.app import app, main

__all__ = ["app", "main"]
