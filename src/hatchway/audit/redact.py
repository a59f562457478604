"""Secrets never enter the audit trail: request parameters are redacted before an event is
built.

A member is a secret by its name (case-insensitive, anywhere in the nesting): passwords, secret
keys, tokens, activation codes, private keys. Its value becomes :data:`REDACTED` (the member
stays, so the record still shows that one was sent). The names are those of the operations
Hatchway serves (``Password``, ``ActivationCode``, ``SecretAccessKey``, ``TokenValue``…) and
the usual words for secrets, so that a new operation's secret is caught by its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

REDACTED: Final = "***"
"""What a secret's value becomes."""

SECRET_NAME: Final = re.compile(
    r"password|passphrase|secret|token|activationcode|privatekey|credential|otp|totp"
    r"|authorization|signature",
    re.IGNORECASE,
)
"""Member names whose values are secrets (matched anywhere in the name)."""

NOT_SECRET: Final = frozenset({"nexttoken", "passwordlastused", "passwordresetrequired"})
"""Names that match :data:`SECRET_NAME` but hold no secret (paging tokens are opaque offsets)."""


def is_secret(name: str) -> bool:
    """Whether a member called ``name`` holds a secret."""
    plain = name.replace("_", "").replace("-", "").lower()
    return plain not in NOT_SECRET and SECRET_NAME.search(plain) is not None


def redact(value: Any) -> Any:
    """A copy of ``value`` (parsed JSON) with every secret member's value replaced."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret(str(key)) and item is not None else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
