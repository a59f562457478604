"""The audit trail's storage: appending records to the hash chain, and reading them back.

**Same transaction as the change.** An audit record of a change is written in the transaction
of that change, so neither commits without the other. Two ways lead there, both through the
database's commit hook (:class:`AuditHook`, run at the end of every write transaction):

* :func:`stage` — a repository method adds the records of its own change (a session's status, a
  node's registration) to its transaction;
* :func:`pending_call` — the API edge declares the event of the call it is handling; the first
  write transaction of that request's task that commits records it. A call that writes nothing
  (a read, a refusal, a failure before any change) is recorded by the edge in a transaction of
  its own (:meth:`AuditRepository.append`).

**Linear under concurrency.** Appending first updates the chain's head row (``audit_chain``),
which takes that row's lock on PostgreSQL (other replicas' appends wait for this transaction)
and SQLite's write lock, then links the records after the head it read. The head row is
updated last in every transaction that appends, after the change's own statements, so a
transaction holding it never waits for another's row locks (no deadlock).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.audit.chain import GENESIS, ChainedRecord, link
from hatchway.audit.events import AuditEvent
from hatchway.errors import StoreError
from hatchway.store import schema as t
from hatchway.store.database import Database

_STAGED: Final = "hatchway.audit.staged"
CHAIN_ROW: Final = 1


class CallState(enum.Enum):
    OPEN = "open"
    """Not recorded yet: the next write transaction of the call's task records it."""
    IN_FLIGHT = "in flight"
    """A transaction holding its record is committing."""
    WRITTEN = "written"
    """Committed with a change."""
    CLOSED = "closed"
    """The edge took it back (the call is over): no transaction may record it any more."""


class PendingCall:
    """The audit event of an API call in progress (see the module docstring).

    Args:
        build: makes the call's event when a transaction records it (the call succeeded as
            far as that change goes).
    """

    def __init__(self, build: Callable[[], AuditEvent]) -> None:
        self._build = build
        self._task = asyncio.current_task()
        self.state = CallState.OPEN
        self.sequence: int | None = None

    def claim(self) -> AuditEvent | None:
        """The event, if the current task's transaction is the one to record it."""
        if self.state is not CallState.OPEN or asyncio.current_task() is not self._task:
            return None
        self.state = CallState.IN_FLIGHT
        return self._build()

    def settle(self, committed: bool) -> None:
        """The transaction that recorded the call committed, or did not (then the next
        change of the call may record it)."""
        if committed:
            self.state = CallState.WRITTEN
        else:
            self.state = CallState.OPEN
            self.sequence = None


_PENDING: ContextVar[PendingCall | None] = ContextVar("hatchway_audit_pending", default=None)


@contextmanager
def pending_call(call: PendingCall) -> Iterator[PendingCall]:
    """Declare ``call`` for the write transactions of this task until the block ends."""
    token = _PENDING.set(call)
    try:
        yield call
    finally:
        _PENDING.reset(token)
        if call.state is CallState.OPEN:
            call.state = CallState.CLOSED


def stage(conn: AsyncConnection, *events: AuditEvent) -> None:
    """Record ``events`` in the transaction of ``conn`` (appended when it commits), after the
    event of the API call in progress in this task, if it is not recorded yet: this
    transaction is that call's change."""
    conn.info.setdefault(_STAGED, []).extend(events)


async def append_records(
    conn: AsyncConnection, events: Sequence[AuditEvent]
) -> list[ChainedRecord]:
    """Link ``events`` after the chain's head and insert them, in the transaction of ``conn``.

    The head row is updated first: that is the lock that keeps the chain linear.
    """
    if not events:
        return []
    c = t.audit_chain.c
    row = (
        await conn.execute(
            update(t.audit_chain)
            .where(c.row_id == CHAIN_ROW)
            .values(sequence=c.sequence + len(events))
            .returning(c.sequence, c.hash)
        )
    ).one()
    sequence = int(row.sequence) - len(events)
    previous: str = row.hash
    records: list[ChainedRecord] = []
    for event in events:
        sequence += 1
        record = link(sequence, previous, event.to_json())
        records.append(record)
        previous = record.hash
    await conn.execute(
        insert(t.audit_events),
        [_row(record, event) for record, event in zip(records, events, strict=True)],
    )
    names = [
        {"sequence": record.sequence, "name": name}
        for record, event in zip(records, events, strict=True)
        for name in sorted({n[:1024] for r in event.resources for n in (r.name, r.arn) if n})
    ]
    if names:
        await conn.execute(insert(t.audit_event_resources), names)
    await conn.execute(update(t.audit_chain).where(c.row_id == CHAIN_ROW).values(hash=previous))
    return records


def _row(record: ChainedRecord, event: AuditEvent) -> dict[str, Any]:
    return {
        "sequence": record.sequence,
        "event_id": event.event_id,
        "event_time": round(event.event_time, 3),
        "event_name": event.event_name[:128],
        "username": event.identity.name[:128],
        "access_key_id": event.identity.access_key_id[:32],
        "read_only": event.read_only,
        "previous_hash": record.previous_hash,
        "hash": record.hash,
        "record": record.body,
    }


class AuditHook:
    """The database's commit hook: appends what the transaction staged, after the pending
    call's event if this transaction is the one to record it."""

    async def before_commit(self, conn: AsyncConnection) -> Callable[[bool], None] | None:
        staged: list[AuditEvent] | None = conn.info.pop(_STAGED, None)
        if staged is None:
            return None  # nothing audited changed in this transaction
        call = _PENDING.get()
        event = call.claim() if call is not None else None
        if event is None:
            await append_records(conn, staged)
            return None
        assert call is not None
        try:
            records = await append_records(conn, [event, *staged])
        except BaseException:
            call.settle(False)
            raise
        call.sequence = records[0].sequence
        return call.settle

    def release(self, conn: AsyncConnection) -> None:
        conn.info.pop(_STAGED, None)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """LookupEvents' criteria; every one given must hold (``None``: any)."""

    event_name: str | None = None
    username: str | None = None
    access_key_id: str | None = None
    event_id: str | None = None
    resource_name: str | None = None
    read_only: bool | None = None
    start_time: float | None = None
    end_time: float | None = None


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A row of the trail as stored: the hashed text and the columns kept beside it."""

    sequence: int
    event_id: str
    event_time: float
    event_name: str
    username: str
    access_key_id: str
    read_only: bool
    previous_hash: str
    hash: str
    record: str

    def event(self) -> dict[str, Any]:
        """The event's JSON (from the hashed text).

        Raises:
            ValueError: the text is not a record.
        """
        body = json.loads(self.record)
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise ValueError("not a record")
        event: dict[str, Any] = body["event"]
        return event


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The head row: the last record, and where the trail starts (after pruning)."""

    sequence: int
    hash: str
    first_sequence: int = 1
    first_previous_hash: str = GENESIS


PruneEvent = Callable[[int, str, int], AuditEvent]
"""Makes the record of a pruning: (last pruned sequence, its hash, records deleted)."""


@dataclass
class _PendingAppend:
    """Records waiting for one transaction, and the future their callers await."""

    done: asyncio.Future[list[ChainedRecord]]
    events: list[AuditEvent] = field(default_factory=list)


class AuditRepository:
    """Appends to the trail in transactions of its own (group-committed), and reads it."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._pending: _PendingAppend | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def _fetch(self, stmt: Any) -> Sequence[Any]:
        async with self._db.read() as conn:
            return (await conn.execute(stmt)).all()

    async def append(self, *events: AuditEvent) -> list[ChainedRecord]:
        """Record ``events`` in a transaction of their own (nothing else changes); returns
        once they are committed.

        Records appended while another batch waits for its write turn join that batch (group
        commit, as heartbeats do): many calls recorded at once cost one transaction and one
        turn at the chain's head, not one each. A caller that is cancelled leaves its records
        to be written with the others.

        Raises:
            StoreError: the batch's transaction failed (every caller in it gets one).
        """
        if not events:
            return []
        pending = self._pending
        if pending is None:
            pending = self._pending = _PendingAppend(asyncio.get_running_loop().create_future())
            flush = asyncio.create_task(self._flush(pending))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        first = len(pending.events)
        pending.events.extend(events)
        try:
            records = await asyncio.shield(pending.done)
        except StoreError as exc:  # one exception object per caller, not one shared by all
            raise StoreError(exc.message) from exc
        return records[first : first + len(events)]

    async def _flush(self, pending: _PendingAppend) -> None:
        try:
            async with self._db.write() as conn:
                # Our turn: records from now on wait for the next batch.
                if self._pending is pending:
                    self._pending = None
                records = await append_records(conn, pending.events)
        except Exception as exc:
            pending.done.set_exception(exc)
        except BaseException:
            pending.done.cancel()
            raise
        else:
            pending.done.set_result(records)
        finally:
            if self._pending is pending:
                self._pending = None

    async def settle(self) -> None:
        """Wait for batches already under way (before the database is closed)."""
        await asyncio.gather(*self._flushes, return_exceptions=True)

    async def lookup(
        self, query: AuditQuery, *, limit: int, before: int | None = None
    ) -> list[StoredRecord]:
        """Records matching ``query``, newest first, below sequence ``before`` if given."""
        c = t.audit_events.c
        stmt = select(t.audit_events).order_by(c.sequence.desc()).limit(limit)
        conditions = [
            (query.event_name, c.event_name),
            (query.username, c.username),
            (query.access_key_id, c.access_key_id),
            (query.event_id, c.event_id),
        ]
        for value, column in conditions:
            if value is not None:
                stmt = stmt.where(column == value)
        if query.read_only is not None:
            stmt = stmt.where(c.read_only == query.read_only)
        if query.start_time is not None:
            stmt = stmt.where(c.event_time >= query.start_time)
        if query.end_time is not None:
            stmt = stmt.where(c.event_time <= query.end_time)
        if query.resource_name is not None:
            r = t.audit_event_resources.c
            stmt = stmt.where(
                c.sequence.in_(select(r.sequence).where(r.name == query.resource_name))
            )
        if before is not None:
            stmt = stmt.where(c.sequence < before)
        return [_stored(row) for row in await self._fetch(stmt)]

    async def chain_page(self, after: int, limit: int) -> list[StoredRecord]:
        """Up to ``limit`` records in chain order (by the stored sequence) after ``after``."""
        c = t.audit_events.c
        stmt = select(t.audit_events).where(c.sequence > after).order_by(c.sequence).limit(limit)
        return [_stored(row) for row in await self._fetch(stmt)]

    async def head(self) -> ChainHead:
        """The chain's head row: the last record's sequence and hash, and the trail's start."""
        c = t.audit_chain.c
        rows = await self._fetch(
            select(c.sequence, c.hash, c.first_sequence, c.first_previous_hash).where(
                c.row_id == CHAIN_ROW
            )
        )
        if not rows:
            return ChainHead(0, "")
        row = rows[0]
        return ChainHead(
            int(row.sequence), row.hash, int(row.first_sequence), row.first_previous_hash
        )

    async def prune(self, before: float, record: PruneEvent) -> int:
        """Delete the records older than ``before`` from the trail's start, in one
        transaction with the record of the deletion (``record``), which names the last
        deleted record and its hash: the trail then starts at the next record, and
        verification checks that start against that record. Returns how many were deleted.
        """
        e, r, c = t.audit_events.c, t.audit_event_resources.c, t.audit_chain.c
        async with self._db.write() as conn:
            # The head row first: prunings and appends take turns.
            await conn.execute(
                update(t.audit_chain)
                .where(c.row_id == CHAIN_ROW)
                .values(first_sequence=c.first_sequence)
            )
            last = (
                await conn.execute(select(func.max(e.sequence)).where(e.event_time < before))
            ).scalar()
            if last is None:
                return 0
            through = int(last)
            through_hash = (
                await conn.execute(select(e.hash).where(e.sequence == through))
            ).scalar_one()
            await conn.execute(delete(t.audit_event_resources).where(r.sequence <= through))
            deleted = (
                await conn.execute(delete(t.audit_events).where(e.sequence <= through))
            ).rowcount
            await conn.execute(
                update(t.audit_chain)
                .where(c.row_id == CHAIN_ROW)
                .values(first_sequence=through + 1, first_previous_hash=through_hash)
            )
            stage(conn, record(through, through_hash, deleted))
            return int(deleted)


def _stored(row: Any) -> StoredRecord:
    return StoredRecord(
        sequence=int(row.sequence),
        event_id=row.event_id,
        event_time=float(row.event_time),
        event_name=row.event_name,
        username=row.username,
        access_key_id=row.access_key_id,
        read_only=bool(row.read_only),
        previous_hash=row.previous_hash,
        hash=row.hash,
        record=row.record,
    )
