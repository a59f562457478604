"""Event notifications at rest: webhook subscriptions, the outbox of events and the delivery log.

An event is written by :class:`Outbox` *in the transaction of the change it reports* (a
session's row, a node's status), together with one delivery row per subscription that wants
its type; nothing is written when nobody subscribes. The delivery worker
(``server.events.worker``) then reads, per subscription, the oldest pending delivery (its
*head*) and posts it; later deliveries of that subscription wait until the head is delivered
or given up, so each subscription receives its events in order. Causally ordered events (a
session's start and its end) are written by transactions that follow each other, so their
delivery ids, which give the order, follow each other too, on SQLite and on PostgreSQL.

A delivery being attempted is *leased* (``lease_until``) by one server process, so that
replicas sharing a database do not post the same head at once; a lease that a crashed
process left behind expires by itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.errors import LimitExceeded, NotFound
from hatchway.store import schema as t
from hatchway.store.database import Database

__all__ = [
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventRepository",
    "EventType",
    "Outbox",
    "Subscription",
    "event_time",
]

MAX_SUBSCRIPTIONS = 100
"""Webhook subscriptions one installation may have."""
MAX_ERROR = 512
"""Characters of a delivery's last error kept."""


class EventType(StrEnum):
    """The events Hatchway notifies about (their names are part of the webhook contract)."""

    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    SESSION_TERMINATED = "session.terminated"
    NODE_REGISTERED = "node.registered"
    NODE_ONLINE = "node.online"
    NODE_OFFLINE = "node.offline"
    ACCESS_DENIED = "access.denied"


class DeliveryStatus(StrEnum):
    """Where one event's delivery to one subscription stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Given up (too many attempts, or too old): later deliveries go on without it."""


def event_time(seconds: float) -> str:
    """An event's ``time`` on the wire: ISO 8601 in UTC with milliseconds and ``Z``."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One event: what happened (``type``), when, and its details (JSON values only)."""

    event_id: str
    type: EventType
    time: float
    detail: dict[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        """The JSON document every delivery of this event posts, byte for byte the same."""
        return json.dumps(
            {
                "id": self.event_id,
                "type": self.type.value,
                "time": event_time(self.time),
                "detail": self.detail,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook: where to post which events. The secret stays encrypted here."""

    subscription_id: str
    url: str
    event_types: tuple[EventType, ...]
    secret_encrypted: str = field(repr=False)
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery to one subscription, with its log."""

    delivery_id: int
    subscription_id: str
    event_id: str
    event_type: str
    event_time: float
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status_code: int | None
    last_error: str
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class Head:
    """A subscription's oldest pending delivery: what the worker posts next."""

    delivery_id: int
    subscription_id: str
    url: str
    secret_encrypted: str = field(repr=False)
    event_id: str
    event_type: str
    body: str
    attempts: int
    created_at: float
    next_attempt_at: float
    lease_until: float | None


class Outbox:
    """Writes events, with their deliveries, inside a caller's transaction, and tells its
    listeners (the delivery worker) once that transaction has committed."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (no arguments, must not block) after deliveries were committed."""
        self._listeners.append(callback)

    async def write(self, conn: AsyncConnection, events: Sequence[Event]) -> int:
        """Store ``events`` and one pending delivery per interested subscription, in ``conn``'s
        transaction; returns the number of deliveries (pass it to :meth:`committed`)."""
        if not events:
            return 0
        s = t.event_subscriptions.c
        subscriptions = (await conn.execute(select(s.subscription_id, s.event_types))).all()
        count = 0
        for event in events:
            wanted = [sid for sid, types in subscriptions if event.type.value in (types or ())]
            if not wanted:
                continue
            await conn.execute(
                insert(t.event_outbox).values(
                    event_id=event.event_id,
                    event_type=event.type.value,
                    time=event.time,
                    body=event.body(),
                )
            )
            await conn.execute(
                insert(t.event_deliveries),
                [
                    {
                        "subscription_id": sid,
                        "event_id": event.event_id,
                        "status": DeliveryStatus.PENDING.value,
                        "attempts": 0,
                        "created_at": event.time,
                        "next_attempt_at": event.time,
                        "last_error": "",
                    }
                    for sid in sorted(wanted)
                ],
            )
            count += len(wanted)
        return count

    def committed(self, count: int) -> None:
        """The transaction that wrote ``count`` deliveries has committed: wake the listeners."""
        if count:
            for callback in self._listeners:
                callback()


class EventRepository:
    """Subscriptions, standalone events, and what the delivery worker reads and records."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._db = database
        self.outbox = outbox

    # ---- events without a change of their own (access.denied) ------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        """Store ``events`` in a transaction of their own; without one when no subscription
        wants any of them (a flood of denied requests then costs reads, not write turns)."""
        s = t.event_subscriptions.c
        async with self._db.read() as conn:
            rows = (await conn.execute(select(s.event_types))).all()
        wanted = {name for (types,) in rows for name in types or ()}
        if not any(e.type.value in wanted for e in events):
            return
        async with self._db.write() as conn:
            count = await self.outbox.write(conn, events)
        self.outbox.committed(count)

    # ---- subscriptions --------------------------------------------------------------------

    async def create_subscription(self, subscription: Subscription) -> None:
        """Store a new subscription.

        Raises:
            LimitExceeded: there are :data:`MAX_SUBSCRIPTIONS` already.
        """
        async with self._db.write() as conn:
            have = (
                await conn.execute(select(func.count()).select_from(t.event_subscriptions))
            ).scalar_one()
            if have >= MAX_SUBSCRIPTIONS:
                raise LimitExceeded(
                    f"at most {MAX_SUBSCRIPTIONS} event subscriptions are allowed; delete one first"
                )
            await conn.execute(
                insert(t.event_subscriptions).values(
                    subscription_id=subscription.subscription_id,
                    url=subscription.url,
                    event_types=[e.value for e in subscription.event_types],
                    secret_encrypted=subscription.secret_encrypted,
                    created_at=subscription.created_at,
                    created_by=subscription.created_by,
                )
            )

    async def subscriptions(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        c = t.event_subscriptions.c
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.event_subscriptions).order_by(c.created_at, c.subscription_id)
                )
            ).all()
        return [_subscription(r) for r in rows]

    async def subscription(self, subscription_id: str) -> Subscription | None:
        c = t.event_subscriptions.c
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(t.event_subscriptions).where(c.subscription_id == subscription_id)
                )
            ).first()
        return None if row is None else _subscription(row)

    async def delete_subscription(self, subscription_id: str) -> None:
        """Delete a subscription with its deliveries (pending ones are never sent).

        Raises:
            NotFound: no such subscription.
        """
        async with self._db.write() as conn:
            await conn.execute(
                delete(t.event_deliveries).where(
                    t.event_deliveries.c.subscription_id == subscription_id
                )
            )
            gone = await conn.execute(
                delete(t.event_subscriptions).where(
                    t.event_subscriptions.c.subscription_id == subscription_id
                )
            )
            if gone.rowcount != 1:
                raise NotFound(f"Event subscription {subscription_id} does not exist.")

    # ---- the delivery log -----------------------------------------------------------------

    async def deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Delivery]:
        """Deliveries, newest first."""
        d, e = t.event_deliveries.c, t.event_outbox.c
        stmt = select(
            d.delivery_id,
            d.subscription_id,
            d.event_id,
            e.event_type,
            e.time,
            d.status,
            d.attempts,
            d.created_at,
            d.next_attempt_at,
            d.last_attempt_at,
            d.last_status_code,
            d.last_error,
            d.delivered_at,
        ).join(t.event_outbox, e.event_id == d.event_id)
        if subscription_id is not None:
            stmt = stmt.where(d.subscription_id == subscription_id)
        if status is not None:
            stmt = stmt.where(d.status == status.value)
        stmt = stmt.order_by(d.delivery_id.desc()).limit(limit).offset(offset)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_delivery(r) for r in rows]

    # ---- the worker's side ----------------------------------------------------------------

    async def heads(self, subscription_id: str | None = None) -> list[Head]:
        """Each subscription's oldest pending delivery (leased or not, due or not), or only
        ``subscription_id``'s."""
        d, e, s = t.event_deliveries.c, t.event_outbox.c, t.event_subscriptions.c
        oldest = select(func.min(d.delivery_id)).where(d.status == DeliveryStatus.PENDING.value)
        if subscription_id is not None:
            oldest = oldest.where(d.subscription_id == subscription_id)
        oldest = oldest.group_by(d.subscription_id)
        stmt = (
            select(
                d.delivery_id,
                d.subscription_id,
                s.url,
                s.secret_encrypted,
                d.event_id,
                e.event_type,
                e.body,
                d.attempts,
                d.created_at,
                d.next_attempt_at,
                d.lease_until,
            )
            .join(t.event_outbox, e.event_id == d.event_id)
            .join(t.event_subscriptions, s.subscription_id == d.subscription_id)
            .where(d.delivery_id.in_(oldest))
            .order_by(d.delivery_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Head(*r) for r in rows]

    async def claim(self, delivery_id: int, *, now: float, lease: float) -> bool:
        """Lease a pending delivery for ``lease`` seconds unless another process holds it."""
        d = t.event_deliveries.c
        async with self._db.write() as conn:
            result = await conn.execute(
                update(t.event_deliveries)
                .where(
                    and_(
                        d.delivery_id == delivery_id,
                        d.status == DeliveryStatus.PENDING.value,
                        or_(d.lease_until.is_(None), d.lease_until <= now),
                    )
                )
                .values(lease_until=now + lease)
            )
            return bool(result.rowcount == 1)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give leases back (a server stopping in the middle of attempts)."""
        if delivery_ids:
            async with self._db.write() as conn:
                await conn.execute(
                    update(t.event_deliveries)
                    .where(t.event_deliveries.c.delivery_id.in_(list(delivery_ids)))
                    .values(lease_until=None)
                )

    async def record_attempt(
        self,
        delivery_id: int,
        *,
        now: float,
        status: DeliveryStatus,
        status_code: int | None,
        error: str,
        next_attempt_at: float | None,
    ) -> None:
        """Log one attempt: delivered, failed for good, or pending until ``next_attempt_at``."""
        d = t.event_deliveries.c
        values: dict[str, Any] = {
            "status": status.value,
            "attempts": d.attempts + 1,
            "last_attempt_at": now,
            "last_status_code": status_code,
            "last_error": error[:MAX_ERROR],
            "next_attempt_at": next_attempt_at,
            "lease_until": None,
        }
        if status is DeliveryStatus.DELIVERED:
            values["delivered_at"] = now
        async with self._db.write() as conn:
            await conn.execute(
                update(t.event_deliveries).where(d.delivery_id == delivery_id).values(**values)
            )

    async def purge(self, before: float) -> int:
        """Forget delivered and failed deliveries last attempted before ``before``, and events
        no delivery needs any more; returns how many deliveries went."""
        d, e = t.event_deliveries.c, t.event_outbox.c
        async with self._db.write() as conn:
            gone = await conn.execute(
                delete(t.event_deliveries).where(
                    and_(
                        d.status != DeliveryStatus.PENDING.value,
                        d.last_attempt_at < before,
                    )
                )
            )
            await conn.execute(
                delete(t.event_outbox).where(
                    ~exists().where(t.event_deliveries.c.event_id == e.event_id)
                )
            )
            return int(gone.rowcount or 0)


def _delivery(row: Any) -> Delivery:
    m = dict(row._mapping)
    m["event_time"] = m.pop("time")
    m["status"] = DeliveryStatus(m["status"])
    return Delivery(**m)


def _subscription(row: Any) -> Subscription:
    m = row._mapping
    return Subscription(
        subscription_id=m["subscription_id"],
        url=m["url"],
        event_types=tuple(EventType(v) for v in m["event_types"] or ()),
        secret_encrypted=m["secret_encrypted"],
        created_at=m["created_at"],
        created_by=m["created_by"],
    )
