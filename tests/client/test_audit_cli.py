"""``hatchway audit``: time options, the LookupEvents request, exports and offline verification."""

from __future__ import annotations

import io
import json

import click
import pytest

from hatchway.audit.chain import GENESIS, link
from hatchway.client.audit_cli import export_record, lookup_request, parse_when, verify_export
from hatchway.errors import ConfigError, RemoteProtocolError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - 1800),
        ("1h", NOW - 3600),
        ("2d", NOW - 2 * 86400),
        ("1w", NOW - 7 * 86400),
        ("45s", NOW - 45),
        ("2026-11-30T12:00:00Z", 1_796_040_000.0),
        ("2026-11-30T13:00:00+01:00", 1_796_040_000.0),
        ("2026-11-30T12:00:00", 1_796_040_000.0),  # no offset: UTC
        ("2026-11-30", 1_795_996_800.0),
    ],
)
def test_since_and_until_take_iso_times_and_ages(text: str, expected: float) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "", "1.5h"])
def test_other_times_are_refused_clearly(text: str) -> None:
    with pytest.raises(click.BadParameter, match="neither an ISO 8601 time"):
        parse_when(text, NOW)


def test_the_filters_become_lookup_attributes() -> None:
    assert lookup_request(None, None, None, None, None) == {}
    assert lookup_request(
        1.0, 2.0, "arn:aws:iam::123456789012:user/dev", "ssm:StartSession", "mi-0123"
    ) == {
        "LookupAttributes": [
            {"AttributeKey": "Username", "AttributeValue": "dev"},
            {"AttributeKey": "EventName", "AttributeValue": "StartSession"},
            {"AttributeKey": "ResourceName", "AttributeValue": "mi-0123"},
        ],
        "StartTime": 1.0,
        "EndTime": 2.0,
    }
    with pytest.raises(ConfigError, match="--since is after --until"):
        lookup_request(2.0, 1.0, None, None, None)


def lookup_event(sequence: int, previous: str, event: dict[str, object]) -> dict[str, object]:
    record = link(sequence, previous, event)
    chain = {"sequence": sequence, "previousHash": previous, "hash": record.hash}
    return {"EventId": "e", "CloudTrailEvent": json.dumps({**event, "hatchwayChain": chain})}


def test_an_export_round_trips_and_verifies() -> None:
    first = lookup_event(1, GENESIS, {"eventId": "a", "n": 1.5})
    first_hash = json.loads(str(first["CloudTrailEvent"]))["hatchwayChain"]["hash"]
    second = lookup_event(2, first_hash, {"eventId": "b", "é": "ü"})
    lines = "".join(json.dumps(export_record(e)) + "\n" for e in (first, second))
    verdict = verify_export(io.StringIO(lines))
    assert verdict.intact and verdict.records == 2
    # A segment (not from record 1) verifies on its own links.
    assert verify_export(io.StringIO(lines.splitlines(keepends=True)[1])).intact
    # Reordered lines are named.
    swapped = "".join(reversed(lines.splitlines(keepends=True)))
    broken = verify_export(io.StringIO(swapped))
    assert not broken.intact


def test_a_bad_export_line_or_event_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="line 2 of the export is not a record"):
        verify_export(
            io.StringIO('{"sequence": 1, "previousHash": "", "event": {}, "hash": ""}\n[]\n')
        )
    with pytest.raises(ConfigError, match="line 1"):
        verify_export(io.StringIO("not json\n"))
    with pytest.raises(RemoteProtocolError, match="no chained record"):
        export_record({"EventId": "x", "CloudTrailEvent": "{}"})
