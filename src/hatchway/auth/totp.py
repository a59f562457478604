"""TOTP second factor (RFC 6238) on ``cryptography``'s implementation (no new dependency).

Authenticator apps expect: SHA-1, 6 digits, 30-second steps, a 160-bit secret in base32
(RFC 4226 §4 recommends 160 bits), offered as an ``otpauth://`` URI (Google Authenticator's
"Key Uri Format", which every common app reads). A code of the step before or after the
current one is accepted too (RFC 6238 §5.2 allows for one step of clock drift); callers record
the step a code matched so that no code is accepted twice (RFC 6238 §5.2, "MUST NOT").
"""

from __future__ import annotations

import base64
import secrets
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

__all__ = ["DIGITS", "STEP", "matching_step", "new_secret", "provisioning_uri", "secret_base32"]

DIGITS = 6
STEP = 30
SECRET_BYTES = 20
DRIFT_STEPS = 1


def new_secret() -> bytes:
    """A new random 160-bit TOTP secret."""
    return secrets.token_bytes(SECRET_BYTES)


def secret_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it typed in (base32, no padding)."""
    return base64.b32encode(secret).decode().rstrip("=")


def provisioning_uri(secret: bytes, account: str, issuer: str) -> str:
    """The ``otpauth://totp/…`` URI an authenticator app reads (from a QR code or a link)."""
    label = quote(f"{issuer}:{account}", safe="")
    query = urlencode(
        {"secret": secret_base32(secret), "issuer": issuer, "digits": DIGITS, "period": STEP}
    )
    return f"otpauth://totp/{label}?{query}"


def _totp(secret: bytes) -> TOTP:
    # SHA-1 is what RFC 6238's apps implement; in HMAC it is not the broken use of SHA-1.
    return TOTP(secret, DIGITS, SHA1(), STEP, enforce_key_length=True)


def matching_step(secret: bytes, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is (this one or one either side), or None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = _totp(secret)
    current = int(now) // STEP
    for step in (current, current - 1, current + 1):
        try:
            totp.verify(code.encode(), step * STEP)
        except InvalidToken:
            continue
        return step
    return None
