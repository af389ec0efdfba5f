"""Shared fixtures. Real assets come from one setting: $VISIONPIPE_ASSETS, else ../shared/assets
beside the checkout. Without them, tests that need them fail under CI (CI=true) and skip elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("VISIONPIPE_ASSETS", REPO.parent / "shared" / "assets"))


def _missing_assets(what: str) -> None:
    message = f"real test assets not found: {what} (set VISIONPIPE_ASSETS or place them at {ASSETS})"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def assets() -> Path:
    """The shared assets folder (see its MANIFEST.md)."""
    if not (ASSETS / "MANIFEST.md").is_file():
        _missing_assets(str(ASSETS))
    return ASSETS


@pytest.fixture(scope="session")
def asset(assets: Path):
    """A function returning the path of one asset, failing/skipping the test when it is absent."""

    def find(relative: str) -> Path:
        path = assets / relative
        if not path.exists():
            _missing_assets(str(path))
        return path

    return find
