"""Random bearer tokens and activation codes, and how they are stored and compared.

Two kinds of secret, two storage rules:

* **Tokens** (data-channel tokens, docs/protocol.md §2.3) carry 256 random bits. Guessing one
  is hopeless, so a single SHA-256 is a sufficient at-rest hash: a slow hash only defends
  low-entropy secrets against offline guessing, and would cost every WebSocket connect a few
  dozen ms.
* **Activation codes** (and any other secret a person may type or choose) are stored with
  scrypt and a random salt, in a self-describing string ``scrypt$n$r$p$salt$hash``, so the
  cost parameters can be raised later without breaking existing hashes.

All comparisons of secrets run in constant time.

Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

__all__ = [
    "UNMATCHABLE_HASH",
    "hash_secret",
    "hash_token",
    "new_activation_code",
    "new_token",
    "tokens_equal",
    "verify_secret",
]

TOKEN_BYTES = 32
"""256 random bits per token (docs/protocol.md §2.3)."""

ACTIVATION_CODE_LENGTH = 28
"""Letters and digits only: 28 * log2(62) ≈ 166 bits, and never a leading ``-`` that a command
line would take for an option."""

_CODE_ALPHABET = string.ascii_letters + string.digits

# scrypt cost: n = 2**15, r = 8 needs 32 MiB and ~80 ms on the project's 2-core machines, well
# above OWASP's minimum (n = 2**17 with r = 8 is its recommendation for passwords; raise
# ``n`` here when console passwords use this too: old hashes keep their own parameters).
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Upper bounds for parameters read back from storage, so a corrupted row cannot make us
# allocate gigabytes or spin for minutes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16


UNMATCHABLE_HASH = (
    f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * _SALT_BYTES}${'00' * _HASH_BYTES}"
)
"""A well-formed hash with today's cost parameters that no code matches (an all-zero digest).

Checking a code against it costs exactly what checking against a real activation's hash costs,
so a caller can do the same work for an unknown id as for a known one (no timing oracle)."""


def new_token() -> str:
    """Return a new bearer token: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of ``token``, the form in which tokens are stored.

    A fast hash is enough because tokens are 256-bit random values (see module docstring);
    it also makes the hash usable as a database lookup key.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Compare two tokens (or token hashes) in constant time."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def new_activation_code() -> str:
    """Return a new activation code: 28 letters and digits (≈166 bits), URL-safe."""
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(ACTIVATION_CODE_LENGTH))


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=_HASH_BYTES,
        # 128·r·n bytes are needed; leave headroom over hashlib's 32 MiB default.
        maxmem=2 * 128 * r * n * p + 1024 * 1024,
    )


def hash_secret(code: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Hash a secret with scrypt and a random salt: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``.

    Args:
        code: an activation code (or another secret a person types).
        n, r, p: scrypt cost parameters; ``n`` must be a power of two greater than 1.

    Raises:
        ValueError: invalid cost parameters.
    """
    if n < 2 or n & (n - 1) or not (1 <= r <= _MAX_R) or not (1 <= p <= _MAX_P) or n > _MAX_N:
        raise ValueError(f"invalid scrypt parameters n={n} r={r} p={p}")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(code, salt, n, r, p)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_secret(code: str, hashed: str) -> bool:
    """Check ``code`` against a :func:`hash_secret` string, in constant time.

    A malformed or out-of-range stored string never verifies (returns ``False``): this is an
    authentication path, and failing closed is the only safe answer.
    """
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = bytes.fromhex(parts[4])
        expected = bytes.fromhex(parts[5])
    except ValueError:
        return False
    if (
        n < 2
        or n & (n - 1)
        or n > _MAX_N
        or not (1 <= r <= _MAX_R)
        or not (1 <= p <= _MAX_P)
        or not salt
        or len(expected) != _HASH_BYTES
    ):
        return False
    return hmac.compare_digest(_scrypt(code, salt, n, r, p), expected)
