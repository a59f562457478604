"""MaxResults / NextToken paging, shared by every Describe* operation."""

from __future__ import annotations

from typing import Any

from hatchway.errors import InvalidNextToken, ValidationError


def page_request(body: dict[str, Any], *, default: int, maximum: int) -> tuple[int, int]:
    """(limit, offset) from a request's ``MaxResults`` and ``NextToken``."""
    limit = body.get("MaxResults", default)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise ValidationError(f"MaxResults must be an integer from 1 to {maximum}")
    token = body.get("NextToken")
    if token is None:
        return limit, 0
    if not isinstance(token, str) or not token.isdigit():
        raise InvalidNextToken("NextToken is not valid")
    return limit, int(token)


def page_response(more: bool, next_offset: int) -> dict[str, Any]:
    return {"NextToken": str(next_offset)} if more else {}
