"""The standard-library SigV4 signer must agree with botocore's byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

import hatchway
from hatchway.auth.sigv4 import (
    Credentials,
    canonical_request,
    host_from_url,
    sign_request,
    sign_request_rsa,
    signing_key,
    string_to_sign,
)

CREDS = Credentials("HWAKABCDEFGHIJ012345", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
JSON_TYPE = "application/x-amz-json-1.1"


def botocore_headers(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    region: str = "local",
    service: str = "ssm",
    now: datetime = NOW,
) -> dict[str, str]:
    """Sign with botocore's own SigV4Auth.add_auth at a frozen time."""
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    signer = SigV4Auth(
        BotocoreCredentials(CREDS.access_key_id, CREDS.secret_access_key), service, region
    )
    naive_utc = now.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        signer.add_auth(request)
    return dict(request.headers.items())


def ours(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    region: str = "local",
    service: str = "ssm",
    now: datetime = NOW,
) -> dict[str, str]:
    return sign_request(
        method, url, headers, body, credentials=CREDS, region=region, service=service, now=now
    )


CASES = [
    pytest.param(
        "POST",
        "https://127.0.0.1:8443/",
        {"X-Amz-Target": "AmazonSSM.StartSession", "Content-Type": JSON_TYPE},
        b'{"Target": "mi-0123456789abcdef0", "Reason": "a  b"}',
        id="json-post-target",
    ),
    pytest.param(
        "POST",
        "http://localhost:8080/",
        {"X-Amz-Target": "AmazonSSM.DescribeSessions", "Content-Type": JSON_TYPE},
        b"{}",
        id="json-post-http-nondefault-port",
    ),
    pytest.param(
        "GET",
        "https://hatchway.example/v1/data-channel/alice-0a1b?role=publish_subscribe&b=2&a=1&a=0",
        {},
        b"",
        id="get-query",
    ),
    pytest.param(
        "GET",
        "https://hatchway.example:443/a%20b/./c/../d//e~f/%41:@!$&'()*+,;=/ü",
        {},
        b"",
        id="special-path-default-port",
    ),
    pytest.param(
        "GET",
        "https://hatchway.example/dir/",
        {"Content-Type": "text/plain;   charset=utf-8  "},
        b"",
        id="trailing-slash-header-spaces",
    ),
    pytest.param("GET", "https://hatchway.example", {}, b"", id="empty-path"),
    pytest.param(
        "PUT",
        "https://[::1]:9443/x?empty=&flag",
        {"X-Amz-Target": "AmazonSSM.X", "Content-Type": JSON_TYPE},
        b"\x00\xff binary",
        id="ipv6-port-empty-query-values",
    ),
    pytest.param(
        "POST",
        "https://Hatchway.Example:8443/",
        {"Host": "hatchway.example:8443", "X-Amz-Target": "AmazonSSM.X"},
        b"{}",
        id="explicit-host",
    ),
]


@pytest.mark.parametrize(("method", "url", "headers", "body"), CASES)
def test_authorization_matches_botocore(
    method: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    expected = botocore_headers(method, url, dict(headers), body)
    got = ours(method, url, dict(headers), body)
    assert got["Authorization"] == expected["Authorization"]
    assert got["X-Amz-Date"] == expected["X-Amz-Date"] == "20260102T030405Z"


def test_other_service_and_region_match_botocore() -> None:
    url = (
        "wss://hatchway.example/v1/control-channel/mi-0123456789abcdef0?role=subscribe&stream=input"
    )
    # botocore has no default port for wss; with none in the URL both agree.
    expected = botocore_headers("GET", url, {}, b"", region="eu-west-1", service="ssmmessages")
    got = ours("GET", url, {}, b"", region="eu-west-1", service="ssmmessages")
    assert got["Authorization"] == expected["Authorization"]
    assert "/20260102/eu-west-1/ssmmessages/aws4_request," in got["Authorization"]


def test_x_amz_security_token_and_content_sha_are_signed_like_botocore() -> None:
    body = b'{"a":1}'
    headers = {
        "X-Amz-Target": "AmazonSSM.X",
        "Content-Type": JSON_TYPE,
        "X-Amz-Security-Token": "tok",
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
    }
    expected = botocore_headers("POST", "https://h.example/", dict(headers), body)
    got = ours("POST", "https://h.example/", dict(headers), body)
    assert got["Authorization"] == expected["Authorization"]
    assert "x-amz-security-token" in got["Authorization"]


_SEGMENT = st.text(
    alphabet=st.characters(
        exclude_characters="/?#%",
        exclude_categories=["Cs"],
        min_codepoint=0x21,
    ),
    max_size=8,
)
_QUERY_ATOM = st.text(alphabet="abcXYZ019-_.~%2F+", min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    segments=st.lists(st.one_of(_SEGMENT, st.sampled_from([".", "..", ""])), max_size=6),
    trailing=st.booleans(),
    query=st.lists(st.tuples(_QUERY_ATOM, _QUERY_ATOM), max_size=4),
    body=st.binary(max_size=64),
    header_value=st.text(alphabet="ab \t", max_size=10),
    method=st.sampled_from(["GET", "POST", "put"]),
)
def test_property_matches_botocore(
    segments: list[str],
    trailing: bool,
    query: list[tuple[str, str]],
    body: bytes,
    header_value: str,
    method: str,
) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing else "")
    url = "https://h.example:8443" + path
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query)
    headers = {"X-Amz-Target": "AmazonSSM.T", "X-Amz-Meta": header_value}
    expected = botocore_headers(method, url, dict(headers), body)
    got = ours(method, url, dict(headers), body)
    assert got["Authorization"] == expected["Authorization"]


def test_aws_test_suite_get_vanilla() -> None:
    """AWS's published SigV4 test-suite vector ``get-vanilla``."""
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    got = sign_request(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        credentials=creds,
        region="us-east-1",
        service="service",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert got["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_signing_key_and_string_to_sign_match_botocore() -> None:
    request = AWSRequest(method="GET", url="https://h.example/", headers={"Host": "h.example"})
    request.context["timestamp"] = "20260102T030405Z"
    signer = SigV4Auth(
        BotocoreCredentials(CREDS.access_key_id, CREDS.secret_access_key), "ssm", "local"
    )
    canonical = signer.canonical_request(request)
    assert canonical == canonical_request(
        "GET", "https://h.example/", {"Host": "h.example"}, ["host"], hashlib.sha256().hexdigest()
    )
    sts = string_to_sign("20260102T030405Z", "20260102/local/ssm/aws4_request", canonical)
    assert sts == signer.string_to_sign(request, canonical)
    key = signing_key(CREDS.secret_access_key, "20260102", "local", "ssm")
    assert hmac.new(key, sts.encode(), hashlib.sha256).hexdigest() == signer.signature(sts, request)


def test_does_not_mutate_input_and_replaces_old_auth() -> None:
    headers = {"authorization": "stale", "x-amz-date": "19990101T000000Z", "X-Amz-Target": "T"}
    before = dict(headers)
    got = ours("POST", "https://h.example/", headers, b"")
    assert headers == before
    assert "authorization" not in got and "x-amz-date" not in got
    assert got["X-Amz-Date"] == "20260102T030405Z"
    assert got["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=HWAK")
    assert got["Host"] == "h.example"


def test_naive_and_non_utc_times() -> None:
    naive = ours("GET", "https://h.example/", {}, b"", now=NOW.replace(tzinfo=None))
    shifted = ours(
        "GET", "https://h.example/", {}, b"", now=NOW.astimezone(timezone(timedelta(hours=5)))
    )
    aware = ours("GET", "https://h.example/", {}, b"")
    assert naive == shifted == aware


def test_host_from_url() -> None:
    assert host_from_url("https://Example.COM/") == "example.com"
    assert host_from_url("https://example.com:443/") == "example.com"
    assert host_from_url("http://example.com:443/") == "example.com:443"
    assert host_from_url("wss://example.com:443/") == "example.com"
    assert host_from_url("ws://u:p@example.com:8080/") == "example.com:8080"
    assert host_from_url("https://[::1]:8443/") == "[::1]:8443"


def test_canonical_request_requires_signed_headers_present() -> None:
    with pytest.raises(ValueError, match="x-amz-target"):
        canonical_request("GET", "https://h/", {"Host": "h"}, ["host", "x-amz-target"], "e3")


def test_credentials_repr_hides_secret() -> None:
    assert CREDS.secret_access_key not in repr(CREDS)
    assert CREDS.access_key_id in repr(CREDS)


def test_rsa_variant_signs_the_same_string_to_sign() -> None:
    seen: list[bytes] = []

    def fake_sign(message: bytes) -> bytes:
        seen.append(message)
        return b"\x01\x02signature"

    hmac_headers = ours("POST", "https://h.example/", {"X-Amz-Target": "T"}, b"{}")
    rsa_headers = sign_request_rsa(
        "POST",
        "https://h.example/",
        {"X-Amz-Target": "T"},
        b"{}",
        node_id="mi-0123456789abcdef0",
        private_key_sign=fake_sign,
        region="local",
        now=NOW,
    )
    signed = hmac_headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    encoded = base64.b64encode(b"\x01\x02signature").decode()
    assert rsa_headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=mi-0123456789abcdef0/20260102/local/ssm/aws4_request, "
        f"SignedHeaders={signed}, Signature={encoded}"
    )
    canonical = canonical_request(
        "POST",
        "https://h.example/",
        rsa_headers,
        signed.split(";"),
        hashlib.sha256(b"{}").hexdigest(),
    )
    assert seen == [
        string_to_sign("20260102T030405Z", "20260102/local/ssm/aws4_request", canonical).encode()
    ]


def test_module_imports_only_the_standard_library() -> None:
    """The CLI's start-up budget: nothing heavy behind these imports (not even ssl)."""
    code = (
        "import sys, hatchway.auth.sigv4, hatchway.auth.tokens, hatchway.auth.pinning;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('botocore', 'boto3', 'cryptography', 'aiohttp', 'websockets', 'ssl', 'http'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    src = str(Path(hatchway.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
