"""The one table that maps Hatchway errors to AWS JSON error responses at the API edge."""

from __future__ import annotations

from hatchway.errors import (
    AccessDenied,
    AuthError,
    ConfigError,
    Conflict,
    HatchwayError,
    NotFound,
    ProtocolError,
    StoreError,
    Unavailable,
)

# exception class → HTTP status. AWS JSON services answer client errors with 400.
_STATUS: list[tuple[type[HatchwayError], int]] = [
    (AuthError, 400),
    (AccessDenied, 400),
    (ConfigError, 400),
    (NotFound, 400),
    (Conflict, 400),
    (ProtocolError, 400),
    (Unavailable, 400),
    (StoreError, 500),
]


def error_status(exc: HatchwayError) -> int:
    """HTTP status for an error (500 for anything unexpected)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: HatchwayError) -> dict[str, str]:
    """The AWS JSON 1.1 error body (``__type`` is what botocore reads as the error code)."""
    if error_status(exc) >= 500:
        return {"__type": "InternalServerError", "message": "internal server error"}
    return {"__type": exc.code, "message": exc.message}
