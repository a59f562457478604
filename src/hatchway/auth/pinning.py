"""Trust on first use, done safely: fetch the server's CA and pin it by fingerprint.

The server creates its own CA and prints the CA certificate's SHA-256
fingerprint; clients and agents are given that string (``--ca-fingerprint``). To bootstrap
trust they:

1. fetch ``GET /ca.pem`` over TLS *without* verification (there is nothing to verify against
   yet) and accept the content only if its DER SHA-256 equals the fingerprint;
2. connect again with normal verification against that CA, hostname check included, so the
   server that answered is proven to hold a certificate issued by the pinned CA;
3. store the CA file; every later connection verifies normally against it.

Standard library only: this runs in the CLI and the agent before anything else and must not pull
in ``cryptography``; ``ssl`` and ``http.client`` are imported only when a CA is actually fetched,
so validating a fingerprint costs the CLI nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from hatchway.auth.atomicfile import write_atomic
from hatchway.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    import ssl

__all__ = [
    "CA_PATH",
    "der_fingerprint",
    "fetch_and_pin_ca",
    "first_pem_certificate",
    "normalize_fingerprint",
]

CA_PATH = "/ca.pem"
"""Where the server publishes its CA certificate."""

_MAX_CA_BYTES = 256 * 1024
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
_PEM_CERT_RE = re.compile(
    r"-----BEGIN CERTIFICATE-----(?P<body>[A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----"
)


def normalize_fingerprint(text: str) -> str:
    """Return a CA fingerprint as 64 lower-case hex digits.

    Accepts the forms people paste: upper or lower case, with or without colons or spaces
    (``AB:CD:…``, ``abcd…``).

    Raises:
        ConfigError: not 64 hex digits once colons and whitespace are removed.
    """
    cleaned = re.sub(r"[\s:]", "", text).lower()
    if not _FINGERPRINT_RE.fullmatch(cleaned):
        raise ConfigError("CA fingerprint must be 64 hex digits (SHA-256), colons optional")
    return cleaned


def der_fingerprint(der: bytes) -> str:
    """Return the lower-case hex SHA-256 of a DER certificate (the pinned fingerprint)."""
    return hashlib.sha256(der).hexdigest()


def first_pem_certificate(pem: str) -> bytes:
    """Return the DER bytes of the first ``CERTIFICATE`` block in ``pem``.

    Raises:
        ConfigError: no certificate block, or it is not valid base64.
    """
    match = _PEM_CERT_RE.search(pem)
    if match is None:
        raise ConfigError("no PEM certificate found")
    try:
        der = base64.b64decode("".join(match.group("body").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("the PEM certificate is corrupt") from exc
    if not der:
        raise ConfigError("the PEM certificate is empty")
    return der


def _der_to_pem(der: bytes) -> str:
    """Encode DER as a PEM ``CERTIFICATE`` block with 64-character lines (RFC 7468)."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _get(
    host: str, port: int, path: str, context: ssl.SSLContext, timeout: float
) -> tuple[int, bytes]:
    """GET ``path`` over TLS; return (status, body), reading at most ``_MAX_CA_BYTES``."""
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("GET", path, headers={"Accept": "application/x-pem-file"})
        response = connection.getresponse()
        body = response.read(_MAX_CA_BYTES + 1)
        return response.status, body
    finally:
        connection.close()


def fetch_and_pin_ca(endpoint: str, fingerprint: str, dest: Path, *, timeout: float = 10.0) -> Path:
    """Fetch ``<endpoint>/ca.pem``, check its fingerprint, and store it at ``dest``.

    Args:
        endpoint: the server's ``https://host[:port][/prefix]`` URL.
        fingerprint: expected SHA-256 of the CA certificate's DER (colons optional).
        dest: where to write the pinned CA (PEM, mode 0644, written atomically).
        timeout: seconds per network operation.

    Returns:
        ``dest``.

    Raises:
        ConfigError: bad endpoint or fingerprint, fingerprint mismatch, or the server does not
            verify against the pinned CA; ``dest`` is then left untouched.
        Unavailable: the server cannot be reached or does not serve ``/ca.pem``.
    """
    import http.client
    import ssl

    want = normalize_fingerprint(fingerprint)
    parts = urlsplit(endpoint)
    if parts.scheme.lower() not in ("https", "wss"):
        raise ConfigError(f"the endpoint must be an https:// URL to pin its CA, got {endpoint!r}")
    host = parts.hostname
    if not host:
        raise ConfigError(f"the endpoint {endpoint!r} has no host name")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ConfigError(f"the endpoint {endpoint!r} has an invalid port") from exc
    path = parts.path.rstrip("/") + CA_PATH

    # Step 1: unverified, on purpose and only for this one GET; the content is trusted only
    # if it matches the fingerprint the operator gave us.
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.minimum_version = ssl.TLSVersion.TLSv1_2
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    try:
        status, body = _get(host, port, path, blind, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"cannot fetch the CA from {endpoint}: {exc}") from exc
    if status != 200:
        raise Unavailable(f"cannot fetch the CA from {endpoint}: HTTP {status} for {path}")
    if len(body) > _MAX_CA_BYTES:
        raise ConfigError(f"{endpoint}{CA_PATH} is too large to be a CA certificate")
    der = first_pem_certificate(body.decode("ascii", errors="replace"))
    got = der_fingerprint(der)
    if not hmac.compare_digest(got.encode(), want.encode()):
        raise ConfigError(f"TLS fingerprint mismatch: the server's CA is {got}, expected {want}")

    # Step 2: the same server must now pass normal verification against that CA.
    pem = _der_to_pem(der)
    verified = ssl.create_default_context(cadata=pem)
    verified.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        status, _ = _get(host, port, path, verified, timeout)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"the server at {endpoint} does not present a certificate for {host!r} issued by "
            f"the pinned CA: {exc}"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"cannot reach {endpoint} to verify the pinned CA: {exc}") from exc
    if status != 200:
        raise Unavailable(f"{endpoint}{CA_PATH} answered HTTP {status} on the verified request")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, pem.encode("ascii"), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the pinned CA to {dest}: {exc.strerror or exc}") from exc
    return dest
