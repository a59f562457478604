"""How a webhook delivery is signed, and how a receiver checks it (README, "Webhooks").

The signature is HMAC-SHA256 under the subscription's secret (its UTF-8 bytes) over the
delivery's timestamp (``X-Hatchway-Timestamp``, decimal Unix seconds), a full stop, and the
exact bytes of the body::

    X-Hatchway-Signature: sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>

The timestamp is part of what is signed so that a receiver can refuse a captured delivery
replayed later (:data:`DEFAULT_TOLERANCE`); the event id (``X-Hatchway-Event-Id`` and the
body's ``id``) is the same on every attempt, for deduplication.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SCHEME: Final = "sha256="
DEFAULT_TOLERANCE: Final = 300.0
"""Seconds a receiver should accept a timestamp away from its own clock."""

EVENT_ID_HEADER: Final = "X-Hatchway-Event-Id"
EVENT_TYPE_HEADER: Final = "X-Hatchway-Event-Type"
TIMESTAMP_HEADER: Final = "X-Hatchway-Timestamp"
SIGNATURE_HEADER: Final = "X-Hatchway-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Hatchway-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return SCHEME + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``signature`` is this secret's for ``body`` at ``timestamp``, and the timestamp
    is within ``tolerance`` of ``now``; the comparison takes constant time."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
