"""Generated requests to every operation of the console's OpenAPI document (as schemathesis
would): whatever the body, path and query, the answer is never a 5xx, is JSON with an error
code and message when it is an error, and has a status the document lists."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.server.console.openapi import openapi_document
from tests.server.apiserver import ApiServer
from tests.server.console.client import ConsoleClient

PASSWORD = "Corr3ct-Horse-Battery"
# Signing out would end the client's sign-in for the examples after it: tested elsewhere.
SKIPPED = {("/api/logout", "post")}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the JSON Schema subset the console's document uses (hypothesis-jsonschema
    does not work with this hypothesis release)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 40))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        extra = schema.get("additionalProperties")
        fixed = st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
        if isinstance(extra, dict):
            return fixed | st.dictionaries(st.text(max_size=10), from_schema(extra), max_size=3)
        return fixed
    return JSON


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    doc = openapi_document(audit=True)
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if (path, method) not in SKIPPED
    ]


@pytest.fixture(scope="module")
def client(api: ApiServer) -> ConsoleClient:
    for op, body in (
        ("CreateUser", {"UserName": "fuzz"}),
        ("SetPassword", {"UserName": "fuzz", "Password": PASSWORD}),
        (
            "AttachUserPolicy",
            {"UserName": "fuzz", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        ),
    ):
        assert api.post(op, body, service="Hatchway").status == 200
    client = ConsoleClient(api.host, api.port)
    assert client.sign_in("fuzz", PASSWORD).status == 200
    return client


def _request(draw: st.DrawFn, path: str, op: dict[str, Any]) -> tuple[str, bytes | None]:
    url = path
    query: dict[str, str] = {}
    for parameter in op.get("parameters", []):
        value = draw(from_schema(parameter["schema"]) | st.text(max_size=30))
        if parameter["in"] == "path":
            url = url.replace("{" + parameter["name"] + "}", quote(str(value), safe="") or "x")
        elif draw(st.booleans()):
            query[parameter["name"]] = str(value)
    if query:
        url += "?" + urlencode(query)
    body = None
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        value = draw(from_schema(schema) | JSON)
        body = json.dumps(value).encode()
    return url, body


@pytest.mark.parametrize(("path", "method", "op"), _operations(), ids=lambda v: str(v)[:40])
def test_no_generated_request_gets_a_server_error(
    client: ConsoleClient, api: ApiServer, path: str, method: str, op: dict[str, Any]
) -> None:
    if path == "/api/audit" and "Hatchway.LookupEvents" not in api.server.api.operations:
        pytest.skip("this server has no audit trail")
    documented = {int(status) for status in op["responses"]} | {401, 403, 404, 413, 415}

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        url, body = data.draw(st.composite(lambda draw: _request(draw, path, op))())
        reply = client.request(method.upper(), url, raw=body)
        assert reply.status < 500, (url, body, reply.raw[:300])
        if reply.status == 101 or reply.status < 300:
            return
        assert reply.status in documented | {400}, (url, reply.status, reply.raw[:300])
        error = reply.body
        assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str)

    check()
    # Whatever was sent, the client is still signed in (nothing generated signs it out).
    assert client.request("GET", "/api/me").status == 200


@pytest.mark.parametrize(
    "path", ["/api/sessions/%0A%7B", "/api/sessions/%0A%7B/terminate", "/api/%0A"]
)
def test_a_path_no_route_matches_gets_a_json_error(client: ConsoleClient, path: str) -> None:
    """A newline or a brace in a path segment matches no route (hypothesis found it): the
    answer is still the API's JSON error, not aiohttp's plain-text 404."""
    reply = client.request("GET", path)
    assert reply.status == 404
    assert reply.body["error"] == "NotFound" and path.split("%")[0] in reply.body["message"]
