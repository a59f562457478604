"""The delivery worker on a real (SQLite) outbox with a fake clock and an in-memory receiver:
signed posts, the back-off schedule, order per subscription, and independence of
subscriptions."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from hatchway.auth.secretbox import SecretBox
from hatchway.server.events.catalog import publish
from hatchway.server.events.retry import RetryPolicy
from hatchway.server.events.service import EventService
from hatchway.server.events.signature import verify
from hatchway.server.events.worker import DeliveryWorker
from hatchway.server.principal import Principal
from hatchway.store.database import sqlite_url
from hatchway.store.events import DeliveryStatus, Event, EventType
from hatchway.store.store import Store
from tests.fakes import FakeClock, FakePoster

ADMIN = Principal("AIDAADMIN", "admin", "123456789012", "HWAKADMIN")
A, B = "https://a.example/hook", "https://b.example/hook"


@dataclass
class Rig:
    store: Store
    service: EventService
    worker: DeliveryWorker
    poster: FakePoster
    clock: FakeClock

    async def subscribe(self, url: str, secret: str = "s3cret", *types: str) -> str:
        body = {"Url": url, "Events": list(types or ["access.denied"]), "Secret": secret}
        answer = await self.service.create_subscription(ADMIN, body)
        return str(answer["Subscription"]["SubscriptionId"])

    async def emit(self, n: int) -> None:
        await publish(
            self.store.events,
            [Event(f"e{n}", EventType.ACCESS_DENIED, self.clock(), {"n": n})],
        )

    async def step(self) -> float | None:
        """What the worker does at one moment: passes until nothing more is due (a drain that
        ends wakes the worker for another); returns when something is due next."""
        while True:
            next_due = await self.worker.deliver_due()
            if not self.worker.busy:
                return next_due
            await self.worker.settle()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store.open(sqlite_url(tmp_path / "hatchway.db"))
    box = SecretBox(secrets.token_bytes(32))
    clock, poster = FakeClock(), FakePoster()
    worker = DeliveryWorker(
        store.events, box, poster, clock=clock, policy=RetryPolicy(max_attempts=4)
    )
    try:
        yield Rig(store, EventService(store.events, box, clock), worker, poster, clock)
    finally:
        await worker.stop()
        await store.close()


def ids(posts: list) -> list[str]:
    return [p.event["id"] for p in posts]


@pytest.mark.asyncio
async def test_each_post_is_signed_with_its_subscriptions_secret(rig: Rig) -> None:
    await rig.subscribe(A, "secret-of-a")
    await rig.subscribe(B, "secret-of-b")
    await rig.emit(1)
    assert await rig.step() is None
    for url, secret in ((A, "secret-of-a"), (B, "secret-of-b")):
        [post] = rig.poster.to(url)
        h = post.headers
        assert h["Content-Type"] == "application/json"
        assert h["X-Hatchway-Event-Id"] == "e1" == post.event["id"]
        assert h["X-Hatchway-Event-Type"] == "access.denied" == post.event["type"]
        assert h["X-Hatchway-Timestamp"] == str(int(rig.clock()))
        assert verify(secret, h["X-Hatchway-Timestamp"], post.body, h["X-Hatchway-Signature"],
                      now=rig.clock())  # fmt: skip
        assert secret not in post.body.decode() and secret not in str(h)
        assert set(post.event) == {"id", "type", "time", "detail"}
        assert post.event["detail"] == {"n": 1}


@pytest.mark.asyncio
async def test_a_failing_receiver_holds_up_its_own_queue_only_and_keeps_the_order(
    rig: Rig,
) -> None:
    sub_a = await rig.subscribe(A)
    await rig.subscribe(B)
    rig.poster.script[A] = [500, None, 200]  # fails twice, then takes everything
    for n in (1, 2, 3):
        await rig.emit(n)
    start = rig.clock()
    assert await rig.step() == start + 1  # the first retry, 1 s later
    assert ids(rig.poster.to(B)) == ["e1", "e2", "e3"]  # B is not held up by A
    assert ids(rig.poster.to(A)) == ["e1"]  # A's later events wait behind its head
    [head] = await rig.store.events.deliveries(
        subscription_id=sub_a, status=DeliveryStatus.PENDING, limit=3, offset=2
    )
    assert (head.event_id, head.attempts, head.last_status_code) == ("e1", 1, 500)
    assert head.next_attempt_at == start + 1 and head.last_error == "HTTP 500"

    rig.clock.advance(0.5)
    assert await rig.step() == start + 1  # not due yet: nothing posted
    assert ids(rig.poster.to(A)) == ["e1"]
    rig.clock.advance(0.5)
    assert await rig.step() == start + 1 + 2  # then 2 s
    assert ids(rig.poster.to(A)) == ["e1", "e1"]
    rig.clock.advance(2)
    assert await rig.step() is None
    assert ids(rig.poster.to(A)) == ["e1", "e1", "e1", "e2", "e3"]
    log = await rig.store.events.deliveries(subscription_id=sub_a)
    assert [(d.event_id, d.status, d.attempts) for d in log] == [
        ("e3", DeliveryStatus.DELIVERED, 1),
        ("e2", DeliveryStatus.DELIVERED, 1),
        ("e1", DeliveryStatus.DELIVERED, 3),
    ]
    # Every attempt of one event carries the same id and body, for deduplication.
    assert len({p.body for p in rig.poster.to(A) if p.event["id"] == "e1"}) == 1


@pytest.mark.asyncio
async def test_a_delivery_given_up_is_failed_and_the_next_one_goes(rig: Rig) -> None:
    sub_a = await rig.subscribe(A)
    rig.poster.script[A] = [503, 503, 503, 503]  # max_attempts=4
    await rig.emit(1)
    await rig.emit(2)
    for delay in (1, 2, 4):
        await rig.step()
        rig.clock.advance(delay)
    assert await rig.step() is None  # 4th attempt failed: given up; e2 delivered
    assert ids(rig.poster.to(A)) == ["e1"] * 4 + ["e2"]
    [failed] = await rig.store.events.deliveries(
        subscription_id=sub_a, status=DeliveryStatus.FAILED
    )
    assert (failed.event_id, failed.attempts, failed.last_status_code) == ("e1", 4, 503)
    assert failed.next_attempt_at is None


@pytest.mark.asyncio
async def test_a_delivery_another_process_holds_is_left_alone(rig: Rig) -> None:
    await rig.subscribe(A)
    await rig.emit(1)
    [head] = await rig.store.events.heads()
    assert await rig.store.events.claim(head.delivery_id, now=rig.clock(), lease=30)
    assert await rig.step() == rig.clock() + 30  # due again once the lease expires
    assert rig.poster.posted == []
    rig.clock.advance(30)
    await rig.step()
    assert ids(rig.poster.posted) == ["e1"]


@pytest.mark.asyncio
async def test_stop_gives_leases_back_and_closes_the_poster(rig: Rig) -> None:
    await rig.subscribe(A)
    await rig.emit(1)
    [head] = await rig.store.events.heads()
    await rig.store.events.claim(head.delivery_id, now=rig.clock(), lease=30)
    rig.worker._held.add(head.delivery_id)  # as if a post were under way
    await rig.worker.stop()
    assert rig.poster.closed
    [head] = await rig.store.events.heads()
    assert head.lease_until is None
