"""A real PostgreSQL server for the store tests: $VISIONPIPE_TEST_POSTGRES (``.ci/run`` starts one with
``.ci/postgres.sh``). Without it these tests fail under CI (CI=true) and skip elsewhere."""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_ENV = "VISIONPIPE_TEST_POSTGRES"


@pytest.fixture
def postgres_url():
    """The URL of a fresh, empty database on the test server, dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        message = f"no PostgreSQL server for the tests: set {POSTGRES_ENV} (.ci/postgres.sh starts one)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    import psycopg

    name = "visionpipe_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
