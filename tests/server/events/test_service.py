"""The event-subscription operations: what they refuse (in words that name the problem),
that the secret is stored encrypted and never shown, and the delivery log's filters."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select

from hatchway.auth.secretbox import SecretBox
from hatchway.errors import CorruptData, InvalidNextToken, NotFound, ValidationError
from hatchway.server.events.catalog import publish
from hatchway.server.events.service import EventService, check_event_types, check_url
from hatchway.server.events.worker import secret_context
from hatchway.server.principal import Principal
from hatchway.store import schema
from hatchway.store.database import sqlite_url
from hatchway.store.events import DeliveryStatus, Event, EventType
from hatchway.store.store import Store
from tests.fakes import FakeClock

ADMIN = Principal("AIDAADMIN", "admin", "123456789012", "HWAKADMIN")
SECRET = "a-long-random-signing-secret"


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[EventService, Store, SecretBox]]:
    store = Store.open(sqlite_url(tmp_path / "hatchway.db"))
    box = SecretBox(secrets.token_bytes(32))
    try:
        yield EventService(store.events, box, FakeClock()), store, box
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://h.example/x", "must start with http:// or https://"),
        ("hooks.example/x", "must start with http:// or https://"),
        ("https:///x", "has no host"),
        ("https://h.example:99999/x", "not a valid URL"),
        ("https://h.example:0/x", "port 0"),
        ("https://h.example/a b", "spaces or control characters"),
        ("https://h.example/\x1b[2J", "spaces or control characters"),
        ("https://user:pw@h.example/x", "must not contain credentials"),
    ],
)
def test_bad_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url)
    assert says in caught.value.message
    if "pw@" in url:
        assert "pw" not in caught.value.message


def test_good_urls_pass() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://[::1]/h?x=1", "HTTPS://Hooks.Example"):
        assert check_url(url) == url


def test_event_types_are_checked_deduplicated_and_ordered() -> None:
    assert check_event_types(["session.ended", "session.started", "session.ended"]) == (
        EventType.SESSION_STARTED,
        EventType.SESSION_ENDED,
    )
    with pytest.raises(ValidationError) as caught:
        check_event_types(["session.started", "session.finished"])
    message = caught.value.message
    assert "unknown event type 'session.finished'" in message
    assert "access.denied" in message  # and the known ones are listed


@pytest.mark.asyncio
async def test_the_secret_is_stored_encrypted_and_never_answered(
    service: tuple[EventService, Store, SecretBox],
) -> None:
    events, store, box = service
    created = await events.create_subscription(
        ADMIN, {"Url": "https://h.example/x", "Events": ["node.online"], "Secret": SECRET}
    )
    sub = created["Subscription"]
    assert set(sub) == {"SubscriptionId", "Url", "Events", "CreatedDate", "CreatedBy"}
    assert sub["CreatedBy"] == ADMIN.arn and sub["Events"] == ["node.online"]
    listed = await events.list_subscriptions(ADMIN, {})
    assert SECRET not in repr(listed) and SECRET not in repr(created)
    async with store.engine.connect() as conn:
        [stored] = (await conn.execute(select(schema.event_subscriptions.c.secret_encrypted))).all()
    assert SECRET not in stored[0]
    context = secret_context(sub["SubscriptionId"])
    assert box.decrypt(stored[0], context=context).decode() == SECRET
    with pytest.raises(CorruptData):  # bound to its row: another subscription's id fails
        box.decrypt(stored[0], context=secret_context("sub-ffffffffffffffff"))


@pytest.mark.asyncio
@pytest.mark.parametrize("secret", ["", "12345", "x" * 257])
async def test_a_secret_of_a_bad_length_is_refused_without_echoing_it(
    service: tuple[EventService, Store, SecretBox], secret: str
) -> None:
    events, _, _ = service
    body = {"Url": "https://h.example/x", "Events": ["node.online"], "Secret": secret}
    with pytest.raises(ValidationError) as caught:
        await events.create_subscription(ADMIN, body)
    assert "6 to 256 characters" in caught.value.message
    assert secret not in caught.value.message or not secret


@pytest.mark.asyncio
async def test_listings_page_and_filter(service: tuple[EventService, Store, SecretBox]) -> None:
    events, store, _ = service
    ids = []
    for n in range(3):
        body = {"Url": f"https://h.example/{n}", "Events": ["node.online"], "Secret": SECRET}
        ids.append(
            (await events.create_subscription(ADMIN, body))["Subscription"]["SubscriptionId"]
        )
    first = await events.list_subscriptions(ADMIN, {"MaxResults": 2})
    rest = await events.list_subscriptions(
        ADMIN, {"MaxResults": 2, "NextToken": first["NextToken"]}
    )
    paged = [s["SubscriptionId"] for s in first["Subscriptions"] + rest["Subscriptions"]]
    assert sorted(paged) == sorted(ids)  # created at the same (fake) time: ordered by id
    assert "NextToken" not in rest
    with pytest.raises(InvalidNextToken):
        await events.list_subscriptions(ADMIN, {"NextToken": "x"})

    await publish(store.events, [Event("e1", EventType.NODE_ONLINE, 5.0, {"nodeId": "mi-1"})])
    log = await events.list_deliveries(ADMIN, {"SubscriptionId": ids[1]})
    [entry] = log["Deliveries"]
    assert entry["EventId"] == "e1" and entry["EventType"] == "node.online"
    assert entry["Status"] == "pending" and entry["Attempts"] == 0
    assert entry["NextAttemptDate"] == entry["EventTime"] == 5.0
    assert "LastStatusCode" not in entry and "DeliveredDate" not in entry
    assert (await events.list_deliveries(ADMIN, {"Status": "failed"}))["Deliveries"] == []
    every = await events.list_deliveries(ADMIN, {"Status": DeliveryStatus.PENDING.value})
    assert len(every["Deliveries"]) == 3

    await events.delete_subscription(ADMIN, {"SubscriptionId": ids[1]})
    with pytest.raises(NotFound):
        await events.list_deliveries(ADMIN, {"SubscriptionId": ids[1]})
    with pytest.raises(NotFound):
        await events.delete_subscription(ADMIN, {"SubscriptionId": ids[1]})
