"""Schemathesis over the whole OpenAPI document: generated requests, valid and not, as an
admin, a viewer and with no key. Zero server errors, and every response conforms to the
schema the API publishes (its status code documented, its body of the documented shape).

The examples per operation are bounded (`SUBMITTER_TEST_FUZZ_EXAMPLES`, default 15) so
that the run fits CI's time; raise it locally to search harder. Failures are shrunk by
Hypothesis and printed as a curl command that reproduces them.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.conftest import Stack

EXAMPLES = int(os.environ.get("SUBMITTER_TEST_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _schema_app() -> Any:
    """The app whose OpenAPI document is read at collection. It never connects anywhere:
    the cases are sent to each backend's own app."""
    from submitter.api.app import create_app
    from submitter.config import load_settings

    return create_app(load_settings(database_url="postgresql://schema-only@127.0.0.1:9/none"))


schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI failures reproduce
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_responses_match_the_schema(case: Any, stack: Stack) -> None:
    for headers in (stack.headers("admin"), stack.headers("viewer"), {}):
        case.call_and_validate(app=stack.api.app, headers=headers, checks=CHECKS)
