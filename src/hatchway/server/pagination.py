"""MaxResults / NextToken paging, shared by every Describe* operation.

A token is the offset of the next page as decimal digits: opaque to callers, and accepted back
only in the form this server issues (:data:`TOKEN`), so that ``²``, 5,000 digits or a number
past SQLite's 64-bit integers is an ``InvalidNextToken`` and never reaches ``int()`` or the
database.
"""

from __future__ import annotations

import re
from typing import Any

from hatchway.errors import InvalidNextToken

TOKEN = re.compile(r"[0-9]{1,9}")
"""Tokens this server issues: ASCII digits, below 10**9 (no listing is that long)."""


def page_request(body: dict[str, Any], *, default: int) -> tuple[int, int]:
    """(limit, offset) from a validated request's ``MaxResults`` and ``NextToken``.

    ``MaxResults`` has been checked against the operation's model (type and range); the token
    is checked here, since the model says only that it is a string.

    Raises:
        InvalidNextToken: a token this server could not have issued.
    """
    limit: int = body.get("MaxResults", default)
    token = body.get("NextToken")
    if token is None:
        return limit, 0
    if not isinstance(token, str) or TOKEN.fullmatch(token) is None:
        raise InvalidNextToken("The specified token is not valid.")
    return limit, int(token)


def page_response(more: bool, next_offset: int) -> dict[str, Any]:
    """``NextToken`` for the page after this one, if there is one."""
    return {"NextToken": str(next_offset)} if more else {}
