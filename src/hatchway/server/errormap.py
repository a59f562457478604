"""The API edge's mapping of Hatchway errors to AWS JSON error responses.

The table itself is the exception tree: each class in ``hatchway.errors`` carries its AWS error
type (``code``) and HTTP status (``status``). This module only decides what a response may say:
a server-side fault (5xx) never carries the exception's message to the caller.
"""

from __future__ import annotations

from hatchway.errors import HatchwayError

MAX_MESSAGE = 1024  # characters of an error message sent back (inputs echoed in it are cut too)


def error_status(exc: HatchwayError) -> int:
    """HTTP status for an error."""
    return exc.status


def error_body(exc: HatchwayError) -> dict[str, str]:
    """The AWS JSON 1.1 error body (``__type`` is what botocore reads as the error code)."""
    if exc.status >= 500:
        return {"__type": "InternalServerError", "message": "internal server error"}
    message = exc.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {"__type": exc.code, "message": message}
