"""Live log streams at rest: log groups, one stream per session, and the streams' events.

The shapes are CloudWatch Logs' (``server.logs`` serves them under ``Logs_20140328.*``): a group
has streams, a stream has events, an event is a message with a timestamp and an ingestion time
in epoch milliseconds. Event ids grow in the order events are stored, which is the order reads
return them in (within a stream that is also their time order: a session's output is appended
as it comes).

Writes come in batches from the server's log writer (``server.logstreams``): one transaction
per batch, however many streams and events it carries, each stream's counters updated in it.
A batch for a stream that was deleted meanwhile (its group was) is skipped, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.errors import Conflict
from hatchway.store import schema as t
from hatchway.store.repositories import _Repository

__all__ = [
    "EventPage",
    "LogEvent",
    "LogGroup",
    "LogRepository",
    "LogStream",
    "StreamBatch",
    "StreamOrder",
]

#: Events deleted per statement by the retention job (short transactions, others interleave).
EXPIRE_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class LogGroup:
    group_id: int
    name: str
    created_at: float
    retention_days: int | None
    stored_bytes: int = 0


@dataclass(frozen=True, slots=True)
class LogStream:
    """One session's stream. Times of events are epoch milliseconds (``None``: no event yet)."""

    stream_id: int
    group_id: int
    name: str
    created_at: float
    ended_at: float | None
    first_event_ms: int | None
    last_event_ms: int | None
    last_ingestion_ms: int | None
    stored_bytes: int
    dropped_bytes: int
    next_sequence: int | None
    group_name: str = ""


@dataclass(frozen=True, slots=True)
class LogEvent:
    event_id: int
    stream_name: str
    timestamp_ms: int
    ingestion_ms: int
    message: str


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """What the log writer appends to one stream in one turn.

    Attributes:
        events: (timestamp in ms, message) in order.
        next_sequence: the next output frame sequence number the stream expects (kept so that
            a stream resumed after a restart skips what it already has); ``None``: unchanged.
        dropped_bytes: output that could not be stored since the last batch.
    """

    stream_id: int
    events: Sequence[tuple[int, str]] = ()
    next_sequence: int | None = None
    dropped_bytes: int = 0


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[LogEvent] = field(default_factory=list)
    more: bool = False
    """More events match past this page."""


class StreamOrder(Enum):
    NAME = "LogStreamName"
    LAST_EVENT = "LastEventTime"


class LogRepository(_Repository):
    """Groups, streams and events (see the module docstring)."""

    # ---- groups -------------------------------------------------------------------------------

    async def create_group(self, name: str, now: float) -> LogGroup:
        """Raises ``Conflict`` if a group of that name exists."""
        async with self._transaction() as conn:
            result = await conn.execute(
                insert(t.log_groups)
                .values(name=name, created_at=now)
                .returning(t.log_groups.c.group_id)
            )
            return LogGroup(result.scalar_one(), name, now, None)

    async def ensure_group(self, name: str, now: float) -> LogGroup:
        """The group ``name``, created if there is none (concurrent callers: one creates)."""
        group = await self.get_group(name)
        if group is not None:
            return group
        try:
            return await self.create_group(name, now)
        except Conflict:
            group = await self.get_group(name)
            if group is None:
                raise
            return group

    async def get_group(self, name: str) -> LogGroup | None:
        rows = await self._fetch(select(t.log_groups).where(t.log_groups.c.name == name))
        return _group(rows[0]) if rows else None

    async def list_groups(self, *, prefix: str = "", after: str = "", limit: int) -> list[LogGroup]:
        """Groups in name order, names after ``after``, with their stored bytes."""
        g, s = t.log_groups.c, t.log_streams.c
        stored = (
            select(func.coalesce(func.sum(s.stored_bytes), 0))
            .where(s.group_id == g.group_id)
            .scalar_subquery()
        )
        stmt = select(t.log_groups, stored.label("stored_bytes")).order_by(g.name).limit(limit)
        if prefix:
            stmt = stmt.where(g.name.startswith(prefix, autoescape=True))
        if after:
            stmt = stmt.where(g.name > after)
        return [_group(r) for r in await self._fetch(stmt)]

    async def delete_group(self, name: str) -> bool:
        """Delete the group with its streams and events; False if there was none."""
        async with self._transaction() as conn:
            group_id = (
                await conn.execute(
                    select(t.log_groups.c.group_id).where(t.log_groups.c.name == name)
                )
            ).scalar_one_or_none()
            if group_id is None:
                return False
            # Children first: no reliance on ON DELETE CASCADE being enforced.
            await conn.execute(delete(t.log_events).where(t.log_events.c.group_id == group_id))
            await conn.execute(delete(t.log_streams).where(t.log_streams.c.group_id == group_id))
            await conn.execute(delete(t.log_groups).where(t.log_groups.c.group_id == group_id))
            return True

    async def set_retention(self, name: str, days: int | None) -> bool:
        """Set (``None``: remove) the group's retention; False if there is no such group."""
        count = await self._write(
            update(t.log_groups).where(t.log_groups.c.name == name).values(retention_days=days)
        )
        return count > 0

    # ---- streams ------------------------------------------------------------------------------

    async def open_stream(self, group_id: int, name: str, now: float) -> LogStream:
        """The stream ``name`` of the group, created if there is none (re-opened if ended)."""
        s = t.log_streams.c
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    select(t.log_streams).where(and_(s.group_id == group_id, s.name == name))
                )
            ).first()
            if row is not None:
                await conn.execute(
                    update(t.log_streams).where(s.stream_id == row.stream_id).values(ended_at=None)
                )
                return _stream({**row._mapping, "ended_at": None})
            result = await conn.execute(
                insert(t.log_streams)
                .values(
                    group_id=group_id,
                    name=name,
                    created_at=now,
                    stored_bytes=0,
                    dropped_bytes=0,
                )
                .returning(s.stream_id)
            )
            return LogStream(
                result.scalar_one(), group_id, name, now, None, None, None, None, 0, 0, None
            )

    async def end_stream(self, stream_id: int, now: float) -> None:
        await self._write(
            update(t.log_streams).where(t.log_streams.c.stream_id == stream_id).values(ended_at=now)
        )

    async def open_streams(self) -> list[LogStream]:
        """Streams whose session had not ended (at a restart: to resume or end)."""
        s, g = t.log_streams.c, t.log_groups.c
        rows = await self._fetch(
            select(t.log_streams, g.name.label("group_name"))
            .join(t.log_groups, g.group_id == s.group_id)
            .where(s.ended_at.is_(None))
            .order_by(s.stream_id)
        )
        return [_stream(r._mapping) for r in rows]

    async def get_stream(self, group_id: int, name: str) -> LogStream | None:
        s = t.log_streams.c
        rows = await self._fetch(
            select(t.log_streams).where(and_(s.group_id == group_id, s.name == name))
        )
        return _stream(rows[0]._mapping) if rows else None

    async def list_streams(
        self,
        group_id: int,
        *,
        prefix: str = "",
        order: StreamOrder = StreamOrder.NAME,
        descending: bool = False,
        offset: int = 0,
        limit: int,
    ) -> list[LogStream]:
        s = t.log_streams.c
        if order is StreamOrder.NAME:
            keys: list[Any] = [s.name.desc() if descending else s.name]
        else:
            last = func.coalesce(s.last_event_ms, 0)
            keys = [last.desc() if descending else last, s.stream_id]
        stmt = (
            select(t.log_streams)
            .where(s.group_id == group_id)
            .order_by(*keys)
            .offset(offset)
            .limit(limit)
        )
        if prefix:
            stmt = stmt.where(s.name.startswith(prefix, autoescape=True))
        return [_stream(r._mapping) for r in await self._fetch(stmt)]

    async def stream_ids(self, group_id: int, names: Sequence[str]) -> dict[str, int]:
        s = t.log_streams.c
        rows = await self._fetch(
            select(s.name, s.stream_id).where(and_(s.group_id == group_id, s.name.in_(names)))
        )
        return {r.name: r.stream_id for r in rows}

    # ---- events -------------------------------------------------------------------------------

    async def append(self, batches: Sequence[StreamBatch], now_ms: int) -> int:
        """Store the batches in one transaction; returns the events stored.

        Batches of streams that no longer exist (their group was deleted) are skipped.
        """
        if not batches:
            return 0
        s = t.log_streams.c
        stored = 0
        async with self._transaction() as conn:
            ids = [b.stream_id for b in batches]
            rows = (
                await conn.execute(select(s.stream_id, s.group_id).where(s.stream_id.in_(ids)))
            ).all()
            groups = {r.stream_id: r.group_id for r in rows}
            values: list[dict[str, Any]] = []
            for batch in batches:
                group_id = groups.get(batch.stream_id)
                if group_id is None:
                    continue
                changes: dict[str, Any] = {}
                if batch.events:
                    size = sum(len(message.encode()) for _, message in batch.events)
                    first = min(ts for ts, _ in batch.events)
                    last = max(ts for ts, _ in batch.events)
                    changes = {
                        "first_event_ms": func.coalesce(s.first_event_ms, first),
                        "last_event_ms": func.greatest(func.coalesce(s.last_event_ms, last), last)
                        if self._db.backend != "sqlite"
                        else func.max(func.coalesce(s.last_event_ms, last), last),
                        "last_ingestion_ms": now_ms,
                        "stored_bytes": s.stored_bytes + size,
                    }
                    values.extend(
                        {
                            "group_id": group_id,
                            "stream_id": batch.stream_id,
                            "timestamp_ms": ts,
                            "ingestion_ms": now_ms,
                            "message": message,
                        }
                        for ts, message in batch.events
                    )
                if batch.next_sequence is not None:
                    changes["next_sequence"] = batch.next_sequence
                if batch.dropped_bytes:
                    changes["dropped_bytes"] = s.dropped_bytes + batch.dropped_bytes
                if changes:
                    await conn.execute(
                        update(t.log_streams).where(s.stream_id == batch.stream_id).values(changes)
                    )
            for start in range(0, len(values), 1000):
                await conn.execute(insert(t.log_events), values[start : start + 1000])
            stored = len(values)
        return stored

    async def events(
        self,
        *,
        stream_id: int,
        after: int | None = None,
        before: int | None = None,
        from_head: bool = True,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int,
        max_bytes: int,
    ) -> EventPage:
        """A page of one stream's events, oldest first.

        ``after``/``before``: only events with a greater/smaller id. ``from_head``: the page
        starts at the oldest matching event, else it ends at the newest.
        """
        e = t.log_events.c
        where: list[Any] = [e.stream_id == stream_id]
        where += _range(after, before, start_ms, end_ms)
        stmt = select(t.log_events, _literal_name("")).where(*where)
        stmt = stmt.order_by(e.event_id if from_head else e.event_id.desc()).limit(limit + 1)
        rows = await self._fetch(stmt)
        page = _page(rows, limit, max_bytes)
        if not from_head:
            page.events.reverse()
        return page

    async def filter(
        self,
        *,
        group_id: int,
        stream_ids: Sequence[int] | None = None,
        after: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        pattern: str = "",
        limit: int,
        max_bytes: int,
    ) -> EventPage:
        """A page of the group's events (of ``stream_ids`` only, if given) in id order,
        those containing ``pattern`` (case-sensitive substring) if it is not empty."""
        e, s = t.log_events.c, t.log_streams.c
        where: list[Any] = [e.group_id == group_id]
        if stream_ids is not None:
            where.append(e.stream_id.in_(list(stream_ids)))
        where += _range(after, None, start_ms, end_ms)
        if pattern:
            position = (
                func.instr(e.message, pattern)
                if self._db.backend == "sqlite"
                else func.strpos(e.message, pattern)
            )
            where.append(position > 0)
        stmt = (
            select(t.log_events, s.name.label("stream_name"))
            .join(t.log_streams, s.stream_id == e.stream_id)
            .where(*where)
            .order_by(e.event_id)
            .limit(limit + 1)
        )
        return _page(await self._fetch(stmt), limit, max_bytes)

    # ---- retention ----------------------------------------------------------------------------

    async def expire(
        self, *, default_days: int | None, now: float, chunk: int = EXPIRE_CHUNK
    ) -> dict[str, int]:
        """Delete events older than their group's retention (its own, else ``default_days``;
        neither: kept), and ended streams left with nothing in retention. Returns the events
        deleted per group name (groups with none left out)."""
        deleted: dict[str, int] = {}
        groups = await self._fetch(select(t.log_groups))
        for row in groups:
            days = row.retention_days if row.retention_days is not None else default_days
            if days is None:
                continue
            cutoff_ms = int((now - days * 86_400) * 1000)
            count = 0
            while True:
                n = await self._expire_chunk(row.group_id, cutoff_ms, chunk)
                count += n
                if n < chunk:
                    break
            s = t.log_streams.c
            await self._write(
                delete(t.log_streams).where(
                    s.group_id == row.group_id,
                    s.ended_at.is_not(None),
                    s.ended_at * 1000 < cutoff_ms,
                    or_(s.last_event_ms.is_(None), s.last_event_ms < cutoff_ms),
                    ~select(t.log_events.c.event_id)
                    .where(t.log_events.c.stream_id == s.stream_id)
                    .exists(),
                )
            )
            if count:
                deleted[row.name] = count
        return deleted

    async def _expire_chunk(self, group_id: int, cutoff_ms: int, chunk: int) -> int:
        async with self._transaction() as conn:
            return await _delete_oldest(conn, group_id, cutoff_ms, chunk)


async def _delete_oldest(conn: AsyncConnection, group_id: int, cutoff_ms: int, chunk: int) -> int:
    e = t.log_events.c
    ids = (
        select(e.event_id)
        .where(e.group_id == group_id, e.timestamp_ms < cutoff_ms)
        .order_by(e.timestamp_ms)
        .limit(chunk)
        .scalar_subquery()
    )
    result = await conn.execute(delete(t.log_events).where(e.event_id.in_(ids)))
    return int(result.rowcount or 0)


def _range(
    after: int | None, before: int | None, start_ms: int | None, end_ms: int | None
) -> list[Any]:
    e = t.log_events.c
    where: list[Any] = []
    if after is not None:
        where.append(e.event_id > after)
    if before is not None:
        where.append(e.event_id < before)
    if start_ms is not None:
        where.append(e.timestamp_ms >= start_ms)
    if end_ms is not None:
        where.append(e.timestamp_ms <= end_ms)
    return where


def _literal_name(name: str) -> Any:
    return literal(name).label("stream_name")


def _page(rows: Sequence[Any], limit: int, max_bytes: int) -> EventPage:
    """The rows as events, cut at ``limit`` events or ``max_bytes`` of messages (at least
    one event)."""
    events: list[LogEvent] = []
    size = 0
    for row in rows[:limit]:
        size += len(row.message.encode())
        if events and size > max_bytes:
            return EventPage(events, True)
        events.append(
            LogEvent(row.event_id, row.stream_name, row.timestamp_ms, row.ingestion_ms, row.message)
        )
    return EventPage(events, len(rows) > limit)


def _group(row: Any) -> LogGroup:
    m = row._mapping
    return LogGroup(
        m["group_id"],
        m["name"],
        m["created_at"],
        m["retention_days"],
        int(m.get("stored_bytes", 0)),
    )


def _stream(m: Any) -> LogStream:
    return LogStream(
        stream_id=m["stream_id"],
        group_id=m["group_id"],
        name=m["name"],
        created_at=m["created_at"],
        ended_at=m["ended_at"],
        first_event_ms=m["first_event_ms"],
        last_event_ms=m["last_event_ms"],
        last_ingestion_ms=m["last_ingestion_ms"],
        stored_bytes=m["stored_bytes"],
        dropped_bytes=m["dropped_bytes"],
        next_sequence=m["next_sequence"],
        group_name=m.get("group_name", ""),
    )
