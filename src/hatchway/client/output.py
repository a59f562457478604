"""Printing API responses: ``--output json`` (the whole AWS response) or ``table``.

Timestamps arrive as epoch seconds; like the ``aws`` CLI we print them as ISO 8601 with the
UTC offset (``2026-11-29T01:06:14.123000+00:00``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

TIMESTAMP_KEYS = frozenset(
    {
        "LastPingDateTime", "RegistrationDate", "StartDate", "EndDate", "ExpirationDate",
        "CreatedDate", "CreateDate", "UpdateDate", "PasswordLastUsed", "LastUsedDate",
        "OpenedDate", "ClosedDate",
        "EventTime", "LastAttemptDate", "NextAttemptDate", "DeliveredDate",
        "CreationDate", "DeletionDate", "LastUpdatedDate",
    }
)  # fmt: skip


def iso_timestamp(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).isoformat()


def render_timestamps(data: Any) -> Any:
    """Copy of ``data`` with known timestamp members as ISO strings."""
    if isinstance(data, dict):
        return {
            k: iso_timestamp(v)
            if k in TIMESTAMP_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            else render_timestamps(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [render_timestamps(v) for v in data]
    return data


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up now: stdout may have been replaced since import
    out.write(json.dumps(render_timestamps(data), indent=4) + "\n")


def print_table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    out: TextIO | None = None,
) -> None:
    """A plain aligned table; ``columns`` are (header, key) pairs."""
    out = out or sys.stdout
    cells = [[h for h, _ in columns]]
    for row in rows:
        rendered = render_timestamps(row)
        cells.append([_cell(rendered.get(key)) for _, key in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def escape_controls(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) and bidirectional override shown
    as an escape (``\\x1b``), so values from nodes cannot drive the terminal."""
    return text.translate(_ESCAPES)


# C0 controls, DEL, C1 controls, and the Unicode bidi embeddings, overrides and isolates
# (which can reorder what a table shows).
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}


def _cell(value: Any) -> str:
    return escape_controls(_plain(value))


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return (
            ",".join(
                f"{v['Key']}={v['Value']}" if isinstance(v, dict) and "Key" in v else str(v)
                for v in value
            )
            or "-"
        )
    if isinstance(value, str) and "T" in value and value.endswith("+00:00"):
        return value[:19].replace("T", " ")
    return str(value)
