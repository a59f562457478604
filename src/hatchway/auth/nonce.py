"""Server challenges for agent upgrades (docs/protocol.md §10.2).

A signed upgrade alone could be replayed for as long as its ``X-Amz-Date`` is accepted (5
minutes). So before every control- or data-channel upgrade the agent fetches a fresh nonce
(``GET /v1/agent-nonce``) and signs it into the upgrade (``X-Hatchway-Nonce``); the server takes
each nonce once (remembered in the database until it expires).

Nonces cost the server no state until they are used: one is ``1.<issued>.<node id>.<random>.
<mac>``, the MAC an HMAC-SHA256 under a key derived from the master key, so any replica can
check any nonce, and an unauthenticated caller gets nothing but a few microseconds of HMAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from hatchway.errors import InvalidSignature

__all__ = [
    "NONCE_HEADER",
    "NONCE_LIFETIME",
    "NONCE_SKEW",
    "CheckedNonce",
    "NonceIssuer",
    "derive_key",
]

#: The signed header that carries the nonce on an upgrade.
NONCE_HEADER: Final = "X-Hatchway-Nonce"
#: Seconds a nonce stays usable after it was issued.
NONCE_LIFETIME: Final = 60
#: Seconds a nonce may seem to come from the future (replicas' clocks differ a little).
NONCE_SKEW: Final = 5

_VERSION: Final = "1"
_MAX_LENGTH: Final = 160
_NODE_ID: Final = re.compile(r"mi-[0-9a-f]{17}")
_DIGITS: Final = re.compile(r"[0-9]{1,12}")
_RANDOM_BYTES: Final = 16


def derive_key(master_key: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for ``purpose``, independent of every other key derived from the master."""
    return hmac.new(master_key, b"hatchway key derivation\x00" + purpose, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class CheckedNonce:
    """A nonce that passed :meth:`NonceIssuer.check`; ``digest`` is what the store remembers."""

    digest: str
    expires_at: float


class NonceIssuer:
    """Issues and checks nonces; holds the derived key (never shown by ``repr``)."""

    def __init__(self, key: bytes, *, lifetime: int = NONCE_LIFETIME) -> None:
        self._key = key
        self.lifetime = lifetime

    def __repr__(self) -> str:
        return "NonceIssuer(<key hidden>)"

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, node_id: str, now: float) -> str:
        """A fresh nonce for ``node_id`` (any syntactically valid id: issuing is free).

        Raises:
            InvalidSignature: ``node_id`` is not a node id.
        """
        if _NODE_ID.fullmatch(node_id) is None:
            raise InvalidSignature("a nonce needs a node id (mi- and 17 hex digits)")
        body = f"{_VERSION}.{int(now)}.{node_id}.{_b64(secrets.token_bytes(_RANDOM_BYTES))}"
        return f"{body}.{self._mac(body)}"

    def check(self, nonce: str, node_id: str, now: float) -> CheckedNonce:
        """Check that ``nonce`` is ours, fresh and issued for ``node_id``; single use is the
        caller's part (remember :attr:`CheckedNonce.digest` until it expires).

        Raises:
            InvalidSignature: forged, malformed, stale, from the future, or for another node.
        """
        if len(nonce) > _MAX_LENGTH:
            raise InvalidSignature("the agent nonce is malformed")
        parts = nonce.split(".")
        if len(parts) != 5 or parts[0] != _VERSION or _DIGITS.fullmatch(parts[1]) is None:
            raise InvalidSignature("the agent nonce is malformed")
        body, mac = nonce.rsplit(".", 1)
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError) as exc:
            raise InvalidSignature("the agent nonce is malformed") from exc
        expected = hmac.new(self._key, body.encode("ascii", "replace"), hashlib.sha256).digest()
        if not hmac.compare_digest(given, expected):
            raise InvalidSignature("the agent nonce was not issued by this server")
        if parts[2] != node_id:
            raise InvalidSignature("the agent nonce was issued for another node")
        issued = int(parts[1])
        if issued > now + NONCE_SKEW:
            raise InvalidSignature("the agent nonce is not valid yet")
        if now - issued > self.lifetime:
            raise InvalidSignature("the agent nonce has expired; fetch a new one")
        digest = hashlib.sha256(nonce.encode("ascii")).hexdigest()
        return CheckedNonce(digest, float(issued + self.lifetime + NONCE_SKEW))
