"""Server-side SigV4 verification against botocore/boto3, our own signer and agent RSA keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials as BotocoreCredentials
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

from hatchway.auth.agentkey import generate_private_key, pss_signer, public_key_b64
from hatchway.auth.sigv4 import Credentials, host_from_url, sign_request, sign_request_rsa
from hatchway.auth.verify import (
    SIGNATURE_MISMATCH_MESSAGE,
    ParsedAuthorization,
    check_request_time,
    check_scope,
    parse_authorization,
    verify_hmac_signature,
    verify_rsa_signature,
)
from hatchway.errors import AuthError, CorruptData

CREDS = Credentials("HWAKABCDEFGHIJ012345", "s3cr3t/Secret+Key0123456789abcdefghijklm")
NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
URL = "https://127.0.0.1:8443/"
JSON_HEADERS = {
    "X-Amz-Target": "AmazonSSM.StartSession",
    "Content-Type": "application/x-amz-json-1.1",
}
BODY = b'{"Target": "mi-0123456789abcdef0"}'
NODE_ID = "mi-0123456789abcdef0"


@pytest.fixture(scope="module")
def agent_key() -> rsa.RSAPrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return generate_private_key()


def full_check(
    method: str,
    url: str,
    headers: Any,
    body: bytes,
    secret: str = CREDS.secret_access_key,
    *,
    now: datetime = NOW,
    region: str = "local",
    service: str = "ssm",
) -> ParsedAuthorization:
    parsed = parse_authorization(headers)
    check_request_time(parsed, now)
    check_scope(parsed, region=region, service=service)
    verify_hmac_signature(method, url, headers, body, parsed, secret)
    return parsed


def signed(
    method: str = "POST",
    url: str = URL,
    headers: dict[str, str] | None = None,
    body: bytes = BODY,
    *,
    now: datetime = NOW,
    region: str = "local",
    service: str = "ssm",
) -> dict[str, str]:
    return sign_request(
        method,
        url,
        dict(JSON_HEADERS if headers is None else headers),
        body,
        credentials=CREDS,
        region=region,
        service=service,
        now=now,
    )


def expect_auth_error(code: str, message: str | None = None) -> Any:
    class _Checker:
        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            assert isinstance(exc, AuthError), f"expected AuthError, got {exc!r}"
            assert exc.code == code, (exc.code, exc.message)
            if message is not None:
                assert exc.message == message
            return True

    return _Checker()


# ---- requests signed by botocore / boto3 verify ----------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@pytest.fixture
def captured_boto3() -> Iterator[tuple[Any, list[Any]]]:
    """A boto3 SSM client whose requests are captured instead of sent."""
    requests: list[Any] = []
    client = boto3.client(
        "ssm",
        endpoint_url="https://127.0.0.1:8443",
        region_name="local",
        aws_access_key_id=CREDS.access_key_id,
        aws_secret_access_key=CREDS.secret_access_key,
    )

    def capture(request: Any, **_: Any) -> AWSResponse:
        requests.append(request)
        return AWSResponse(
            request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(b"{}")
        )

    client.meta.events.register("before-send.ssm.*", capture)
    yield client, requests
    client.close()


def wire_headers(request: Any) -> CIMultiDict[str]:
    """Headers as a server receives them: text, case-insensitive, repeats kept, and the Host
    header that the HTTP client (urllib3) adds after botocore has signed."""
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value.decode("latin-1") if isinstance(value, bytes) else value)
        for name, value in request.headers.items()
    )
    if "Host" not in headers:
        headers["Host"] = host_from_url(request.url)
    return headers


def test_boto3_requests_verify(captured_boto3: tuple[Any, list[Any]]) -> None:
    client, requests = captured_boto3
    client.start_session(Target=NODE_ID, Reason="debugging  two  spaces")
    client.describe_sessions(State="Active")
    assert len(requests) == 2
    for request in requests:
        headers = wire_headers(request)
        headers["User-Agent"] = "changed by a proxy"  # not signed by botocore
        body = request.body if isinstance(request.body, bytes) else request.body.encode()
        parsed = full_check(request.method, request.url, headers, body, now=datetime.now(UTC))
        assert parsed.access_key_id == CREDS.access_key_id
        assert parsed.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")


def test_boto3_wrong_secret_fails(captured_boto3: tuple[Any, list[Any]]) -> None:
    client, requests = captured_boto3
    client.terminate_session(SessionId="alice-0123")
    (request,) = requests
    with expect_auth_error("InvalidSignatureException", SIGNATURE_MISMATCH_MESSAGE):
        full_check(
            request.method,
            request.url,
            wire_headers(request),
            request.body,
            "wrong-secret",
            now=datetime.now(UTC),
        )


def _botocore_sign(request: AWSRequest, *, service: str = "ssm", now: datetime = NOW) -> None:
    signer = SigV4Auth(
        BotocoreCredentials(CREDS.access_key_id, CREDS.secret_access_key), service, "local"
    )
    naive_utc = now.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        signer.add_auth(request)


def test_botocore_get_with_query_and_repeated_header_verifies() -> None:
    url = "https://hatchway.example/v1/data-channel/alice-0123?role=publish_subscribe&a=%2F"
    request = AWSRequest(method="GET", url=url, data=b"")
    request.headers["X-Amz-Meta"] = "one"
    request.headers["X-Amz-Meta"] = "two  words"  # HTTPHeaders appends: a repeated header
    _botocore_sign(request, service="ssmmessages")
    headers = wire_headers(request)
    assert headers.getall("X-Amz-Meta") == ["one", "two  words"]
    parsed = full_check("GET", url, headers, b"", service="ssmmessages")
    assert "x-amz-meta" in parsed.signed_headers
    headers.popall("X-Amz-Meta")
    headers.add("X-Amz-Meta", "one")
    with expect_auth_error("InvalidSignatureException"):
        full_check("GET", url, headers, b"", service="ssmmessages")


# ---- requests signed by our standard-library signer verify -----------------------------------


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        ("POST", URL, JSON_HEADERS, BODY),
        ("POST", "http://localhost:8080/", JSON_HEADERS, b"{}"),
        ("GET", "https://h.example/v1/control-channel/mi-1?role=subscribe&stream=input", {}, b""),
        ("GET", "https://h.example:9443/a%20b/c~d/:@!$'()*+,;=", {}, b""),
    ],
)
def test_stdlib_signed_requests_verify(
    method: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    sent = signed(method, url, headers, body)
    full_check(method, url, sent, body)
    # Servers see header names in any case; the path alone (no scheme/host) is enough.
    lower = {name.lower(): value for name, value in sent.items()}
    path_only = url.split("/", 3)[3] if url.count("/") >= 3 else ""
    full_check(method, "/" + path_only, lower, body)


def _upper_signature(headers: dict[str, str]) -> str:
    head, _, signature = headers["Authorization"].partition("Signature=")
    return f"{head}Signature={signature.upper()}"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m, u, h, b: (m, u, h, b + b" "), id="body"),
        pytest.param(lambda m, u, h, b: ("PUT", u, h, b), id="method"),
        pytest.param(lambda m, u, h, b: (m, u + "x", h, b), id="path"),
        pytest.param(lambda m, u, h, b: (m, u + "?a=1", h, b), id="query"),
        pytest.param(
            lambda m, u, h, b: (m, u, {**h, "X-Amz-Target": "AmazonSSM.TerminateSession"}, b),
            id="target-header",
        ),
        pytest.param(lambda m, u, h, b: (m, u, {**h, "Host": "evil.example"}, b), id="host"),
        pytest.param(
            lambda m, u, h, b: (m, u, {**h, "X-Amz-Date": "20260101T000901Z"}, b), id="date"
        ),
        pytest.param(
            lambda m, u, h, b: (m, u, {**h, "Authorization": _upper_signature(h)}, b),
            id="signature-case",
        ),
    ],
)
def test_tampered_requests_fail(tamper: Any) -> None:
    sent = signed()
    method, url, headers, body = tamper("POST", URL, sent, BODY)
    with pytest.raises(AuthError) as info:
        full_check(method, url, headers, body)
    assert info.value.code in ("InvalidSignatureException", "IncompleteSignatureException")


def test_wrong_secret_fails() -> None:
    with expect_auth_error("InvalidSignatureException", SIGNATURE_MISMATCH_MESSAGE):
        full_check("POST", URL, signed(), BODY, "not-the-secret")


def test_missing_signed_header_fails() -> None:
    sent = signed()
    del sent["X-Amz-Target"]
    with expect_auth_error("InvalidSignatureException"):
        full_check("POST", URL, sent, BODY)


def test_content_sha256_must_be_the_real_hash() -> None:
    real = signed(
        headers={**JSON_HEADERS, "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}
    )
    full_check("POST", URL, real, BODY)
    unsigned = signed(headers={**JSON_HEADERS, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    with expect_auth_error("InvalidSignatureException"):
        full_check("POST", URL, unsigned, b"anything at all")


def test_unsigned_extra_headers_are_ignored() -> None:
    sent = signed()
    sent["User-Agent"] = "aws-cli/2"
    sent["Content-Length"] = str(len(BODY))
    full_check("POST", URL, sent, BODY)


# ---- parse_authorization ----------------------------------------------------------------------


def test_parse_fields() -> None:
    parsed = parse_authorization(signed())
    assert parsed.access_key_id == CREDS.access_key_id
    assert (parsed.date, parsed.region, parsed.service) == ("20260101", "local", "ssm")
    assert parsed.signed_headers == ("content-type", "host", "x-amz-date", "x-amz-target")
    assert parsed.amz_date == "20260101T001000Z"
    assert parsed.timestamp == NOW
    assert len(parsed.signature) == 64


def test_missing_authorization() -> None:
    with expect_auth_error("MissingAuthenticationTokenException", "Missing Authentication Token"):
        parse_authorization({"X-Amz-Date": "20260101T001000Z"})
    with expect_auth_error("MissingAuthenticationTokenException"):
        parse_authorization({"Authorization": "  "})


GOOD_SCOPE = "Credential=HWAK1/20260101/local/ssm/aws4_request"


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        ("Bearer abc", "Unsupported Authorization algorithm"),
        ("AWS4-HMAC-SHA256", "requires 'Credential' parameter"),
        (f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host", "requires 'Signature' parameter"),
        (f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, Signature=ab", "requires 'SignedHeaders' parameter"),
        (
            f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host, Signature=ab, Signature=cd",
            "more than one 'Signature'",
        ),
        (f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host, Signature", "'Name=Value'"),
        (
            f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host, Signature=ab, Extra=1",
            "unknown parameter(s): Extra",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=HWAK1/20260101/local/ssm, "
            "SignedHeaders=host, Signature=ab",
            "Credential must have the form",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=HWAK1/20260101/local/ssm/aws5_request, "
            "SignedHeaders=host, Signature=ab",
            "valid terminator: 'aws4_request', not 'aws5_request'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=HWAK1/2026-01-01/local/ssm/aws4_request, "
            "SignedHeaders=host, Signature=ab",
            "scope date must be YYYYMMDD",
        ),
        (
            f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=x-amz-date, Signature=ab",
            "'Host' must be a 'SignedHeader'",
        ),
        (
            f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=Host;X-Amz-Date, Signature=ab",
            "lower-case header names",
        ),
        (f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host, Signature=a%b", "hexadecimal"),
    ],
)
def test_malformed_authorization(authorization: str, fragment: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_authorization({"Authorization": authorization, "X-Amz-Date": "20260101T001000Z"})
    assert info.value.code == "IncompleteSignatureException"
    assert fragment in info.value.message


def test_no_spaces_after_commas_is_accepted() -> None:
    parsed = parse_authorization(
        {
            "authorization": f"AWS4-HMAC-SHA256 {GOOD_SCOPE},SignedHeaders=host,Signature=ab",
            "x-amz-date": "20260101T001000Z",
        }
    )
    assert parsed.signed_headers == ("host",) and parsed.signature == "ab"


@pytest.mark.parametrize("amz_date", [None, "", "2026-01-01T00:10:00Z", "20261301T001000Z"])
def test_bad_or_missing_amz_date(amz_date: str | None) -> None:
    headers = {"Authorization": f"AWS4-HMAC-SHA256 {GOOD_SCOPE}, SignedHeaders=host, Signature=ab"}
    if amz_date is not None:
        headers["X-Amz-Date"] = amz_date
    with expect_auth_error("IncompleteSignatureException"):
        parse_authorization(headers)


# ---- time and scope ---------------------------------------------------------------------------


def _parsed_at(amz_date: str, scope_date: str | None = None) -> ParsedAuthorization:
    return ParsedAuthorization(
        access_key_id="HWAK1",
        date=scope_date or amz_date[:8],
        region="local",
        service="ssm",
        signed_headers=("host",),
        signature="ab",
        amz_date=amz_date,
    )


def test_expired_signature_message() -> None:
    with expect_auth_error(
        "InvalidSignatureException",
        "Signature expired: 20260101T000000Z is now earlier than 20260101T000500Z "
        "(20260101T001000Z - 5 min.)",
    ):
        check_request_time(_parsed_at("20260101T000000Z"), NOW)


def test_future_signature_message() -> None:
    with expect_auth_error(
        "InvalidSignatureException",
        "Signature not yet current: 20260101T002000Z is still later than 20260101T001500Z "
        "(20260101T001000Z + 5 min.)",
    ):
        check_request_time(_parsed_at("20260101T002000Z"), NOW)


def test_skew_limits_are_inclusive_and_configurable() -> None:
    check_request_time(_parsed_at("20260101T000500Z"), NOW)
    check_request_time(_parsed_at("20260101T001500Z"), NOW)
    check_request_time(_parsed_at("20260101T001000Z"), NOW.replace(tzinfo=None))
    with expect_auth_error("InvalidSignatureException"):
        check_request_time(_parsed_at("20260101T000959Z"), NOW, max_skew=timedelta(seconds=0))
    with pytest.raises(AuthError, match=r"\(20260101T001000Z - 30 s\.\)"):
        check_request_time(_parsed_at("20260101T000000Z"), NOW, max_skew=timedelta(seconds=30))


def test_scope_date_must_match_amz_date() -> None:
    with expect_auth_error(
        "InvalidSignatureException",
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        "HTTP: '20251231' != '20260101', from '20260101T001000Z'.",
    ):
        check_request_time(_parsed_at("20260101T001000Z", "20251231"), NOW)


def test_stale_request_signed_by_us_is_rejected() -> None:
    old = signed(now=NOW - timedelta(minutes=6))
    with expect_auth_error("InvalidSignatureException"):
        full_check("POST", URL, old, BODY)


def test_check_scope() -> None:
    parsed = parse_authorization(signed(region="us-east-1"))
    with expect_auth_error(
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'us-east-1'.",
    ):
        check_scope(parsed, region="local", service="ssm")
    parsed = parse_authorization(signed(service="ssmmessages"))
    with expect_auth_error(
        "InvalidSignatureException", "Credential should be scoped to correct service: 'ssm'."
    ):
        check_scope(parsed, region="local", service="ssm")
    check_scope(parsed, region="local", service="ssmmessages")


# ---- agents: RSA-PSS ---------------------------------------------------------------------------


def rsa_signed(
    key: rsa.RSAPrivateKey,
    method: str = "POST",
    url: str = URL,
    headers: dict[str, str] | None = None,
    body: bytes = BODY,
    service: str = "ssm",
) -> dict[str, str]:
    return sign_request_rsa(
        method,
        url,
        dict(JSON_HEADERS if headers is None else headers),
        body,
        node_id=NODE_ID,
        private_key_sign=pss_signer(key),
        region="local",
        service=service,
        now=NOW,
    )


def rsa_check(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    public_key: str,
    service: str = "ssm",
) -> None:
    parsed = parse_authorization(headers)
    check_request_time(parsed, NOW)
    check_scope(parsed, region="local", service=service)
    assert parsed.access_key_id == NODE_ID
    verify_rsa_signature(method, url, headers, body, parsed, public_key)


def test_agent_signature_verifies(agent_key: rsa.RSAPrivateKey) -> None:
    rsa_check("POST", URL, rsa_signed(agent_key), BODY, public_key_b64(agent_key))
    ws = "wss://h.example/v1/control-channel/mi-0123456789abcdef0?role=subscribe&stream=input"
    sent = rsa_signed(agent_key, "GET", ws, {}, b"", service="ssmmessages")
    sent["Upgrade"] = "websocket"
    sent["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    rsa_check("GET", ws, sent, b"", public_key_b64(agent_key), service="ssmmessages")


def test_agent_signature_tampered_fails(
    agent_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    public = public_key_b64(agent_key)
    sent = rsa_signed(agent_key)
    with expect_auth_error("InvalidSignatureException", SIGNATURE_MISMATCH_MESSAGE):
        rsa_check("POST", URL, sent, BODY + b" ", public)
    with expect_auth_error("InvalidSignatureException"):
        rsa_check("POST", URL, {**sent, "X-Amz-Target": "AmazonSSM.Other"}, BODY, public)
    with expect_auth_error("InvalidSignatureException"):
        rsa_check("POST", URL, rsa_signed(other_key), BODY, public)
    # An HMAC (hex) signature is no RSA signature.
    hmac_signed = signed()
    hmac_signed["Authorization"] = hmac_signed["Authorization"].replace(
        CREDS.access_key_id, NODE_ID
    )
    with expect_auth_error("InvalidSignatureException"):
        rsa_check("POST", URL, hmac_signed, BODY, public)


def test_agent_signature_not_base64(agent_key: rsa.RSAPrivateKey) -> None:
    sent = rsa_signed(agent_key)
    sent["Authorization"] = sent["Authorization"].split("Signature=")[0] + "Signature=abc"
    with expect_auth_error("InvalidSignatureException"):
        rsa_check("POST", URL, sent, BODY, public_key_b64(agent_key))


def test_unusable_stored_key_is_a_server_fault(agent_key: rsa.RSAPrivateKey) -> None:
    # A registered key that no longer loads is corrupt data on our side: a logged 500 at the
    # edge, never a 400 that tells the caller about it.
    with pytest.raises(CorruptData) as info:
        rsa_check("POST", URL, rsa_signed(agent_key), BODY, "bm90IGEga2V5")
    assert info.value.status == 500


def test_body_of_boto3_json_is_what_we_hash(captured_boto3: tuple[Any, list[Any]]) -> None:
    """Guard: the JSON body boto3 signs is the bytes it sends (no re-serialisation)."""
    client, requests = captured_boto3
    client.start_session(Target=NODE_ID)
    (request,) = requests
    assert json.loads(request.body) == {"Target": NODE_ID}
