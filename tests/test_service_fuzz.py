"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): whatever
it sends, the server answers without a 5xx, with a documented status, the declared content type
and a body matching the schema (problem details for every error)."""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")

from hypothesis import HealthCheck, settings

from tests.service_util import Server, serving


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with serving(tmp_path_factory.mktemp("fuzz"), workers=1) as s:
        s.at("owner", "account", "create", "alice")
        yield s


@pytest.fixture(scope="module")
def api_schema(api: Server) -> Any:
    return schemathesis.openapi.from_url(api.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


C = schemathesis.checks
#: positive_data_acceptance is left out on purpose: a schema-valid body (any base64 string) is not
#: a valid signed document, and the server rightly refuses it with 400/401/403.
CHECKS = [C.not_a_server_error, C.status_code_conformance, C.content_type_conformance,
          C.response_schema_conformance, C.response_headers_conformance, C.negative_data_rejection]


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_fuzz(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
