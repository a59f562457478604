"""The webhook signature (README, "Webhooks"): HMAC-SHA256 over ``timestamp.body``."""

from __future__ import annotations

import hashlib
import hmac

from hatchway.server.events.signature import sign, verify

BODY = b'{"id":"e1","type":"session.started","time":"2026-11-30T16:00:00.000Z","detail":{}}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1764518400." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1764518400, BODY) == "sha256=" + expected


def test_a_known_vector() -> None:
    # Fixed here so that the scheme cannot change unnoticed (receivers depend on it).
    assert sign("s3cret", 1, b"{}") == (
        "sha256=" + hmac.new(b"s3cret", b"1.{}", hashlib.sha256).hexdigest()
    )
    assert sign("s3cret", 1, b"{}") != sign("s3cret", 2, b"{}")


def test_verify_accepts_only_the_right_secret_body_and_a_fresh_timestamp() -> None:
    signature = sign("s3cret", 1000, BODY)
    assert verify("s3cret", "1000", BODY, signature, now=1000.0)
    assert verify("s3cret", "1000", BODY, signature, now=1299.0)
    assert not verify("s3cret", "1000", BODY, signature, now=1301.0)  # too old: a replay
    assert not verify("other!", "1000", BODY, signature, now=1000.0)
    assert not verify("s3cret", "1000", BODY + b" ", signature, now=1000.0)
    assert not verify("s3cret", "1001", BODY, signature, now=1000.0)
    assert not verify("s3cret", "1000", BODY, signature.upper(), now=1000.0)
    assert not verify("s3cret", "-1000", BODY, signature, now=1000.0)
    assert not verify("s3cret", "1e3", BODY, signature, now=1000.0)


def test_a_unicode_secret_is_used_as_utf8() -> None:
    expected = hmac.new("clé-secrète".encode(), b"5.x", hashlib.sha256).hexdigest()
    assert sign("clé-secrète", 5, b"x") == "sha256=" + expected


def test_the_readmes_receiver_check_accepts_our_signatures() -> None:
    """The few lines the README gives receivers work against what the server sends."""
    import re
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    [code] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
        if "X-Hatchway-Signature" in block
    ]
    namespace: dict[str, object] = {}
    exec(code, namespace)
    readme_verify = namespace["verify"]
    now = int(time.time())
    headers = {"X-Hatchway-Timestamp": str(now), "X-Hatchway-Signature": sign("s3cret", now, BODY)}
    assert readme_verify("s3cret", headers, BODY)  # type: ignore[operator]
    assert not readme_verify("s3cret", headers, BODY + b"x")  # type: ignore[operator]
    assert not readme_verify("wrong!", headers, BODY)  # type: ignore[operator]
    stale = {
        "X-Hatchway-Timestamp": str(now - 600),
        "X-Hatchway-Signature": sign("s3cret", now - 600, BODY),
    }
    assert not readme_verify("s3cret", stale, BODY)  # type: ignore[operator]
