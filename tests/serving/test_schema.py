"""Schemathesis over the predictor's own OpenAPI document, against the real server: no input gives a 5xx.

Each operation gets valid (positive) and invalid (negative) cases generated from its schema; every response
must be below 500. Bounded: a few cases per operation and mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(live: Any, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call_and_validate(base_url=live.url, checks=[not_a_server_error])
            statuses.append(response.status_code)

        try:
            check()
        except Unsatisfiable:  # e.g. a GET without parameters has no invalid form
            assert mode == GenerationMode.NEGATIVE
    assert statuses and max(statuses) < 500
    if mode == GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in statuses)  # the generator did reach the error paths
