"""AWS Signature Version 4 request signing with the standard library only.

The CLI signs every API call and WebSocket upgrade; importing botocore costs more start-up time
than a whole Hatchway command is allowed (docs/design.md, "Performance choices"), so this
module reimplements the *signing* side of SigV4 with ``hmac``/``hashlib``. Its output is tested
to be byte-for-byte identical to botocore's ``SigV4Auth``; the server verifies with botocore
(``auth.verify``), so both ends canonicalise requests the same way.

Two signers share one canonical request and string to sign:

* :func:`sign_request`: the usual hex HMAC-SHA256 signature with an access key secret.
* :func:`sign_request_rsa`: the agent's variant (docs/protocol.md §10.2): key id = node id,
  signature = base64 of an RSA-PSS-SHA256 signature made by a callback, so this module needs
  no crypto library.

Canonicalisation follows botocore exactly, including its choices for non-S3 services:

* path: dot segments and repeated slashes removed, then percent-encoded once more on top of
  the encoding already present in the URL (``/a%20b`` becomes ``/a%2520b``, the "encode each
  segment twice" rule of the SigV4 documentation when counting the wire encoding);
* query: the ``name=value`` pairs of the URL, as they appear on the wire, sorted;
* headers: lower-case names, values trimmed with runs of spaces collapsed, repeated headers
  joined with commas.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

__all__ = [
    "ALGORITHM",
    "AMZ_DATE_FORMAT",
    "Credentials",
    "canonical_request",
    "credential_scope",
    "host_from_url",
    "sign_request",
    "sign_request_rsa",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
"""The algorithm name; the RSA variant (docs/protocol.md §10.2) keeps it unchanged."""

AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
"""``X-Amz-Date`` format: ISO 8601 basic, UTC."""

# Port numbers a Host header omits. ws/wss are not in botocore's table, but WebSocket clients
# send them the same way, and the agent and client sign their wss:// upgrade URLs.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key: the id travels in the ``Authorization`` header, the secret never does."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


def host_from_url(url: str) -> str:
    """Return the ``Host`` header value for ``url``: lower-case host, port only if not default.

    IPv6 literals keep their brackets; user info is dropped (as botocore does).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 dot-segment removal; also drops empty segments (AWS collapses "//")."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and output else ""
    return first + "/".join(output) + last


def _canonical_path(path: str) -> str:
    return quote(_remove_dot_segments(path), safe="/~")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        pairs.append((name, value))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """Build the SigV4 canonical request for ``method url``.

    Args:
        method: HTTP method (upper-cased here).
        url: the full URL as it is sent, already percent-encoded (only path and query are used).
        headers: request headers; names are matched case-insensitively.
        signed_headers: the header names to sign (any case; sorted and de-duplicated here).
        payload_hash: hex SHA-256 of the body (or the ``X-Amz-Content-SHA256`` value).

    Raises:
        ValueError: a header listed in ``signed_headers`` is not in ``headers``.
    """
    values: dict[str, list[str]] = {}
    for name, value in headers.items():
        values.setdefault(name.strip().lower(), []).append(value)
    names = sorted({name.strip().lower() for name in signed_headers})
    lines = []
    for name in names:
        if name not in values:
            raise ValueError(f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{','.join(_trim(v) for v in values[name])}\n")
    parts = urlsplit(url)
    return "\n".join(
        [
            method.upper(),
            _canonical_path(parts.path),
            _canonical_query(parts.query),
            "".join(lines),
            ";".join(names),
            payload_hash,
        ]
    )


def credential_scope(date: str, region: str, service: str) -> str:
    """Return ``<date>/<region>/<service>/aws4_request`` (``date`` is ``YYYYMMDD``)."""
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """Return the SigV4 string to sign for a canonical request.

    Args:
        amz_date: the request's ``X-Amz-Date`` (``YYYYMMDDTHHMMSSZ``).
        scope: the credential scope, ``<date>/<region>/<service>/aws4_request``.
        canonical: the canonical request from :func:`canonical_request`.
    """
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key from a secret access key and the credential scope."""
    k_date = _hmac(f"AWS4{secret}".encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def _headers_to_sign(headers: Mapping[str, str]) -> list[str]:
    """Choose what to sign: host, content-type, every ``x-amz-*`` and ``x-hatchway-*`` header.

    This is what botocore signs for AWS JSON requests (it also signs any other header not on
    its blacklist, but the CLI sends no others), plus Hatchway's own headers, which carry the
    agent's nonce and generation (docs/protocol.md §10.2); the server verifies exactly the list
    we send.
    """
    names = set()
    for name in headers:
        lower = name.strip().lower()
        if lower in ("host", "content-type") or lower.startswith(("x-amz-", "x-hatchway-")):
            names.add(lower)
    return sorted(names)


def _prepare(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    region: str,
    service: str,
    now: datetime,
) -> tuple[dict[str, str], str, str, str]:
    """Add Host and X-Amz-Date; return (headers, scope, signed header list, string to sign)."""
    if now.tzinfo is None:
        # A naive time is taken to be UTC, as botocore's clock is.
        now = now.replace(tzinfo=UTC)
    amz_date = now.astimezone(UTC).strftime(AMZ_DATE_FORMAT)
    drop = {"authorization", "x-amz-date"}
    out = {name: value for name, value in headers.items() if name.lower() not in drop}
    if not any(name.lower() == "host" for name in out):
        out["Host"] = host_from_url(url)
    out["X-Amz-Date"] = amz_date

    payload_hash = (
        next(
            (v for k, v in out.items() if k.lower() == "x-amz-content-sha256"),
            None,
        )
        or hashlib.sha256(body).hexdigest()
    )
    signed = _headers_to_sign(out)
    scope = credential_scope(amz_date[:8], region, service)
    canonical = canonical_request(method, url, out, signed, payload_hash)
    return out, scope, ";".join(signed), string_to_sign(amz_date, scope, canonical)


def sign_request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    credentials: Credentials,
    region: str,
    service: str = "ssm",
    now: datetime,
) -> dict[str, str]:
    """Sign a request with SigV4 (HMAC-SHA256) and return the headers to send.

    The result is a new dict: ``headers`` plus ``Host`` (derived from ``url`` if absent),
    ``X-Amz-Date`` and ``Authorization``. Any ``Authorization``/``X-Amz-Date`` already in
    ``headers`` is replaced. Signed headers: host, content-type and all ``x-amz-*`` present.

    Args:
        url: full URL, already percent-encoded as it will be sent.
        body: exact body bytes that will be sent (``b""`` for none).
        now: signing time; a naive datetime is taken as UTC.
    """
    out, scope, signed, to_sign = _prepare(
        method, url, headers, body, region=region, service=service, now=now
    )
    key = signing_key(credentials.secret_access_key, scope[:8], region, service)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out


def sign_request_rsa(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    node_id: str,
    private_key_sign: Callable[[bytes], bytes],
    region: str,
    service: str = "ssm",
    now: datetime,
) -> dict[str, str]:
    """Sign a request the way a registered agent does (docs/protocol.md §10.2).

    Canonical request, scope and string to sign are plain SigV4; the key id is the node id and
    the signature is ``base64(private_key_sign(string_to_sign))`` instead of a hex HMAC, where
    ``private_key_sign`` makes an RSA-PSS-SHA256 signature with salt length 32
    (``auth.agentkey.pss_signer``). Returns the same headers as :func:`sign_request`.
    """
    out, scope, signed, to_sign = _prepare(
        method, url, headers, body, region=region, service=service, now=now
    )
    signature = base64.b64encode(private_key_sign(to_sign.encode("utf-8"))).decode("ascii")
    out["Authorization"] = (
        f"{ALGORITHM} Credential={node_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return out
