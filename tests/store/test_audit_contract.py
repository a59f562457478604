"""The audit trail's storage contract, on SQLite and PostgreSQL: records join the chain in the
transaction of the change they record, the chain stays linear with concurrent writers (several
stores on one database stand for several replicas), and lookups filter and page."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from hatchway.audit.chain import ChainedRecord, Verdict, Verifier
from hatchway.audit.events import (
    SERVICE_IDENTITY,
    AuditEvent,
    AuditResource,
    EventCode,
    Identity,
    IdentityType,
)
from hatchway.errors import Conflict
from hatchway.store.audit import AuditQuery, CallState, PendingCall, StoredRecord, pending_call
from hatchway.store.records import User
from hatchway.store.store import Store
from tests.store.conftest import with_store
from tests.store.test_store_contract import activation, node, session


def event(
    name: str = "Thing",
    *,
    at: float = 100.0,
    user: str = "",
    key: str = "",
    resources: Sequence[AuditResource] = (),
    read_only: bool = False,
) -> AuditEvent:
    identity = (
        Identity(
            IdentityType.USER, arn=f"arn:aws:iam::1:user/{user}", user_name=user, access_key_id=key
        )
        if user
        else SERVICE_IDENTITY
    )
    return AuditEvent(
        event_id=str(uuid.uuid4()),
        event_time=at,
        code=EventCode.API_CALL,
        event_name=name,
        event_source="hatchway",
        identity=identity,
        resources=tuple(resources),
        read_only=read_only,
    )


async def verdict(store: Store) -> Verdict:
    head = await store.audit.head()
    verifier = Verifier()
    for row in await store.audit.chain_page(0, 100_000):
        verifier.feed(as_record(row), row.record)
    return verifier.finish(head.sequence, head.hash)


def as_record(row: StoredRecord) -> ChainedRecord:
    import json

    return ChainedRecord.from_json({**json.loads(row.record), "hash": row.hash})


async def names(store: Store, query: AuditQuery | None = None, **kw: Any) -> list[str]:
    rows = await store.audit.lookup(query or AuditQuery(), limit=kw.pop("limit", 100), **kw)
    return [r.event_name for r in rows]


def test_appended_records_form_a_chain_with_its_head(url: str) -> None:
    async def body(s: Store) -> None:
        assert (await s.audit.head()).sequence == 0
        first = await s.audit.append(event("A"), event("B"))
        second = await s.audit.append(event("C"))
        assert [r.sequence for r in first + second] == [1, 2, 3]
        assert second[0].previous_hash == first[1].hash
        head = await s.audit.head()
        assert (head.sequence, head.hash) == (3, second[0].hash)
        rows = await s.audit.chain_page(1, 10)
        assert [r.sequence for r in rows] == [2, 3]
        assert rows[0].record == first[1].body  # the hashed text, exactly
        result = await verdict(s)
        assert result.intact and result.records == 3

    with_store(url, body)


def test_a_change_and_its_records_commit_or_roll_back_together(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation()
        await s.activations.create(a)
        n = node(a.activation_id)
        await s.activations.register_node(a.activation_id, n, 5.0)
        sess = session("u-1", n.instance_id)
        await s.sessions.create(sess, "h1", 10.0, audit=[event("SessionStarted")])
        with pytest.raises(Conflict):  # the same session again: nothing is written
            await s.sessions.create(sess, "h2", 10.0, audit=[event("SessionStarted")])
        assert await names(s) == ["SessionStarted"]
        from hatchway.store.records import SessionStatus

        ended = await s.sessions.set_status(
            "u-1",
            SessionStatus.TERMINATED,
            now=11.0,
            only_if=[SessionStatus.CONNECTING],
            audit=[event("SessionTerminated")],
        )
        again = await s.sessions.set_status(
            "u-1",
            SessionStatus.TERMINATED,
            now=12.0,
            only_if=[SessionStatus.CONNECTING],
            audit=[event("SessionTerminated")],
        )
        assert (ended, again) == (True, False)  # no change, no record
        await s.nodes.delete(n.instance_id, audit=[event("NodeDeregistered")])
        assert await names(s) == ["NodeDeregistered", "SessionTerminated", "SessionStarted"]
        assert (await verdict(s)).intact

    with_store(url, body)


def test_a_pending_call_is_recorded_by_the_change_it_makes(url: str) -> None:
    async def body(s: Store) -> None:
        call = PendingCall(lambda: event("CreateUser"))
        with pending_call(call):
            await s.audit.lookup(AuditQuery(), limit=1)  # a read records nothing
            await s.settings.set_if_absent("k", "v")  # an unaudited write records nothing
            assert call.state is CallState.OPEN
            await s.identity.create_user(User("AIDA1", "dev", 1.0))
            assert call.state is CallState.WRITTEN and call.sequence == 1
            await s.identity.create_user(User("AIDA2", "ops", 1.0))  # recorded once only
        assert await names(s) == ["CreateUser"]

        failed = PendingCall(lambda: event("CreateUser"))
        with pending_call(failed):
            with pytest.raises(Conflict):
                await s.identity.create_user(User("AIDA3", "dev", 1.0))  # rolled back
            assert failed.state is CallState.OPEN and failed.sequence is None
        assert failed.state is CallState.CLOSED  # the edge records it on its own now
        assert await names(s) == ["CreateUser"]

        async def elsewhere() -> None:  # another task's change is not this call's
            await s.identity.create_user(User("AIDA4", "bg", 1.0))

        other = PendingCall(lambda: event("Other"))
        with pending_call(other):
            await asyncio.create_task(elsewhere())
            assert other.state is CallState.OPEN
        assert await names(s) == ["CreateUser"]

    with_store(url, body)


def test_the_chain_stays_linear_with_concurrent_writers(url: str) -> None:
    async def body(s: Store) -> None:
        replicas = [Store.open(url, run_migrations=False) for _ in range(3)]
        try:

            async def writer(store: Store, n: int) -> None:
                for i in range(15):
                    await store.audit.append(event(f"W{n}-{i}"))

            await asyncio.gather(
                *(writer(store, n) for n, store in enumerate([s, *replicas]) for _ in range(2))
            )
        finally:
            for replica in replicas:
                await replica.close()
        result = await verdict(s)
        assert result.intact, result.summary()
        assert result.records == 4 * 2 * 15

    with_store(url, body)


def test_lookups_filter_and_page_newest_first(url: str) -> None:
    async def body(s: Store) -> None:
        node_res = AuditResource(
            "AWS::SSM::ManagedInstance", "mi-1", "arn:aws:ssm:l:1:managed-instance/mi-1"
        )
        await s.audit.append(
            event("StartSession", at=10.0, user="dev", key="HWAK1", resources=[node_res]),
            event("DescribeSessions", at=20.0, user="dev", key="HWAK1", read_only=True),
            event("CreateUser", at=30.0, user="admin", key="HWAK2"),
            event("SessionEnded", at=40.0, resources=[node_res]),
        )
        assert await names(s) == ["SessionEnded", "CreateUser", "DescribeSessions", "StartSession"]
        assert await names(s, AuditQuery(username="dev")) == ["DescribeSessions", "StartSession"]
        assert await names(s, AuditQuery(access_key_id="HWAK2")) == ["CreateUser"]
        assert await names(s, AuditQuery(event_name="StartSession")) == ["StartSession"]
        assert await names(s, AuditQuery(resource_name="mi-1")) == ["SessionEnded", "StartSession"]
        assert await names(s, AuditQuery(resource_name=node_res.arn)) == [
            "SessionEnded",
            "StartSession",
        ]
        assert await names(s, AuditQuery(read_only=True)) == ["DescribeSessions"]
        assert await names(s, AuditQuery(start_time=20.0, end_time=30.0)) == [
            "CreateUser",
            "DescribeSessions",
        ]
        assert await names(s, AuditQuery(username="dev", event_name="CreateUser")) == []
        page = await s.audit.lookup(AuditQuery(), limit=2)
        assert [r.sequence for r in page] == [4, 3]
        assert await names(s, before=3) == ["DescribeSessions", "StartSession"]
        one = page[0]
        assert (await s.audit.lookup(AuditQuery(event_id=one.event_id), limit=5))[0] == one

    with_store(url, body)


def test_pruning_keeps_the_trail_verifiable_and_deletion_from_the_start_is_caught(
    url: str,
) -> None:
    from sqlalchemy import delete, update

    from hatchway.server.audit import AuditEvents
    from hatchway.server.authz import Arns
    from hatchway.server.trail import AuditTrailService
    from hatchway.store import schema

    async def body(s: Store) -> None:
        trail = AuditTrailService(s, AuditEvents(Arns("local", "1"), lambda: 100.0))
        assert await trail.prune(5.0) == 0  # nothing that old: nothing done, nothing recorded
        records = await s.audit.append(*(event(f"E{i}", at=10.0 * i) for i in range(1, 6)))
        assert await trail.prune(35.0) == 3
        head = await s.audit.head()
        assert (head.first_sequence, head.first_previous_hash) == (4, records[2].hash)
        assert await names(s) == ["AuditTrailPruned", "E5", "E4"]
        pruned = (await s.audit.lookup(AuditQuery(event_name="AuditTrailPruned"), limit=1))[0]
        assert pruned.sequence == 6
        verdict = await trail.verdict()
        assert verdict.intact, verdict.summary()
        assert (verdict.first_sequence, verdict.last_sequence) == (4, 6)
        # Someone deletes record 4 as well and moves the start: no pruning record says so.
        async with s.engine.begin() as conn:
            await conn.execute(
                delete(schema.audit_events).where(schema.audit_events.c.sequence == 4)
            )
            await conn.execute(
                update(schema.audit_chain).values(
                    first_sequence=5, first_previous_hash=records[3].hash
                )
            )
        broken = await trail.verdict()
        assert broken.broken is not None and broken.broken.sequence == 5
        assert "no AuditTrailPruned record" in broken.broken.reason

    with_store(url, body)


def test_concurrent_appends_share_a_transaction_and_each_gets_its_own_records(url: str) -> None:
    """Records appended while a batch waits for its turn join it (group commit)."""
    from sqlalchemy import event as sa_event

    async def body(s: Store) -> None:
        commits = 0

        def committed(_conn: Any) -> None:
            nonlocal commits
            commits += 1

        sa_event.listen(s.engine.sync_engine, "commit", committed)
        results = await asyncio.gather(
            *(s.audit.append(event(f"A{i}"), event(f"B{i}")) for i in range(100))
        )
        assert commits == 1
        for i, records in enumerate(results):
            assert [r.event["eventName"] for r in records] == [f"A{i}", f"B{i}"]
            assert records[1].previous_hash == records[0].hash
        assert sorted(r.sequence for rs in results for r in rs) == list(range(1, 201))
        assert (await verdict(s)).intact

    with_store(url, body)
