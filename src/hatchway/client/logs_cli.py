"""``hatchway logs …``: sessions' live output in log groups (CloudWatch Logs' API).

* ``logs groups``: DescribeLogGroups, every page.
* ``logs get --group G --session ID``: GetLogEvents from the head of the session's stream,
  following ``nextForwardToken`` until it comes back unchanged.
* ``logs tail --group G [--session ID] [--since 10m] [--follow]``: FilterLogEvents from
  ``--since`` ago; ``--follow`` then asks every second for the events after the last one seen
  (``nextToken`` ``e/<eventId>``, docs in ``server.logs``) until Ctrl-C, which exits 0.

Messages are written to stdout as they are, ANSI sequences included, so the output of one
session comes out as its terminal showed it; ``--strip-ansi`` removes the control sequences
(``client.ansi``, incrementally per stream, so a sequence cut between two events still goes).
Without ``--session``, ``tail`` prefixes each event with its stream (session id) and ends it
with a newline, since several sessions' output interleaves.

The CLI (``hatchway.cli``) loads this module only when ``hatchway logs`` is run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final

import click

from hatchway.client.ansi import AnsiStripper
from hatchway.errors import ConfigError

__all__ = ["SERVICE", "EventPrinter", "filter_pages", "logs", "parse_since", "stream_events"]

SERVICE: Final = "Logs_20140328"
#: Seconds between two polls of ``tail --follow``.
POLL_INTERVAL: Final = 1.0
#: Pages GetLogEvents is followed for at most (a guard against a server that never says "end").
MAX_PAGES: Final = 1_000_000

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """``--since``: a number with a unit (``30s``, ``10m``, ``2h``, ``7d``, ``1w``) → seconds.

    Raises:
        ConfigError: anything else.
    """
    unit = text[-1:].lower()
    number = text[:-1] if unit in _UNITS else text
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not 0 <= value <= 10 * 365 * 86400 or value != value:
        raise ConfigError(f"--since must be a duration like 30s, 10m, 2h or 7d, not {text!r}")
    return value * _UNITS[unit]


class EventPrinter:
    """Writes events to ``out``: raw messages, ANSI stripped on request, optionally each
    prefixed with its stream and ended with a newline."""

    def __init__(self, out: BinaryIO, *, strip_ansi: bool, prefix_stream: bool) -> None:
        self._out = out
        self._strip = strip_ansi
        self._prefix = prefix_stream
        self._strippers: dict[str, AnsiStripper] = {}

    def print(self, event: dict[str, Any], stream: str = "") -> None:
        stream = str(event.get("logStreamName", stream))
        message = str(event.get("message", ""))
        if self._strip:
            message = self._strippers.setdefault(stream, AnsiStripper()).feed(message)
        if self._prefix:
            message = f"{stream} {message}"
            if not message.endswith("\n"):
                message += "\n"
        self._out.write(message.encode("utf-8", "replace"))

    def flush(self) -> None:
        self._out.flush()


def stream_events(api: Any, group: str, session: str) -> Iterator[dict[str, Any]]:
    """Every event of the session's stream, oldest first."""
    body: dict[str, Any] = {"logGroupName": group, "logStreamName": session, "startFromHead": True}
    for _ in range(MAX_PAGES):
        result = api.call("GetLogEvents", dict(body), service=SERVICE)
        yield from result.get("events", [])
        token = result.get("nextForwardToken")
        if not token or token == body.get("nextToken"):
            return
        body["nextToken"] = token


def filter_pages(api: Any, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events of FilterLogEvents, following ``nextToken`` to the end."""
    body = dict(body)
    while True:
        result = api.call("FilterLogEvents", dict(body), service=SERVICE)
        yield from result.get("events", [])
        token = result.get("nextToken")
        if not token:
            return
        body["nextToken"] = token


def _api(ctx: click.Context) -> Any:
    from hatchway.client.config import open_api

    return open_api(ctx.obj["config"], ctx.obj["profile"])


@click.group()
def logs() -> None:
    """Sessions' output, live, in log groups (CloudWatch Logs' API)."""


@logs.command("groups")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def groups(ctx: click.Context, output: str) -> None:
    """List the log groups (DescribeLogGroups)."""
    from hatchway.client.output import print_json, print_table

    api = _api(ctx)
    found: list[dict[str, Any]] = []
    body: dict[str, Any] = {}
    while True:
        result = api.call("DescribeLogGroups", body, service=SERVICE)
        found.extend(result.get("logGroups", []))
        if not result.get("nextToken"):
            break
        body["nextToken"] = result["nextToken"]
    if output == "json":
        print_json({"logGroups": found})
        return
    rows = [
        {
            **g,
            "retention": g.get("retentionInDays", "never expire"),
            "created": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(g.get("creationTime", 0)) / 1000)
            ),
        }
        for g in found
    ]
    print_table(
        rows,
        [
            ("NAME", "logGroupName"),
            ("CREATED", "created"),
            ("RETENTION (DAYS)", "retention"),
            ("STORED BYTES", "storedBytes"),
        ],
    )


@logs.command("get")
@click.option("--group", required=True, metavar="G", help="The log group.")
@click.option("--session", required=True, metavar="ID", help="The session (its stream).")
@click.option("--strip-ansi", is_flag=True, help="Remove terminal control sequences.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def get(ctx: click.Context, group: str, session: str, strip_ansi: bool, output: str) -> None:
    """Print a session's whole stream (GetLogEvents)."""
    api = _api(ctx)
    if output == "json":
        from hatchway.client.output import print_json

        events = list(stream_events(api, group, session))
        if strip_ansi:
            stripper = AnsiStripper()
            events = [{**e, "message": stripper.feed(str(e.get("message", "")))} for e in events]
        print_json({"events": events})
        return
    printer = EventPrinter(sys.stdout.buffer, strip_ansi=strip_ansi, prefix_stream=False)
    for event in stream_events(api, group, session):
        printer.print(event, session)
    printer.flush()


@logs.command("tail")
@click.option("--group", required=True, metavar="G", help="The log group.")
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--session", metavar="ID", help="Only this session's stream.")
@click.option("--strip-ansi", is_flag=True, help="Remove terminal control sequences.")
@click.option("--since", default="10m", show_default=True, help="How far back to start.")
@click.pass_context
def tail(
    ctx: click.Context,
    group: str,
    follow: bool,
    session: str | None,
    strip_ansi: bool,
    since: str,
) -> None:
    """Print the group's recent events (FilterLogEvents); --follow keeps going."""
    start = parse_since(since)
    api = _api(ctx)
    printer = EventPrinter(sys.stdout.buffer, strip_ansi=strip_ansi, prefix_stream=session is None)
    try:
        follow_events(api, group, session, start, printer, follow=follow)
    except KeyboardInterrupt:
        printer.flush()
        sys.exit(0)


def follow_events(
    api: Any,
    group: str,
    session: str | None,
    since: float,
    printer: EventPrinter,
    *,
    follow: bool,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    polls: int | None = None,
) -> None:
    """Print the events from ``since`` seconds ago; with ``follow``, poll for newer ones every
    :data:`POLL_INTERVAL` seconds (``polls`` of them, for tests; ``None``: until interrupted)."""
    body: dict[str, Any] = {
        "logGroupName": group,
        "startTime": max(0, int((clock() - since) * 1000)),
    }
    if session is not None:
        body["logStreamNames"] = [session]
    last: str | None = None
    done = 0
    while True:
        query = dict(body)
        if last is not None:
            query["nextToken"] = f"e/{last}"
        for event in filter_pages(api, query):
            printer.print(event, session or "")
            last = str(event.get("eventId", last))
        printer.flush()
        if not follow or (polls is not None and done >= polls):
            return
        done += 1
        sleep(POLL_INTERVAL)
