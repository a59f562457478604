"""Server-side SigV4 verification: HMAC for access keys, RSA-PSS for agents.

Verification is split into small steps so that the API layer can look the key up between them
and audit exactly which step failed:

1. :func:`parse_authorization`: syntax of ``Authorization`` and ``X-Amz-Date``;
2. :func:`check_request_time`, :func:`check_scope` and :func:`check_signed_headers`: freshness,
   scope and what the signature must cover, before any database lookup;
3. :func:`verify_hmac_signature` (users' access keys) or :func:`verify_rsa_signature` (agents,
   docs/protocol.md §10.2).

Canonicalisation is botocore's own (``SigV4Auth.canonical_request``/``string_to_sign``/
``signature``), fed with the client's timestamp and exactly the client's ``SignedHeaders``, so
boto3, the AWS CLI and our standard-library signer (``auth.sigv4``) all verify without a second
implementation to keep in sync. Error codes and messages are AWS's, so AWS tools print what
their users expect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials as BotocoreCredentials
from cryptography.exceptions import InvalidSignature as BadRsaSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hatchway.auth.agentkey import PSS_SALT_LENGTH, load_public_key_b64
from hatchway.auth.sigv4 import ALGORITHM, AMZ_DATE_FORMAT
from hatchway.errors import (
    ConfigError,
    CorruptData,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
)

__all__ = [
    "ParsedAuthorization",
    "check_request_time",
    "check_scope",
    "check_signed_headers",
    "parse_authorization",
    "verify_hmac_signature",
    "verify_rsa_signature",
]

SIGNATURE_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)

_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE_CHARS_RE = re.compile(r"[A-Za-z0-9+/=]+")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    """The parts of a SigV4 ``Authorization`` header plus the request's ``X-Amz-Date``."""

    access_key_id: str
    date: str
    """Credential scope date, ``YYYYMMDD``."""
    region: str
    service: str
    signed_headers: tuple[str, ...]
    """Lower-case header names, in the client's order."""
    signature: str
    """Hex HMAC (access keys) or base64 RSA-PSS (agents), exactly as sent."""
    amz_date: str
    """``X-Amz-Date``, ``YYYYMMDDTHHMMSSZ``."""

    @property
    def timestamp(self) -> datetime:
        """``amz_date`` as an aware UTC datetime."""
        return datetime.strptime(self.amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts and CIMultiDicts alike."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lower:
            return candidate
    return None


def _incomplete(message: str) -> IncompleteSignature:
    return IncompleteSignature(message)


def parse_authorization(headers: Mapping[str, str]) -> ParsedAuthorization:
    """Parse ``Authorization`` (``AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…``).

    Only syntax is checked here; scope, time and signature are separate steps.

    Raises:
        AuthError: ``MissingAuthenticationTokenException`` without an ``Authorization`` header;
            ``IncompleteSignatureException`` when it or ``X-Amz-Date`` is malformed or missing.
    """
    raw = _header(headers, "Authorization")
    if raw is None or not raw.strip():
        raise MissingAuthenticationToken("Missing Authentication Token")
    raw = raw.strip()
    algorithm, _, rest = raw.partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(
            f"Unsupported Authorization algorithm {algorithm[:40]!r}: expected '{ALGORITHM}'."
        )

    fields: dict[str, str] = {}
    for item in rest.split(","):
        if not item.strip():
            continue  # "AWS4-HMAC-SHA256" alone, or a stray comma: reported as missing below
        name, sep, value = item.strip().partition("=")
        if not sep or not name:
            raise _incomplete(
                f"Authorization header parameter {item.strip()[:60]!r} is not of the form "
                "'Name=Value'."
            )
        if name in fields:
            raise _incomplete(f"Authorization header has more than one '{name}' parameter.")
        fields[name] = value.strip()
    missing = [
        name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)
    ]
    if missing:
        raise _incomplete(
            " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
        )
    unknown = sorted(set(fields) - {"Credential", "SignedHeaders", "Signature"})
    if unknown:
        raise _incomplete(f"Authorization header has unknown parameter(s): {', '.join(unknown)}.")

    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise _incomplete(
            "Credential must have the form "
            "'<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request'."
        )
    access_key_id, date, region, service, terminator = scope
    if terminator != "aws4_request":
        raise _incomplete(
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator[:40]}'."
        )
    if not re.fullmatch(r"\d{8}", date):
        raise _incomplete(f"Credential scope date must be YYYYMMDD, not '{date[:40]}'.")

    signed = tuple(fields["SignedHeaders"].split(";"))
    for name in signed:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise _incomplete(
                f"SignedHeaders must be lower-case header names separated by ';', "
                f"got '{fields['SignedHeaders'][:200]}'."
            )
    if "host" not in signed:
        raise _incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")

    signature = fields["Signature"]
    if not _SIGNATURE_CHARS_RE.fullmatch(signature):
        raise _incomplete("Signature must be hexadecimal or base64.")

    amz_date = _header(headers, "X-Amz-Date")
    if amz_date is None or not amz_date.strip():
        raise _incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
    amz_date = amz_date.strip()
    if not _AMZ_DATE_RE.fullmatch(amz_date):
        raise _incomplete(
            f"X-Amz-Date must be in ISO 8601 basic format (YYYYMMDD'T'HHMMSS'Z'). "
            f"Got '{amz_date[:40]}'."
        )
    try:
        datetime.strptime(amz_date, AMZ_DATE_FORMAT)
    except ValueError as exc:
        raise _incomplete(f"X-Amz-Date is not a valid date: '{amz_date}'.") from exc

    return ParsedAuthorization(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=signed,
        signature=signature,
        amz_date=amz_date,
    )


def _describe_skew(max_skew: timedelta) -> str:
    minutes = max_skew.total_seconds() / 60
    if minutes == int(minutes):
        return f"{int(minutes)} min."
    return f"{max_skew.total_seconds():g} s."


def check_request_time(
    parsed: ParsedAuthorization, now: datetime, *, max_skew: timedelta = timedelta(minutes=5)
) -> None:
    """Reject requests signed too long ago or too far in the future, and scope/date mismatches.

    Both limits are inclusive: a request exactly ``max_skew`` old is still accepted. This bounds
    how long a captured request can be replayed (5 minutes, for agents too: docs/protocol.md §10.2).

    Raises:
        AuthError: ``InvalidSignatureException`` with AWS's wording.
    """
    if parsed.date != parsed.amz_date[:8]:
        raise InvalidSignature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{parsed.date}' != '{parsed.amz_date[:8]}', from '{parsed.amz_date}'."
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    signed_at = parsed.timestamp
    skew = _describe_skew(max_skew)
    now_text = now.strftime(AMZ_DATE_FORMAT)
    if signed_at < now - max_skew:
        earliest = (now - max_skew).strftime(AMZ_DATE_FORMAT)
        raise InvalidSignature(
            f"Signature expired: {parsed.amz_date} is now earlier than {earliest} "
            f"({now_text} - {skew})"
        )
    if signed_at > now + max_skew:
        latest = (now + max_skew).strftime(AMZ_DATE_FORMAT)
        raise InvalidSignature(
            f"Signature not yet current: {parsed.amz_date} is still later than {latest} "
            f"({now_text} + {skew})"
        )


def check_scope(parsed: ParsedAuthorization, *, region: str, service: str) -> None:
    """Check that the credential scope names this server's region and the expected service.

    Raises:
        AuthError: ``InvalidSignatureException`` with AWS's wording.
    """
    if parsed.region != region:
        raise InvalidSignature(
            f"Credential should be scoped to a valid region, not '{parsed.region[:64]}'."
        )
    if parsed.service != service:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{service}'.")


def _display_name(header: str) -> str:
    """``x-amz-target`` → ``X-Amz-Target``, as AWS names headers in its messages."""
    return "-".join(part.capitalize() for part in header.split("-"))


def check_signed_headers(parsed: ParsedAuthorization, required: Iterable[str]) -> None:
    """Require each of ``required`` (lower-case names) to be among the ``SignedHeaders``.

    SigV4 itself only insists on ``host`` (checked by :func:`parse_authorization`); an edge
    whose meaning depends on other headers names them here, so that a captured signature cannot
    be replayed with those headers changed. The API requires ``X-Amz-Target`` (the operation)
    and ``Content-Type``; WebSocket upgrades, which carry neither, require nothing more.

    Raises:
        IncompleteSignature: ``IncompleteSignatureException`` naming each missing header.
    """
    missing = [name for name in required if name not in parsed.signed_headers]
    if missing:
        raise IncompleteSignature(
            " ".join(
                f"'{_display_name(name)}' must be a 'SignedHeader' in the AWS Authorization."
                for name in missing
            )
        )


class _ClientSignedHeadersSigV4(SigV4Auth):
    """botocore's SigV4 canonicalisation restricted to the headers the client signed.

    botocore's signer picks headers itself (all but a blacklist); a verifier must use exactly
    the client's ``SignedHeaders`` instead, or a proxy adding a header would break every
    signature.
    """

    def __init__(
        self, credentials: BotocoreCredentials, service: str, region: str, signed: tuple[str, ...]
    ) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        selected = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name, []):
                selected[name] = value
        return selected


def _string_to_sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    parsed: ParsedAuthorization,
    secret: str,
) -> tuple[_ClientSignedHeadersSigV4, AWSRequest, str]:
    """Rebuild the client's string to sign with botocore; return the signer and request too."""
    request = AWSRequest(method=method.upper(), url=url, data=body)
    # items() (not keys) so repeated headers of a CIMultiDict are all kept, as signed.
    for name, value in headers.items():
        request.headers[name] = value
    request.context["timestamp"] = parsed.amz_date

    for name in parsed.signed_headers:
        if not request.headers.get_all(name):
            raise InvalidSignature(
                f"{SIGNATURE_MISMATCH_MESSAGE} (signed header '{name}' is not in the request)"
            )
    # botocore would take X-Amz-Content-SHA256 on trust (even "UNSIGNED-PAYLOAD"); we only
    # accept it if it is the true hash, so the signature always covers the body.
    declared = request.headers.get("X-Amz-Content-SHA256")
    if declared is not None and not hmac.compare_digest(
        declared.strip().lower().encode(), hashlib.sha256(body).hexdigest().encode()
    ):
        raise InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )

    credentials = BotocoreCredentials(parsed.access_key_id, secret)
    signer = _ClientSignedHeadersSigV4(
        credentials, parsed.service, parsed.region, parsed.signed_headers
    )
    canonical = signer.canonical_request(request)
    return signer, request, signer.string_to_sign(request, canonical)


def verify_hmac_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    parsed: ParsedAuthorization,
    secret: str,
) -> None:
    """Verify an access-key (HMAC-SHA256) signature in constant time.

    Args:
        url: the request URL as received (path and query exactly as on the wire; scheme and
            host are not used: the signed ``Host`` header is).
        headers: all request headers (a CIMultiDict keeps repeated headers).
        body: the exact body bytes received.
        parsed: from :func:`parse_authorization`, already checked for time and scope.
        secret: the access key's secret.

    Raises:
        AuthError: ``InvalidSignatureException`` if the signature does not match.
    """
    signer, request, to_sign = _string_to_sign(method, url, headers, body, parsed, secret)
    expected: Any = signer.signature(to_sign, request)
    if not hmac.compare_digest(str(expected).encode(), parsed.signature.encode()):
        raise InvalidSignature(SIGNATURE_MISMATCH_MESSAGE)


def verify_rsa_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    parsed: ParsedAuthorization,
    public_key_der_b64: str,
) -> None:
    """Verify an agent's RSA-PSS-SHA256 (salt 32) SigV4 signature (docs/protocol.md §10.2).

    Args:
        public_key_der_b64: the node's registered key, base64 of the DER SubjectPublicKeyInfo.
        Other arguments as for :func:`verify_hmac_signature`.

    Raises:
        InvalidSignature: the signature does not verify.
        CorruptData: the stored key is unusable (a server-side fault).
    """
    try:
        public_key = load_public_key_b64(public_key_der_b64)
    except ConfigError as exc:
        raise CorruptData(f"the node's registered public key is unusable: {exc.message}") from exc
    try:
        signature = base64.b64decode(parsed.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignature(SIGNATURE_MISMATCH_MESSAGE) from exc
    _, _, to_sign = _string_to_sign(method, url, headers, body, parsed, "")
    try:
        public_key.verify(
            signature,
            to_sign.encode("utf-8"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH),
            hashes.SHA256(),
        )
    except BadRsaSignature as exc:
        raise InvalidSignature(SIGNATURE_MISMATCH_MESSAGE) from exc
