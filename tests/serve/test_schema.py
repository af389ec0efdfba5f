"""schemathesis over the served OpenAPI schema: whatever it sends, no 5xx but deliberate 503/504."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import free_port, running, write_version
from visionpipe.serve import BatchingConfig, ServeConfig

EXAMPLES = 12  # per operation: CI time is bounded; the shapes that matter are in test_server.py


@pytest.fixture(scope="module")
def server(tmp_path_factory, yolox_model):
    root = tmp_path_factory.mktemp("repository")
    write_version(root, "yolox", "1", yolox_model, "yolox")
    config = ServeConfig(
        sources=(root,), port=free_port(), poll_seconds=0, batching=BatchingConfig(max_batch_size=4, max_queue=8)
    )
    with running(config) as (url, _):
        yield url


def test_no_server_errors_over_the_served_schema(server):
    schema = schemathesis.openapi.from_url(server + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    unexpected: list[str] = []
    seen: set[int] = set()
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests on every run
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def probe(case) -> None:
            response = case.call(base_url=server, timeout=60)
            seen.add(response.status_code)
            if response.status_code >= 500 and response.status_code not in (503, 504):
                unexpected.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        probe()
    assert not unexpected, "\n".join(unexpected[:10])
    assert {200, 400, 404} <= seen  # it reached the models, and was refused for what it got wrong
