"""Property-based tests of the router against its own OpenAPI schema (schemathesis): no 500s,
documented status codes and content types, responses that match their schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from larrylab.localproc import LocalProcess, start_router
from tests.conftest import write_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory, fast_sim: LocalProcess
) -> Iterator[LocalProcess]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    config = write_config(
        tmp / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    proc = start_router(
        log_dir=tmp,
        database_url=f"sqlite:///{tmp / 'db.sqlite'}",
        config=config,
    )
    yield proc
    proc.stop()


def test_router_honours_its_schema(router: LocalProcess) -> None:
    api = schemathesis.openapi.from_url(f"{router.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            # Every check but "schema-valid data is accepted": JSON Schema cannot say "exactly one
            # control arm" or "the model must exist", so such requests are rightly refused with 4xx.
            case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

        check()
