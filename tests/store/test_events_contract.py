"""The event outbox's storage contract (``store.events``), on SQLite and PostgreSQL: events go
with the change that reports them or not at all, only to the subscriptions that want them,
and each subscription's queue is read head first."""

from __future__ import annotations

import uuid

import pytest

from hatchway.errors import Conflict, LimitExceeded, NotFound
from hatchway.store.events import (
    MAX_SUBSCRIPTIONS,
    DeliveryStatus,
    Event,
    EventType,
    Subscription,
)
from hatchway.store.records import SessionStatus
from hatchway.store.store import Store
from tests.store.conftest import with_store
from tests.store.test_store_contract import activation, node, session


def subscription(sid: str, *types: EventType, created: float = 1.0) -> Subscription:
    return Subscription(
        subscription_id=sid,
        url=f"https://hooks.example/{sid}",
        event_types=types,
        secret_encrypted="v1:not-really",
        created_at=created,
        created_by="arn:aws:iam::123456789012:user/admin",
    )


def event(kind: EventType, time: float = 100.0, **detail: object) -> Event:
    return Event(str(uuid.uuid4()), kind, time, dict(detail))


async def _pending(store: Store, sid: str) -> list[str]:
    rows = await store.events.deliveries(subscription_id=sid, status=DeliveryStatus.PENDING)
    return [d.event_type for d in reversed(rows)]  # oldest first


def test_events_go_with_their_change_and_only_to_who_wants_them(url: str) -> None:
    async def body(store: Store) -> None:
        # Nobody subscribes: nothing is kept.
        await store.sessions.create(
            session("s-0", "mi-1"), "t0", 1.0, events=[event(EventType.SESSION_STARTED)]
        )
        assert await store.events.deliveries() == []
        await store.events.create_subscription(
            subscription("sub-a", EventType.SESSION_STARTED, EventType.SESSION_ENDED)
        )
        await store.events.create_subscription(subscription("sub-b", EventType.NODE_ONLINE))
        started = event(EventType.SESSION_STARTED, sessionId="s-1")
        await store.sessions.create(session("s-1", "mi-1"), "t1", 1.0, events=[started])
        # The change fails: its events are not written either.
        with pytest.raises(Conflict):
            await store.sessions.create(
                session("s-1", "mi-1"), "t2", 1.0, events=[event(EventType.SESSION_STARTED)]
            )
        # The status does not change: no event.
        assert not await store.sessions.set_status(
            "s-1",
            SessionStatus.TERMINATED,
            now=2.0,
            only_if=(SessionStatus.CONNECTED,),
            events=[event(EventType.SESSION_ENDED)],
        )
        ended = event(EventType.SESSION_ENDED, 200.0, sessionId="s-1")
        assert await store.sessions.set_status(
            "s-1", SessionStatus.TERMINATED, now=2.0, events=[ended]
        )
        act = activation()
        await store.activations.create(act)
        n = node(act.activation_id)
        assert await store.activations.register_node(
            act.activation_id, n, 1.0, events=[event(EventType.NODE_REGISTERED)]
        )
        await store.nodes.mark_connected(
            n.instance_id, True, 3.0, events=[event(EventType.NODE_ONLINE)]
        )
        assert await _pending(store, "sub-a") == ["session.started", "session.ended"]
        assert await _pending(store, "sub-b") == ["node.online"]
        [delivery] = await store.events.deliveries(subscription_id="sub-a", limit=1)
        assert delivery.event_id == ended.event_id and delivery.attempts == 0
        heads = await store.events.heads()
        assert [(h.subscription_id, h.event_type) for h in heads] == [
            ("sub-a", "session.started"),
            ("sub-b", "node.online"),
        ]
        assert heads[0].body == started.body()
        assert heads[0].url == "https://hooks.example/sub-a"

    with_store(url, body)


def test_the_head_waits_until_it_is_settled_and_leases_are_exclusive(url: str) -> None:
    async def body(store: Store) -> None:
        await store.events.create_subscription(subscription("sub-a", EventType.ACCESS_DENIED))
        first, second = event(EventType.ACCESS_DENIED, 1.0), event(EventType.ACCESS_DENIED, 2.0)
        await store.events.publish([first])
        await store.events.publish([second])
        [head] = await store.events.heads("sub-a")
        assert head.event_id == first.event_id and head.next_attempt_at == 1.0
        assert await store.events.claim(head.delivery_id, now=10.0, lease=30.0)
        assert not await store.events.claim(head.delivery_id, now=20.0, lease=30.0)
        [leased] = await store.events.heads("sub-a")
        assert leased.lease_until == 40.0
        # A failed attempt: still the head, due later, lease given back.
        await store.events.record_attempt(
            head.delivery_id,
            now=11.0,
            status=DeliveryStatus.PENDING,
            status_code=500,
            error="HTTP 500",
            next_attempt_at=12.0,
        )
        [again] = await store.events.heads("sub-a")
        assert (again.delivery_id, again.attempts, again.next_attempt_at, again.lease_until) == (
            head.delivery_id,
            1,
            12.0,
            None,
        )
        # A lease left by a crashed process expires by itself.
        assert await store.events.claim(head.delivery_id, now=12.0, lease=30.0)
        assert await store.events.claim(head.delivery_id, now=42.0, lease=30.0)
        await store.events.release([head.delivery_id])
        assert (await store.events.heads("sub-a"))[0].lease_until is None
        await store.events.record_attempt(
            head.delivery_id,
            now=13.0,
            status=DeliveryStatus.DELIVERED,
            status_code=204,
            error="",
            next_attempt_at=None,
        )
        [next_head] = await store.events.heads("sub-a")
        assert next_head.event_id == second.event_id
        [done] = await store.events.deliveries(status=DeliveryStatus.DELIVERED)
        assert (done.attempts, done.last_status_code, done.delivered_at) == (2, 204, 13.0)
        assert done.last_error == ""

    with_store(url, body)


def test_subscriptions_are_listed_limited_and_deleted_with_their_deliveries(url: str) -> None:
    async def body(store: Store) -> None:
        for i in range(MAX_SUBSCRIPTIONS):
            await store.events.create_subscription(
                subscription(f"sub-{i:03}", EventType.NODE_OFFLINE, created=float(i))
            )
        with pytest.raises(LimitExceeded):
            await store.events.create_subscription(subscription("sub-x", EventType.NODE_OFFLINE))
        listed = await store.events.subscriptions()
        assert [s.subscription_id for s in listed][:2] == ["sub-000", "sub-001"]
        assert listed[0].event_types == (EventType.NODE_OFFLINE,)
        await store.events.publish([event(EventType.NODE_OFFLINE)])
        assert len(await store.events.deliveries(limit=1000)) == MAX_SUBSCRIPTIONS
        await store.events.delete_subscription("sub-000")
        assert await store.events.subscription("sub-000") is None
        assert await store.events.deliveries(subscription_id="sub-000") == []
        with pytest.raises(NotFound):
            await store.events.delete_subscription("sub-000")

    with_store(url, body)


def test_settled_deliveries_are_purged_after_their_time(url: str) -> None:
    async def body(store: Store) -> None:
        await store.events.create_subscription(subscription("sub-a", EventType.NODE_ONLINE))
        await store.events.publish([event(EventType.NODE_ONLINE), event(EventType.NODE_ONLINE)])
        old, young = await store.events.heads("sub-a"), None
        await store.events.record_attempt(
            old[0].delivery_id,
            now=50.0,
            status=DeliveryStatus.FAILED,
            status_code=None,
            error="gave up",
            next_attempt_at=None,
        )
        young = await store.events.heads("sub-a")
        assert await store.events.purge(before=100.0) == 1
        # The pending one stays, with its event.
        assert [h.delivery_id for h in await store.events.heads("sub-a")] == [young[0].delivery_id]
        assert len(await store.events.deliveries()) == 1

    with_store(url, body)
