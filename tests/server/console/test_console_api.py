"""The console's API over HTTP against the real app (in this process): sign-in, cookies,
CSRF, errors, and every call authorized by the same policies as the SigV4 API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from hatchway.server.console.openapi import openapi_document
from tests.server.apiserver import ApiServer
from tests.server.console.client import ConsoleClient

PASSWORD = "Corr3ct-Horse-Battery"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"


def _user(api: ApiServer, name: str, policy: str) -> None:
    for op, body in (
        ("CreateUser", {"UserName": name}),
        ("SetPassword", {"UserName": name, "Password": PASSWORD}),
        ("AttachUserPolicy", {"UserName": name, "PolicyArn": policy}),
    ):
        answer = api.post(op, body, service="Hatchway")
        assert answer.status == 200, answer.body


@pytest.fixture(scope="module")
def users(api: ApiServer) -> ApiServer:
    _user(api, "viewer", READ_ONLY)
    _user(api, "operator", ADMIN)
    return api


@pytest.fixture
def viewer(users: ApiServer) -> Iterator[ConsoleClient]:
    client = ConsoleClient(users.host, users.port)
    assert client.sign_in("viewer", PASSWORD).status == 200
    yield client


@pytest.fixture
def operator(users: ApiServer) -> Iterator[ConsoleClient]:
    client = ConsoleClient(users.host, users.port)
    assert client.sign_in("operator", PASSWORD).status == 200
    yield client


def test_every_api_route_is_in_the_openapi_document_and_back(api: ApiServer) -> None:
    served = set()
    for route in api.server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/") and "{tail" not in path and route.method != "HEAD":
            served.add((path, route.method.lower()))
    doc = openapi_document(audit="Hatchway.LookupEvents" in api.server.api.operations)
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    documented.add(("/api/openapi.json", "get"))
    assert served == documented
    client = ConsoleClient(api.host, api.port)
    assert client.request("GET", "/api/openapi.json").body == doc


def test_sign_in_sets_httponly_strict_cookies_and_signs_out(users: ApiServer) -> None:
    client = ConsoleClient(users.host, users.port)
    assert client.request("GET", "/api/me").status == 401
    reply = client.sign_in("viewer", PASSWORD)
    assert reply.status == 200 and reply.body == {"username": "viewer"}
    session, csrf = (
        next(h for h in client.set_cookie_headers if h.startswith(name + "="))
        for name in ("hatchway-session", "hatchway-csrf")
    )
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    assert "HttpOnly" not in csrf and "SameSite=Strict" in csrf
    assert "Secure" not in session  # this server has no TLS; the e2e tests check Secure
    me = client.request("GET", "/api/me").body
    assert me["username"] == "viewer" and me["mfaEnabled"] is False
    assert client.request("POST", "/api/logout").status == 200
    assert client.request("GET", "/api/me").status == 401


def test_wrong_password_is_refused_with_one_message(users: ApiServer) -> None:
    client = ConsoleClient(users.host, users.port)
    wrong = client.sign_in("viewer", "not the password")
    unknown = client.sign_in("nobody-at-all", PASSWORD)
    assert (wrong.status, wrong.error) == (401, "SignInFailed")
    assert unknown.body == wrong.body
    assert not client.cookies


def test_state_changing_requests_need_the_csrf_token(viewer: ConsoleClient) -> None:
    for csrf in ("", "x" * 43):
        refused = viewer.request("POST", "/api/logout", csrf=csrf)
        assert (refused.status, refused.error) == (403, "CsrfRefused")
    form = viewer.request(
        "POST", "/api/logout", raw=b"a=b", content_type="application/x-www-form-urlencoded"
    )
    assert (form.status, form.error) == (415, "UnsupportedMediaType")
    assert viewer.request("GET", "/api/me").status == 200  # still signed in
    assert viewer.request("POST", "/api/logout").status == 200


def test_a_user_without_start_session_is_told_and_refused(viewer: ConsoleClient) -> None:
    me = viewer.request("GET", "/api/me").body
    assert me["permissions"]["startSession"] is False
    assert me["permissions"]["describeNodes"] is True
    assert me["permissions"]["terminateSession"] is False
    refused = viewer.request("POST", "/api/sessions", {"target": "mi-0123456789abcdef0"})
    assert (refused.status, refused.error) == (403, "AccessDeniedException")
    assert "ssm:StartSession" in refused.body["message"]
    terminate = viewer.request("POST", "/api/sessions/viewer-0123456789abcdef0/terminate")
    assert terminate.status == 403


def test_an_allowed_user_reaches_the_service_which_answers_precisely(
    operator: ConsoleClient,
) -> None:
    assert operator.request("GET", "/api/me").body["permissions"]["startSession"] is True
    answer = operator.request("POST", "/api/sessions", {"target": "mi-0123456789abcdef0"})
    assert answer.status == 400 and answer.error == "TargetNotConnected"
    assert operator.request("GET", "/api/nodes").body == {"Nodes": []}
    sessions = operator.request("GET", "/api/sessions?state=History")
    assert sessions.status == 200 and sessions.body["Sessions"] == []
    missing = operator.request("GET", "/api/sessions/operator-0123456789abcdef0")
    assert missing.status == 404
    no_terminal = operator.request("GET", "/api/sessions/operator-0123456789abcdef0/terminal")
    assert no_terminal.status == 404


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "error"),
    [
        ("POST", "/api/sessions", b"{not json", 400, "ValidationException"),
        ("POST", "/api/sessions", b"[1, 2]", 400, "ValidationException"),
        ("POST", "/api/sessions", b'{"target": 5}', 400, "ValidationException"),
        (
            "POST",
            "/api/sessions",
            b"{" + b" " * 70000 + b"}",
            413,
            "RequestEntityTooLargeException",
        ),
        ("GET", "/api/sessions?state=Later", None, 400, "ValidationException"),
        ("GET", "/api/sessions?after=yesterday", None, 400, "ValidationException"),
        ("GET", "/api/nothing-here", None, 404, "NotFound"),
    ],
)
def test_bad_requests_get_a_clear_error(
    operator: ConsoleClient, method: str, path: str, raw: bytes | None, status: int, error: str
) -> None:
    reply = operator.request(method, path, raw=raw)
    assert (reply.status, reply.error) == (status, error), reply.raw[:300]
    assert reply.body["message"]


def test_the_page_and_its_files_are_served_with_a_strict_policy(api: ApiServer) -> None:
    client = ConsoleClient(api.host, api.port)
    page = client.request("GET", "/")
    assert page.status == 200 and b'<label for="username">Username</label>' in page.raw
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for path in ("/static/app.js", "/static/vendor/xterm.mjs", "/static/vendor/xterm.css"):
        assert client.request("GET", path).status == 200, path
    assert client.request("GET", "/static/../pyproject.toml").status in (403, 404)
    versions = json.loads(client.request("GET", "/static/vendor/VERSIONS.json").raw)
    assert versions["@xterm/xterm"] and versions["asciinema-player"]


def test_sign_ins_and_console_calls_are_in_the_audit_trail(users: ApiServer) -> None:
    client = ConsoleClient(users.host, users.port)
    assert client.sign_in("viewer", "wrong password!").status == 401
    assert client.sign_in("viewer", PASSWORD).status == 200
    refused = client.request("POST", "/api/sessions", {"target": "mi-0123456789abcdef1"})
    assert refused.status == 403
    operator = ConsoleClient(users.host, users.port)
    assert operator.sign_in("operator", PASSWORD).status == 200
    audit = operator.request("GET", "/api/audit?user=viewer")
    assert audit.status == 200, audit.raw
    events = audit.body["Events"]
    names = [(e["EventName"], e["Outcome"]) for e in events]
    assert ("ConsoleSignIn", "SignInFailed") in names
    assert ("ConsoleSignIn", "Success") in names
    denied = next(e for e in events if e["EventName"] == "StartSession")
    assert denied["Outcome"] == "AccessDeniedException" and denied["Decision"] == "implicitDeny"
    assert any(r["ResourceName"] == "mi-0123456789abcdef1" for r in denied["Resources"])
    # Reading the trail is itself an action the policies decide.
    assert client.request("GET", "/api/audit").status == 403
    assert client.request("GET", "/api/me").body["permissions"]["lookupEvents"] is False
    assert operator.request("GET", "/api/me").body["permissions"]["lookupEvents"] is True


def test_totp_enrolment_over_the_api_then_the_code_is_required(users: ApiServer) -> None:
    import base64

    from cryptography.hazmat.primitives.hashes import SHA1
    from cryptography.hazmat.primitives.twofactor.totp import TOTP

    _user(users, "totp-user", READ_ONLY)
    client = ConsoleClient(users.host, users.port)
    assert client.sign_in("totp-user", PASSWORD).status == 200
    enrolled = client.request("POST", "/api/mfa/enrol").body
    secret = base64.b32decode(enrolled["secret"] + "=" * (-len(enrolled["secret"]) % 8))
    totp = TOTP(secret, 6, SHA1(), 30)
    wrong = client.request("POST", "/api/mfa/confirm", {"code": "12345x"})
    assert (wrong.status, wrong.error) == (401, "SignInFailed")
    now = time.time()
    confirmed = client.request("POST", "/api/mfa/confirm", {"code": totp.generate(now).decode()})
    assert confirmed.status == 200 and confirmed.body == {"mfaEnabled": True}
    assert client.request("GET", "/api/me").body["mfaEnabled"] is True
    again = client.request("POST", "/api/mfa/enrol")
    assert (again.status, again.error) == (409, "ConflictException")

    other = ConsoleClient(users.host, users.port)
    needs = other.sign_in("totp-user", PASSWORD)
    assert (needs.status, needs.error) == (401, "MfaRequired") and not other.cookies
    # The code of the next step (the one used to confirm is spent).
    fresh = totp.generate(now + 30).decode()
    assert other.sign_in("totp-user", PASSWORD, fresh).status == 200
    assert other.request("GET", "/api/me").status == 200
