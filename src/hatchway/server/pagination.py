"""MaxResults / NextToken paging, shared by every Describe* operation.

Two kinds of token, both opaque to callers and accepted back only in the form this server
issues, so that a forged or mangled token is an ``InvalidNextToken`` and never reaches ``int()``
or the database:

* **Offsets** (:func:`page_request`): the offset of the next page as decimal digits
  (:data:`TOKEN`), for listings that are short or not yet keyset-paged.
* **Keys** (:func:`keyset_request`): ``k1.`` and the URL-safe base64 of the JSON
  ``[number, string]`` sort key of the last item sent (:data:`KEY_TOKEN`). The next page is read
  with ``WHERE key > last ORDER BY key LIMIT n+1`` from an index: each page costs the same
  however deep it is, and an item added or removed between pages shifts nothing (each item that
  stays is listed exactly once). ``DescribeInstanceInformation`` pages this way.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
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


KEY_TOKEN = re.compile(r"k1\.[A-Za-z0-9_-]{4,400}")
"""Key tokens this server issues (a sort key of a float and an id of at most 64 characters)."""
MAX_KEY_ID = 64


def keyset_token(key: tuple[float, str]) -> str:
    """The ``NextToken`` that resumes after the item whose sort key is ``key``."""
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return "k1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def keyset_request(body: dict[str, Any], *, default: int) -> tuple[int, tuple[float, str] | None]:
    """(limit, key to resume after) from a validated request's ``MaxResults`` and ``NextToken``.

    Raises:
        InvalidNextToken: a token this server could not have issued.
    """
    limit: int = body.get("MaxResults", default)
    token = body.get("NextToken")
    if token is None:
        return limit, None
    if not isinstance(token, str) or KEY_TOKEN.fullmatch(token) is None:
        raise InvalidNextToken("The specified token is not valid.")
    text = token[3:]
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = json.loads(raw)
        at = float(key[0]) if isinstance(key, list) and len(key) == 2 else math.nan
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise InvalidNextToken("The specified token is not valid.") from exc
    if (
        not isinstance(key, list)
        or len(key) != 2
        or isinstance(key[0], bool)
        or not isinstance(key[0], int | float)
        or not math.isfinite(at)
        or not isinstance(key[1], str)
        or not 0 < len(key[1]) <= MAX_KEY_ID
        or not key[1].isascii()
        or not key[1].isprintable()
    ):
        raise InvalidNextToken("The specified token is not valid.")
    return limit, (at, key[1])
