"""The OpenAPI schema: served, valid, complete, and no generated request makes the API fail."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

CONTRACT_OPERATIONS = {
    ("post", "/api/auth/token"),
    ("post", "/api/user/status"),
    ("get", "/api/users/status"),
    ("post", "/api/messages/read"),
    ("post", "/api/conversations/{id}/typing"),
    ("get", "/api/connections/info"),
    ("get", "/api/connections/stats"),
    ("get", "/api/conversations"),
    ("post", "/api/conversations"),
    ("get", "/api/conversations/{id}"),
    ("get", "/api/conversations/{id}/messages"),
    ("post", "/api/conversations/{id}/messages"),
}


@pytest.fixture
def spec(db: None) -> dict[str, Any]:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return dict(json.loads(response.content))


def test_the_schema_names_every_contract_operation_and_its_errors(spec) -> None:
    assert spec["openapi"].startswith("3.")
    operations = {
        (method, path): op for path, item in spec["paths"].items() for method, op in item.items()
    }
    assert set(operations) >= CONTRACT_OPERATIONS
    for key in CONTRACT_OPERATIONS - {("post", "/api/auth/token")}:
        assert "401" in operations[key]["responses"], key
    for key in {k for k in CONTRACT_OPERATIONS if "{id}" in k[1]}:
        assert {"403", "404"} <= set(operations[key]["responses"]), key
    for method, path in CONTRACT_OPERATIONS:
        if method == "post":
            assert "400" in operations[(method, path)]["responses"], path
    assert "403" in operations[("get", "/api/connections/stats")]["responses"]


def test_swagger_ui_is_served_from_local_files(db: None) -> None:
    page = APIClient().get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger-ui" in page.content
    assert b"cdn.jsdelivr.net" not in page.content


def test_the_schema_validates_without_warnings(tmp_path) -> None:
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))


def _encode_body(body: Any, media_type: str) -> dict[str, Any]:
    if isinstance(body, bytes):
        return {"data": body, "content_type": media_type}
    if media_type == "application/x-www-form-urlencoded" and isinstance(body, dict):
        return {"data": urlencode(body, doseq=True), "content_type": media_type}
    # JSON, and multipart sent as JSON: the parsers decide by the content type we name.
    return {"data": json.dumps(body, default=str), "content_type": "application/json"}


def test_no_generated_request_gets_a_500(spec, client_for, alice, alice_bob) -> None:
    """Valid and invalid requests from the schema, as a participant; a 5xx is a bug.

    Bounded: a few hundred examples, well under a minute.
    """
    schema = schemathesis.openapi.from_dict(spec)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, schemathesis.core.result.Ok), result
        operations.append(result.ok())
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in operations
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    ]
    client = client_for(alice)
    failures: list[str] = []
    started = time.monotonic()

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), real_conversation=st.booleans())
    def run(case: Any, real_conversation: bool) -> None:
        if real_conversation and "id" in (case.path_parameters or {}):
            case.path_parameters["id"] = str(alice_bob.id)
        path = case.formatted_path
        if case.query:
            path += "?" + urlencode(case.query, doseq=True)
        kwargs: dict[str, Any] = {}
        if not isinstance(case.body, schemathesis.core.NotSet):
            kwargs = _encode_body(case.body, case.media_type or "application/json")
        response = client.generic(case.method, path, **kwargs)
        if response.status_code >= 500:
            failures.append(f"{case.method} {path} {case.body!r} -> {response.status_code}")

    run()
    assert failures == []
    assert time.monotonic() - started < 60
