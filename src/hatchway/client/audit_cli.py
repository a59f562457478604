"""``hatchway audit …``: the audit trail — list, export and verify.

* ``list`` pages ``Hatchway.LookupEvents`` (newest first) and prints a table, or with
  ``--output json`` the whole response (every page's ``Events`` merged), as ``aws cloudtrail
  lookup-events`` does.
* ``export --format jsonl`` writes the matching records oldest first, one JSON object per
  line: ``{"sequence", "previousHash", "event", "hash"}``, everything needed to recompute each
  hash. An export of the whole trail can be verified later, anywhere, with ``verify --file``.
* ``verify`` asks the server to verify the chain in its database (``Hatchway.VerifyAuditTrail``:
  every record's hash, every link, the columns kept for lookups, and the end against the
  chain's head), or with ``--file`` verifies an export here, with no server. It prints one
  line and exits 0 when the chain is intact, 1 naming the first bad record otherwise.

``--since``/``--until`` take ISO 8601 times (``2026-11-30T12:00:00Z``; without an offset, UTC)
or an age: ``30m``, ``1h``, ``2d`` (``s``, ``m``, ``h``, ``d``, ``w``) before now.

The CLI (``hatchway.cli``) loads this module only when ``hatchway audit`` is run.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from hatchway.audit.chain import ChainedRecord, Verdict, verify
from hatchway.errors import ConfigError, RemoteProtocolError

__all__ = ["audit", "parse_when"]

SERVICE = "Hatchway"
PAGE = 1000
AGE = re.compile(r"([0-9]+)([smhdw])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ANCHOR = re.compile(r"([0-9]+):([0-9a-f]{64})")
COLUMNS = (
    ("TIME", "time"),
    ("EVENT", "EventName"),
    ("USER", "Username"),
    ("SOURCE IP", "source"),
    ("RESOURCES", "resources"),
    ("OUTCOME", "outcome"),
)


def parse_when(text: str, now: float) -> float:
    """``--since``/``--until``: an ISO 8601 time or an age before ``now`` (``90m``, ``2d``).

    Raises:
        click.BadParameter: neither.
    """
    age = AGE.fullmatch(text.strip())
    if age is not None:
        return now - int(age.group(1)) * UNITS[age.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-11-30T12:00:00Z) nor an age (30m, 1h, 2d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class _When(click.ParamType):
    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_when(str(value), time.time())
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


WHEN = _When()


def _filters(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--since", type=WHEN, help="Events at or after (ISO 8601, or 30m, 2d)."),
            click.option("--until", type=WHEN, help="Events at or before (ISO 8601, or 1h)."),
            click.option("--user", help="User name (or ARN), or a node id."),
            click.option("--action", help="Event or action name: StartSession, ssm:StartSession."),
            click.option("--resource", help="Resource name or ARN: mi-…, a session id, a user."),
        ]
    ):
        func = option(func)
    return func


def lookup_request(
    since: float | None,
    until: float | None,
    user: str | None,
    action: str | None,
    resource: str | None,
) -> dict[str, Any]:
    """The LookupEvents request of the filter options."""
    attributes = []
    if user:
        attributes.append({"AttributeKey": "Username", "AttributeValue": _user_name(user)})
    if action:
        attributes.append(
            {"AttributeKey": "EventName", "AttributeValue": action.rpartition(":")[2]}
        )
    if resource:
        attributes.append({"AttributeKey": "ResourceName", "AttributeValue": resource})
    body: dict[str, Any] = {}
    if attributes:
        body["LookupAttributes"] = attributes
    if since is not None:
        body["StartTime"] = since
    if until is not None:
        body["EndTime"] = until
    if since is not None and until is not None and since > until:
        raise ConfigError("--since is after --until")
    return body


def _user_name(user: str) -> str:
    return user.rpartition(":user/")[2].rpartition("/")[2] if ":user/" in user else user


def lookup_pages(api: Any, body: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
    """Events of every page (newest first), at most ``limit``.

    Raises:
        RemoteProtocolError: the server sent the same token twice (it would never end).
    """
    seen: set[str] = set()
    request = dict(body)
    count = 0
    while True:
        page = api.call("LookupEvents", {**request, "MaxResults": PAGE}, service=SERVICE)
        for event in page.get("Events") or []:
            if limit is not None and count >= limit:
                return
            count += 1
            yield event
        token = page.get("NextToken")
        if not token:
            return
        if token in seen:
            raise RemoteProtocolError(f"LookupEvents: the server repeated the token {token!r}")
        seen.add(token)
        request = {**body, "NextToken": token}


@click.group()
def audit() -> None:
    """The audit trail: every API call, denial, session and node change (hash-chained)."""


@audit.command("list")
@_filters
@click.option("--max-items", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def audit_list(
    ctx: click.Context,
    since: float | None,
    until: float | None,
    user: str | None,
    action: str | None,
    resource: str | None,
    max_items: int,
    output: str,
) -> None:
    """Audit events, newest first (Hatchway.LookupEvents)."""
    from hatchway.client.config import open_api
    from hatchway.client.output import print_json, print_table

    api = open_api(ctx.obj["config"], ctx.obj["profile"])
    body = lookup_request(since, until, user, action, resource)
    events = list(lookup_pages(api, body, max_items + 1))
    if len(events) > max_items:
        events = events[:max_items]
        click.echo(f"(showing the newest {max_items} events: see --max-items)", err=True)
    if output == "json":
        print_json({"Events": events})
    else:
        print_table([_row(e) for e in events], COLUMNS)


def _row(event: dict[str, Any]) -> dict[str, Any]:
    try:
        full = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        full = {}
    decision = (full.get("decision") or {}).get("outcome", "")
    outcome = full.get("errorCode") or decision or "ok"
    return {
        "time": full.get("eventTime", ""),
        "EventName": event.get("EventName", ""),
        "Username": event.get("Username", ""),
        "source": full.get("sourceIPAddress", ""),
        "resources": ",".join(r.get("ResourceName", "") for r in event.get("Resources") or []),
        "outcome": outcome,
    }


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@_filters
@click.pass_context
def audit_export(
    ctx: click.Context,
    fmt: str,
    since: float | None,
    until: float | None,
    user: str | None,
    action: str | None,
    resource: str | None,
) -> None:
    """Write the records, oldest first, one JSON object per line, to stdout."""
    from hatchway.client.config import open_api

    api = open_api(ctx.obj["config"], ctx.obj["profile"])
    body = lookup_request(since, until, user, action, resource)
    records = [export_record(e) for e in lookup_pages(api, body, None)]
    records.reverse()
    out = sys.stdout
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    click.echo(f"exported {len(records)} records", err=True)


def export_record(event: dict[str, Any]) -> dict[str, Any]:
    """A LookupEvents event as an export line (the chained record with its hash).

    Raises:
        RemoteProtocolError: the event carries no chained record.
    """
    try:
        full = json.loads(event["CloudTrailEvent"])
        chain = full.pop("hatchwayChain")
        record = ChainedRecord(chain["sequence"], chain["previousHash"], full, chain["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(
            f"event {event.get('EventId', '?')} has no chained record ({exc.__class__.__name__})"
        ) from exc
    return record.to_json()


@audit.command("verify")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Verify this export (jsonl) here instead of the server's trail.",
)
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="SEQUENCE:HASH",
    help="A record's hash kept elsewhere earlier (a head this command printed).",
)
@click.pass_context
def audit_verify(ctx: click.Context, file: Path | None, anchors: tuple[str, ...]) -> None:
    """Verify the hash chain; exits 1 naming the first record changed, removed or moved."""
    anchored = dict(_anchor(a) for a in anchors)
    if file is not None:
        with file.open(encoding="utf-8") as f:
            verdict = verify_export(f, anchored)
        _report(verdict.intact, verdict.summary())
        return
    from hatchway.client.config import open_api

    api = open_api(ctx.obj["config"], ctx.obj["profile"])
    body: dict[str, Any] = {}
    if anchored:
        body["Anchors"] = [{"Sequence": s, "Hash": h} for s, h in anchored.items()]
    answer = api.call("VerifyAuditTrail", body, service=SERVICE)
    _report(bool(answer.get("Intact")), str(answer.get("Summary", "")))


def _anchor(text: str) -> tuple[int, str]:
    match = ANCHOR.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(
            f"{text!r}: expected SEQUENCE:HASH (a number, a colon, 64 hex digits)",
            param_hint="--anchor",
        )
    return int(match.group(1)), match.group(2)


def _report(intact: bool, summary: str) -> None:
    if intact:
        click.echo(summary)
        return
    click.echo(f"hatchway: {summary}", err=True)
    sys.exit(1)


def verify_export(lines: TextIO, anchors: dict[int, str] | None = None) -> Verdict:
    """Verify an export: a whole trail if it starts at record 1, else a segment (its first
    record's link to the one before cannot be checked without that record).

    Raises:
        ConfigError: a line that is not a record.
    """
    records: list[ChainedRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(ChainedRecord.from_json(json.loads(line)))
        except ValueError as exc:
            raise ConfigError(f"line {number} of the export is not a record: {exc}") from exc
    start = 1 if records and records[0].sequence == 1 else None
    return verify(records, start=start, anchors=anchors)
