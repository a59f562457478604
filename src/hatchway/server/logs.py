"""The log groups API, shaped like CloudWatch Logs (``X-Amz-Target: Logs_20140328.<Op>``).

Served: CreateLogGroup, DescribeLogGroups, DeleteLogGroup, PutRetentionPolicy,
DeleteRetentionPolicy, DescribeLogStreams, GetLogEvents and FilterLogEvents, with CloudWatch
Logs' request and response shapes and error types, so ``boto3.client("logs")`` works. Streams
are written by the server only (one per streamed session, ``server.logstreams``); there is no
PutLogEvents.

Where Hatchway differs, deliberately:

* ``filterPattern`` is a plain, case-sensitive substring (one pair of surrounding double
  quotes, CloudWatch's quoting of a phrase, is removed), not CloudWatch's pattern language.
* Events are returned in the order they were stored (by event id); within one stream that is
  their time order. FilterLogEvents' ``nextToken`` is ``e/<eventId>``: "the matching events
  after this one"; ``hatchway logs tail --follow`` polls with it.
* GetLogEvents' tokens are ``f/<eventId>`` (the events after it) and ``b/<eventId>`` (the
  events before it). At the end of a stream the forward token it returns is the one it was
  given, as CloudWatch does.
* ``kmsKeyId``, ``tags`` and the INFREQUENT_ACCESS class are refused rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from hatchway.errors import (
    Conflict,
    InvalidParameter,
    ResourceAlreadyExists,
    ResourceNotFound,
)
from hatchway.server.logstreams import LogStreamService
from hatchway.server.principal import Principal
from hatchway.store.logs import EventPage, LogGroup, LogStream, StreamOrder
from hatchway.store.store import Store

__all__ = [
    "LOGS",
    "RETENTION_DAYS",
    "LogService",
    "check_group_name",
    "group_name_of",
]

LOGS: Final = "Logs_20140328"
"""The target prefix of CloudWatch Logs' operations (its SigV4 service is ``logs``)."""

#: The retention periods CloudWatch Logs accepts (PutRetentionPolicy).
RETENTION_DAYS: Final = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
     2922, 3288, 3653}
)  # fmt: skip
#: Events and bytes of messages one GetLogEvents/FilterLogEvents answers with at most.
MAX_EVENTS: Final = 10_000
MAX_BYTES: Final = 1024 * 1024
DESCRIBE_LIMIT: Final = 50

# The model's patterns are searched for, not matched whole: these are checked whole.
_GROUP_NAME = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}")
_STREAM_NAME = re.compile(r"[^:*]{1,512}")
_EVENT_TOKEN = re.compile(r"([fbe])/([0-9]{1,18})")
_OFFSET_TOKEN = re.compile(r"s/([0-9]{1,9})")

Handler = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


def check_group_name(name: str, *, what: str = "logGroupName") -> str:
    """``name`` if it is a valid log group name (CloudWatch's rules).

    Raises:
        InvalidParameter: it is not.
    """
    if _GROUP_NAME.fullmatch(name) is None:
        raise InvalidParameter(
            f"{what} must be 1 to 512 characters of a-z, A-Z, 0-9, '.', '-', '_', '/' and '#'"
        )
    return name


def group_name_of(body: dict[str, Any]) -> str:
    """The log group a request names: ``logGroupName``, or ``logGroupIdentifier`` (a name or
    a log group ARN).

    Raises:
        InvalidParameter: neither, both, or not a valid name.
    """
    name = body.get("logGroupName")
    identifier = body.get("logGroupIdentifier")
    if name is not None and identifier is not None:
        raise InvalidParameter("give logGroupName or logGroupIdentifier, not both")
    if name is None:
        if identifier is None:
            raise InvalidParameter("logGroupName or logGroupIdentifier is required")
        name = identifier
        if identifier.startswith("arn:"):
            _, sep, rest = identifier.partition(":log-group:")
            if not sep:
                raise InvalidParameter("logGroupIdentifier is not a log group ARN")
            name = rest.removesuffix(":*")
        return check_group_name(name, what="logGroupIdentifier")
    return check_group_name(name)


class LogService:
    """The ``Logs_20140328.*`` operations over ``store.logs``.

    Args:
        streams: the live streams (a deleted group's live streams stop).
        arn_prefix: ``arn:aws:logs:<region>:<account>:log-group:``.
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        arn_prefix: str,
        streams: LogStreamService | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._arn = arn_prefix
        self._streams = streams

    def operations(self) -> dict[str, Handler]:
        return {
            "CreateLogGroup": self.create_log_group,
            "DescribeLogGroups": self.describe_log_groups,
            "DeleteLogGroup": self.delete_log_group,
            "PutRetentionPolicy": self.put_retention_policy,
            "DeleteRetentionPolicy": self.delete_retention_policy,
            "DescribeLogStreams": self.describe_log_streams,
            "GetLogEvents": self.get_log_events,
            "FilterLogEvents": self.filter_log_events,
        }

    # ---- groups -------------------------------------------------------------------------------

    async def create_log_group(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name = check_group_name(body["logGroupName"])
        for member in ("kmsKeyId", "tags"):
            if body.get(member):
                raise InvalidParameter(f"Hatchway log groups do not support {member}")
        if body.get("logGroupClass", "STANDARD") != "STANDARD":
            raise InvalidParameter("Hatchway log groups are of the STANDARD class only")
        if body.get("deletionProtectionEnabled"):
            raise InvalidParameter("Hatchway log groups do not support deletion protection")
        try:
            await self._store.logs.create_group(name, self._clock())
        except Conflict as exc:
            raise ResourceAlreadyExists("The specified log group already exists") from exc
        return {}

    async def describe_log_groups(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        for member in ("logGroupNamePattern", "logGroupIdentifiers", "accountIdentifiers"):
            if body.get(member):
                raise InvalidParameter(f"Hatchway does not support {member}")
        limit = int(body.get("limit", DESCRIBE_LIMIT))
        prefix = body.get("logGroupNamePrefix", "")
        after = ""
        token = body.get("nextToken")
        if token is not None:
            if not token.startswith("g/") or _GROUP_NAME.fullmatch(token[2:]) is None:
                raise InvalidParameter("The specified nextToken is invalid.")
            after = token[2:]
        groups = await self._store.logs.list_groups(prefix=prefix, after=after, limit=limit + 1)
        out: dict[str, Any] = {"logGroups": [self._group(g) for g in groups[:limit]]}
        if len(groups) > limit:
            out["nextToken"] = "g/" + groups[limit - 1].name
        return out

    async def delete_log_group(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name = check_group_name(body["logGroupName"])
        if self._streams is not None:
            self._streams.forget_group(name)
        if not await self._store.logs.delete_group(name):
            raise ResourceNotFound("The specified log group does not exist.")
        return {}

    async def put_retention_policy(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name = check_group_name(body["logGroupName"])
        days = body["retentionInDays"]
        if days not in RETENTION_DAYS:
            allowed = ", ".join(str(d) for d in sorted(RETENTION_DAYS))
            raise InvalidParameter(f"retentionInDays must be one of {allowed}")
        if not await self._store.logs.set_retention(name, days):
            raise ResourceNotFound("The specified log group does not exist.")
        return {}

    async def delete_retention_policy(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name = check_group_name(body["logGroupName"])
        if not await self._store.logs.set_retention(name, None):
            raise ResourceNotFound("The specified log group does not exist.")
        return {}

    # ---- streams ------------------------------------------------------------------------------

    async def describe_log_streams(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group_of(body)
        order = StreamOrder(body.get("orderBy", StreamOrder.NAME.value))
        prefix = body.get("logStreamNamePrefix", "")
        if prefix and order is StreamOrder.LAST_EVENT:
            raise InvalidParameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix."
            )  # as CloudWatch Logs
        limit = int(body.get("limit", DESCRIBE_LIMIT))
        offset = _offset(body.get("nextToken"))
        streams = await self._store.logs.list_streams(
            group.group_id,
            prefix=prefix,
            order=order,
            descending=bool(body.get("descending", False)),
            offset=offset,
            limit=limit + 1,
        )
        out: dict[str, Any] = {"logStreams": [self._stream(group, s) for s in streams[:limit]]}
        if len(streams) > limit:
            out["nextToken"] = f"s/{offset + limit}"
        return out

    # ---- events -------------------------------------------------------------------------------

    async def get_log_events(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group_of(body)
        name = _stream_name(body["logStreamName"])
        stream = await self._store.logs.get_stream(group.group_id, name)
        if stream is None:
            raise ResourceNotFound("The specified log stream does not exist.")
        limit = int(body.get("limit", MAX_EVENTS))
        after = before = None
        from_head = bool(body.get("startFromHead", False))
        token = body.get("nextToken")
        if token is not None:
            kind, position = _event_token(token, "fb")
            if kind == "f":
                after, from_head = position, True
            else:
                before, from_head = position, False
        page = await self._store.logs.events(
            stream_id=stream.stream_id,
            after=after,
            before=before,
            from_head=from_head,
            start_ms=body.get("startTime"),
            end_ms=body.get("endTime"),
            limit=limit,
            max_bytes=MAX_BYTES,
        )
        events = page.events
        if events:
            forward, backward = f"f/{events[-1].event_id}", f"b/{events[0].event_id}"
        elif before is not None:
            forward, backward = f"f/{before - 1}", str(token)
        else:  # the end: the same forward token again (how callers know they are there)
            forward = str(token) if token is not None else "f/0"
            backward = f"b/{(after or 0) + 1}"
        return {
            "events": [
                {"timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.ingestion_ms}
                for e in events
            ],
            "nextForwardToken": forward,
            "nextBackwardToken": backward,
        }

    async def filter_log_events(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        group = await self._group_of(body)
        names = body.get("logStreamNames")
        prefix = body.get("logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise InvalidParameter("give logStreamNames or logStreamNamePrefix, not both")
        stream_ids: list[int] | None = None
        if names is not None:
            ids = await self._store.logs.stream_ids(
                group.group_id, [_stream_name(n) for n in names]
            )
            stream_ids = list(ids.values())
        elif prefix is not None:
            streams = await self._store.logs.list_streams(
                group.group_id, prefix=prefix, limit=MAX_EVENTS
            )
            stream_ids = [s.stream_id for s in streams]
        after = None
        token = body.get("nextToken")
        if token is not None:
            after = _event_token(token, "e")[1]
        page = EventPage()
        if stream_ids is None or stream_ids:
            page = await self._store.logs.filter(
                group_id=group.group_id,
                stream_ids=stream_ids,
                after=after,
                start_ms=body.get("startTime"),
                end_ms=body.get("endTime"),
                pattern=_pattern(body.get("filterPattern", "")),
                limit=int(body.get("limit", MAX_EVENTS)),
                max_bytes=MAX_BYTES,
            )
        out: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": e.stream_name,
                    "timestamp": e.timestamp_ms,
                    "message": e.message,
                    "ingestionTime": e.ingestion_ms,
                    "eventId": str(e.event_id),
                }
                for e in page.events
            ],
            "searchedLogStreams": [],
        }
        if page.more and page.events:
            out["nextToken"] = f"e/{page.events[-1].event_id}"
        return out

    # ---- shapes -------------------------------------------------------------------------------

    async def _group_of(self, body: dict[str, Any]) -> LogGroup:
        group = await self._store.logs.get_group(group_name_of(body))
        if group is None:
            raise ResourceNotFound("The specified log group does not exist.")
        return group

    def _group(self, group: LogGroup) -> dict[str, Any]:
        arn = self._arn + group.name
        out: dict[str, Any] = {
            "logGroupName": group.name,
            "creationTime": round(group.created_at * 1000),
            "metricFilterCount": 0,
            "arn": arn + ":*",
            "storedBytes": group.stored_bytes,
            "logGroupClass": "STANDARD",
            "logGroupArn": arn,
        }
        if group.retention_days is not None:
            out["retentionInDays"] = group.retention_days
        return out

    def _stream(self, group: LogGroup, stream: LogStream) -> dict[str, Any]:
        out: dict[str, Any] = {
            "logStreamName": stream.name,
            "creationTime": round(stream.created_at * 1000),
            "arn": f"{self._arn}{group.name}:log-stream:{stream.name}",
            "storedBytes": stream.stored_bytes,
        }
        for member, value in (
            ("firstEventTimestamp", stream.first_event_ms),
            ("lastEventTimestamp", stream.last_event_ms),
            ("lastIngestionTime", stream.last_ingestion_ms),
        ):
            if value is not None:
                out[member] = value
        return out


def _stream_name(name: str) -> str:
    if _STREAM_NAME.fullmatch(name) is None:
        raise InvalidParameter("a log stream name is 1 to 512 characters, without ':' or '*'")
    return name


def _event_token(token: str, kinds: str) -> tuple[str, int]:
    match = _EVENT_TOKEN.fullmatch(token)
    if match is None or match.group(1) not in kinds:
        raise InvalidParameter("The specified nextToken is invalid.")
    return match.group(1), int(match.group(2))


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    match = _OFFSET_TOKEN.fullmatch(token)
    if match is None:
        raise InvalidParameter("The specified nextToken is invalid.")
    return int(match.group(1))


def _pattern(text: str) -> str:
    """The substring a ``filterPattern`` looks for: one pair of surrounding quotes removed."""
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    return text
