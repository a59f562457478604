"""JSON the way Go's ``encoding/json`` writes and reads it (docs/protocol.md §1.3).

Writing: compact, fields in struct order, ``None`` as ``null``, non-ASCII as raw UTF-8 and the
HTML-sensitive characters ``<``, ``>``, ``&`` (plus U+2028/U+2029) escaped as Go does, so that
our payloads are byte-identical to the Go peers' (checked against docs/protocol.md §4.5 and §7.4).

Reading: keys match exactly or else case-insensitively, as Go's decoder does; ``null`` counts as
absent; a field of the wrong JSON type is an error (Go's ``UnmarshalTypeError``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from hatchway.errors import RemoteProtocolError

__all__ = ["INT64_MAX", "INT64_MIN", "UINT32_MAX", "JsonObject", "dumps", "loads_object"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UINT32_MAX: Final = 2**32 - 1

_GO_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class _Required:
    """Marker for a field that has no default."""


REQUIRED: Final = _Required()


def dumps(value: Any) -> bytes:
    """Encode ``value`` compactly with Go's escaping rules.

    The characters Go escapes can only occur inside JSON strings, so translating the text after
    :func:`json.dumps` is safe.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.translate(_GO_ESCAPES).encode("utf-8", errors="replace")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def loads_object(data: bytes, what: str) -> JsonObject:
    """Parse ``data`` as a JSON object describing ``what``.

    Raises:
        RemoteProtocolError: not JSON, or not an object.
    """
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"{what}: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return JsonObject(value, what)


class JsonObject:
    """Typed, case-insensitive access to the members of one decoded JSON object."""

    __slots__ = ("_folded", "_raw", "what")

    def __init__(self, raw: Mapping[str, Any], what: str) -> None:
        self._raw = raw
        self._folded: dict[str, Any] | None = None
        self.what = what

    def _lookup(self, name: str) -> Any:
        if name in self._raw:
            return self._raw[name]
        if self._folded is None:
            self._folded = {}
            for key, value in self._raw.items():
                self._folded.setdefault(key.casefold(), value)
        return self._folded.get(name.casefold())

    def _fail(self, name: str, problem: str) -> NoReturn:
        raise RemoteProtocolError(f"{self.what}: field {name} {problem}")

    def _present(self, name: str, default: object) -> tuple[bool, Any]:
        value = self._lookup(name)
        if value is None:
            if default is REQUIRED:
                self._fail(name, "is missing")
            return False, default
        return True, value

    def get_str(self, name: str, default: str | _Required = REQUIRED) -> str:
        """A string member; ``null``/absent gives ``default``."""
        found, value = self._present(name, default)
        if found and not isinstance(value, str):
            self._fail(name, f"must be a string, got {type(value).__name__}")
        return str(value)

    def get_int(
        self,
        name: str,
        default: int | _Required = REQUIRED,
        *,
        low: int = INT64_MIN,
        high: int = INT64_MAX,
    ) -> int:
        """An integer member within [low, high]; ``true``/``1.5`` are rejected as Go does."""
        found, value = self._present(name, default)
        if not found:
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(name, f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            self._fail(name, f"value {value} is outside [{low}, {high}]")
        return value

    def get_bool(self, name: str, default: bool | _Required = REQUIRED) -> bool:
        """A boolean member."""
        found, value = self._present(name, default)
        if found and not isinstance(value, bool):
            self._fail(name, f"must be a boolean, got {type(value).__name__}")
        return bool(value)

    def get_dict(self, name: str, default: dict[str, Any] | _Required = REQUIRED) -> dict[str, Any]:
        """An object member, returned as a plain dict."""
        found, value = self._present(name, default)
        if found and not isinstance(value, dict):
            self._fail(name, f"must be an object, got {type(value).__name__}")
        return dict(value)

    def get_list(self, name: str) -> list[Any] | None:
        """An array member, or ``None`` when absent or ``null`` (a Go nil slice)."""
        found, value = self._present(name, None)
        if found and not isinstance(value, list):
            self._fail(name, f"must be an array, got {type(value).__name__}")
        return value if found else None

    def get_any(self, name: str) -> Any:
        """Any member, ``None`` when absent (a Go ``interface{}`` field)."""
        return self._lookup(name)
