"""schemathesis over the live OpenAPI spec of a token-protected server.

Every operation the spec lists gets positive and negative cases, sent with the token, and
three checks: no 5xx, every response body matches its declared schema, every status is
declared. Excluded, and why: ``GET /v1/events`` is an endless Server-Sent Events stream,
which a request/response check cannot read to its end; ``GET /v1/export/onnx`` has no
inputs to vary and one export takes ~28 s on 2 cores (measured). tests/server/observe/test_events.py
and test_export.py cover both; tests/security/test_auth_sweep.py covers their auth.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import LiveServer
from tests.security.conftest import AUTH

EXCLUDED = ["/v1/events", "/v1/export/onnx"]
EXAMPLES = 85  # per operation and mode: >= 1,000 cases; ~30 s on 2 cores (measured)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


def _run(
    operation: Any, mode: GenerationMode, url: str, tally: Counter[str], found: list[str]
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=AUTH, timeout=60)
        tally["cases"] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=AUTH)
        except FailureGroup as group:
            for failure in group.exceptions:
                kind = "server_errors" if isinstance(failure, ServerError) else "schema_violations"
                tally[kind] += 1
                found.append(
                    f"{case.method} {case.path} -> {response.status_code}: {failure.title}"
                )

    if mode is GenerationMode.POSITIVE:
        run()
        return
    with contextlib.suppress(Unsatisfiable):  # a string path parameter has no negative value
        run()


def test_the_spec_holds_under_generated_requests(
    secured_server: LiveServer, figure: Callable[[str], None]
) -> None:
    spec = schemathesis.openapi.from_url(f"{secured_server.url}/openapi.json", headers=AUTH)
    schema = spec.exclude(path=EXCLUDED)
    tally: Counter[str] = Counter()
    found: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises
        inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
        modes = [GenerationMode.POSITIVE]
        if any(len(part) for part in inputs):  # without inputs there is nothing to negate
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _run(operation, mode, secured_server.url, tally, found)
    figure(
        f"schemathesis: cases={tally['cases']} server_errors={tally['server_errors']} "
        f"schema_violations={tally['schema_violations']}"
    )
    assert tally["cases"] >= 1000
    assert tally["server_errors"] == 0
    assert tally["schema_violations"] == 0, "\n".join(sorted(set(found)))
    assert not found, "\n".join(sorted(set(found)))
