"""What an API signature must cover: ``X-Amz-Target`` and ``Content-Type`` besides ``Host``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from hatchway.auth.sigv4 import Credentials, sign_request
from hatchway.auth.verify import check_signed_headers, parse_authorization
from hatchway.errors import IncompleteSignature
from hatchway.server.api import API_SIGNED_HEADERS

URL = "https://hatchway.example:8443/"
BODY = b'{"State": "Active"}'
API_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AmazonSSM.DescribeSessions",
}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_stdlib_signer_signs_what_the_api_requires() -> None:
    headers = sign_request(
        "POST",
        URL,
        dict(API_HEADERS),
        BODY,
        credentials=Credentials("AKID", "secret"),
        region="local",
        now=NOW,
    )
    check_signed_headers(parse_authorization(headers), API_SIGNED_HEADERS)


def test_botocore_signs_what_the_api_requires() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers=dict(API_HEADERS))
    SigV4Auth(BotocoreCredentials("AKID", "secret"), "ssm", "local").add_auth(request)
    check_signed_headers(parse_authorization(dict(request.headers.items())), API_SIGNED_HEADERS)


@pytest.mark.parametrize(
    ("signed", "missing"),
    [
        ({}, ["Content-Type", "X-Amz-Target"]),
        ({"Content-Type": "application/x-amz-json-1.1"}, ["X-Amz-Target"]),
        ({"X-Amz-Target": "AmazonSSM.DescribeSessions"}, ["Content-Type"]),
    ],
)
def test_a_signature_that_leaves_out_a_required_header_is_incomplete(
    signed: dict[str, str], missing: list[str]
) -> None:
    headers = sign_request(
        "POST",
        URL,
        signed,
        BODY,
        credentials=Credentials("AKID", "secret"),
        region="local",
        now=NOW,
    )
    with pytest.raises(IncompleteSignature) as caught:
        check_signed_headers(parse_authorization(headers), API_SIGNED_HEADERS)
    assert caught.value.code == "IncompleteSignatureException"
    assert caught.value.message == " ".join(
        f"'{name}' must be a 'SignedHeader' in the AWS Authorization." for name in missing
    )


def test_nothing_more_is_required_by_default() -> None:
    """WebSocket upgrades (GETs with neither header) keep SigV4's own rule: ``host`` only."""
    headers = sign_request(
        "GET",
        "wss://hatchway.example:8443/v1/control-channel/mi-0123456789abcdef0",
        {},
        b"",
        credentials=Credentials("mi-0123456789abcdef0", "unused"),
        region="local",
        service="ssmmessages",
        now=NOW,
    )
    check_signed_headers(parse_authorization(headers), ())
