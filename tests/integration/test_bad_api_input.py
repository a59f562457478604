"""Bad API request bodies: over 1 MiB, not JSON, not an object, not UTF-8."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from hatchway.transport.apiclient import ApiError
from tests.integration.bad_input import (
    JSON_TYPE,
    MiB,
    api_client,
    assert_undisturbed,
    client_ssl,
    healthz,
)
from tests.integration.cluster import Cluster

# ---- API bodies ---------------------------------------------------------------------------


def post_raw(cluster: Cluster, body: bytes) -> tuple[int, Any, Any]:
    """POST an unsigned body to the API; (status, headers, decoded JSON body)."""
    request = urllib.request.Request(
        cluster.endpoint + "/",
        data=body,
        method="POST",
        headers={"Content-Type": JSON_TYPE, "X-Amz-Target": "AmazonSSM.DescribeSessions"},
    )
    try:
        with urllib.request.urlopen(request, context=client_ssl(cluster), timeout=30) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def padded_body(size: int) -> bytes:
    head, tail = b'{"State": "Active", "Pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_api_body_over_1_mib_is_413_with_an_aws_error(cluster: Cluster, node: str) -> None:
    status, headers, body = post_raw(cluster, padded_body(MiB + 1))
    assert status == 413
    assert headers["Content-Type"].startswith(JSON_TYPE)
    assert headers["x-amzn-RequestId"]
    assert body["__type"] == "RequestEntityTooLargeException"
    assert str(MiB) in body["message"]
    # Exactly 1 MiB is within the limit: refused for its missing signature, not its size.
    status, _, body = post_raw(cluster, padded_body(MiB))
    assert status == 400
    assert body["__type"] == "MissingAuthenticationTokenException"
    # The CLI's client turns the 413 into an error with the AWS code.
    with pytest.raises(ApiError) as caught:
        api_client(cluster).call("DescribeSessions", {"State": "Active", "Pad": "x" * MiB})
    assert caught.value.code == "RequestEntityTooLargeException"
    assert caught.value.status == 413
    assert healthz(cluster) == {"status": "ok"}
    assert_undisturbed(cluster, node)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe\xfd"])
def test_malformed_api_body_is_a_serialization_error(
    cluster: Cluster, node: str, body: bytes
) -> None:
    status, _, answer = post_raw(cluster, body)
    assert status == 400
    assert answer["__type"] == "SerializationException"
    assert_undisturbed(cluster, node)
