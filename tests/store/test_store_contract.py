"""One storage contract, run against SQLite and PostgreSQL (backends: ``conftest.py``)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from hatchway.errors import Conflict, NotFound, StoreError
from hatchway.store import schema
from hatchway.store.database import DatabaseLimits, sqlite_url
from hatchway.store.records import (
    Activation,
    Document,
    Heartbeat,
    Node,
    Session,
    SessionStatus,
    User,
)
from hatchway.store.store import Store
from tests.store.conftest import run, with_store


def activation(limit: int = 1, expires: float = 2e9) -> Activation:
    return Activation(
        activation_id=str(uuid.uuid4()), code_hash="h", description="", default_instance_name="n",
        iam_role="", registration_limit=limit, registrations_count=0, expiration_date=expires,
        created_date=1.0, tags={"Env": "dev"},
    )  # fmt: skip


def node(activation_id: str, instance_id: str | None = None) -> Node:
    return Node(
        instance_id=instance_id or "mi-" + secrets.token_hex(9)[:17], activation_id=activation_id,
        public_key="k", public_key_type="Rsa", fingerprint="f", name="n", computer_name="",
        platform_type="", platform_name="", platform_version="", ip_address="", agent_version="",
        registration_date=1.0, last_ping_at=None, connected=False, tags={"Env": "dev"},
    )  # fmt: skip


def session(sid: str, target: str, start: float = 10.0) -> Session:
    return Session(
        session_id=sid, target=target, status=SessionStatus.CONNECTING, start_date=start,
        end_date=None, document_name="SSM-SessionManagerRunShell", owner="arn:x", reason="r",
        details="", max_session_duration="", parameters={"a": ["b"]}, run_as="", exit_code=None,
        bytes_in=0, bytes_out=0,
    )  # fmt: skip


def test_migrations_are_idempotent(url: str) -> None:
    Store.open(url)  # migrates again: nothing to do, no error
    with_store(url, lambda s: s.settings.get("nothing"))


def test_settings_first_writer_wins(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.settings.set_if_absent("account_id", "111") == "111"
        assert await s.settings.set_if_absent("account_id", "222") == "111"

    with_store(url, body)


def test_users_and_access_keys(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.identity.user_by_name("admin") is None
        await s.identity.create_user(User("AIDA1", "admin", 1.0))
        assert await s.identity.user_by_name("admin") == User("AIDA1", "admin", 1.0)
        assert await s.identity.user("AIDA1") == User("AIDA1", "admin", 1.0)
        with pytest.raises(Conflict):
            await s.identity.create_user(User("AIDA2", "admin", 1.0))
        await s.identity.create_access_key("HWAK1", "AIDA1", "enc", 2.0)
        key = await s.identity.access_key("HWAK1")
        assert key is not None and key.user_name == "admin" and key.status == "Active"
        assert await s.identity.access_key("HWAKX") is None
        assert [k.access_key_id for k in await s.identity.keys_of("AIDA1")] == ["HWAK1"]

    with_store(url, body)


def test_registration_limit_holds_under_concurrency(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=2)
        await s.activations.create(a)
        results = await asyncio.gather(
            *(s.activations.register_node(a.activation_id, node(a.activation_id), 5.0)
              for _ in range(6))
        )  # fmt: skip
        assert sum(results) == 2
        assert len(await s.nodes.list()) == 2
        stored = await s.activations.get(a.activation_id)
        assert stored is not None and stored.registrations_count == 2

    with_store(url, body)


def test_expired_activation_registers_nothing(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(expires=100.0)
        await s.activations.create(a)
        assert not await s.activations.register_node(a.activation_id, node(a.activation_id), 100.0)
        assert await s.nodes.list() == []
        await s.activations.delete(a.activation_id)
        with pytest.raises(NotFound):
            await s.activations.delete(a.activation_id)

    with_store(url, body)


def test_nodes_heartbeat_and_delete(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation()
        await s.activations.create(a)
        n = node(a.activation_id)
        assert await s.activations.register_node(a.activation_id, n, 5.0)
        await s.nodes.heartbeat(n.instance_id, 7.0, computer_name="host", agent_version="1")
        got = await s.nodes.get(n.instance_id)
        assert got is not None and got.connected and got.last_ping_at == 7.0
        assert got.computer_name == "host" and got.tags == {"Env": "dev"}
        await s.nodes.disconnect_all()
        got = await s.nodes.get(n.instance_id)
        assert got is not None and not got.connected
        await s.nodes.delete(n.instance_id)
        with pytest.raises(NotFound):
            await s.nodes.delete(n.instance_id)

    with_store(url, body)


def test_session_status_tokens_and_listing(url: str) -> None:
    async def body(s: Store) -> None:
        for i in range(5):
            await s.sessions.create(session(f"admin-{i}", "mi-1", start=10.0 + i), f"t{i}", 1.0)
        active = await s.sessions.describe(active=True, limit=3)
        assert [x.session_id for x in active] == ["admin-4", "admin-3", "admin-2"]
        rest = await s.sessions.describe(active=True, limit=3, offset=3)
        assert [x.session_id for x in rest] == ["admin-1", "admin-0"]
        ok = await s.sessions.set_status(
            "admin-0", SessionStatus.CONNECTED, now=2.0, only_if=(SessionStatus.CONNECTING,)
        )
        assert ok
        assert not await s.sessions.set_status(
            "admin-0", SessionStatus.CONNECTED, now=2.0, only_if=(SessionStatus.CONNECTING,)
        )
        assert await s.sessions.set_status(
            "admin-0", SessionStatus.TERMINATED, now=3.0, exit_code=3
        )
        ended = await s.sessions.get("admin-0")
        assert ended is not None and ended.end_date == 3.0 and ended.exit_code == 3
        token = await s.sessions.token("t0")
        assert token is not None and token.revoked  # ending revokes the session's tokens
        history = await s.sessions.describe(active=False)
        assert [x.session_id for x in history] == ["admin-0"]
        await s.sessions.mark_token_used("t1", 4.0)
        await s.sessions.mark_token_used("t1", 9.0)  # first use is kept
        t1 = await s.sessions.token("t1")
        assert t1 is not None and t1.first_used_at == 4.0
        await s.sessions.replace_tokens("admin-1", "t1b", 5.0)
        t1 = await s.sessions.token("t1")
        t1b = await s.sessions.token("t1b")
        assert t1 is not None and t1.revoked and t1b is not None and not t1b.revoked
        await s.sessions.add_bytes("admin-1", 10, 20)
        await s.sessions.add_bytes("admin-1", 1, 2)
        got = await s.sessions.get("admin-1")
        assert got is not None and (got.bytes_in, got.bytes_out) == (11, 22)
        assert [x.session_id for x in await s.sessions.describe(active=True, target="mi-2")] == []

    with_store(url, body)


def test_failures_are_counted_and_lock_the_activation_once(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=5)
        await s.activations.create(a)
        fresh = await s.activations.get(a.activation_id)
        assert fresh is not None and fresh.failed_attempts == 0 and not fresh.locked
        results = await asyncio.gather(
            *(s.activations.record_failure(a.activation_id, lock_after=4, now=50.0 + i)
              for i in range(6))
        )  # fmt: skip
        assert results.count(None) == 3  # the first three
        locked = await s.activations.get(a.activation_id)
        assert locked is not None and locked.failed_attempts == 6 and locked.locked
        first_lock = locked.locked_at
        assert first_lock is not None and 50.0 <= first_lock <= 55.0
        assert results.count(first_lock) == 3  # the fourth locked it, the others see its date
        # Later failures keep counting but never move the lock's date.
        assert await s.activations.record_failure(a.activation_id, lock_after=4, now=99.0) == (
            first_lock
        )
        again = await s.activations.get(a.activation_id)
        assert again is not None and again.failed_attempts == 7 and again.locked_at == first_lock
        # A locked activation registers nothing, even within its limit and expiry.
        assert not await s.activations.register_node(a.activation_id, node(a.activation_id), 5.0)
        assert await s.nodes.list() == []
        assert [x.locked for x in await s.activations.list()] == [True]

    with_store(url, body)


def test_agent_generation_only_grows(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation()
        await s.activations.create(a)
        n = node(a.activation_id)
        assert await s.activations.register_node(a.activation_id, n, 5.0)
        assert await s.nodes.claim_generation(n.instance_id, 0)  # an agent that names none
        assert await s.nodes.claim_generation(n.instance_id, 2)
        assert await s.nodes.claim_generation(n.instance_id, 2)  # the same agent re-dials
        assert not await s.nodes.claim_generation(n.instance_id, 1)  # an older one: refused
        got = await s.nodes.get(n.instance_id)
        assert got is not None and got.agent_generation == 2
        assert not await s.nodes.claim_generation("mi-00000000000000000", 1)

    with_store(url, body)


def test_failure_of_an_unknown_activation_changes_nothing(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.activations.record_failure("nope", lock_after=1, now=1.0) is None
        assert await s.activations.list() == []

    with_store(url, body)


def test_used_nonces_are_refused_until_they_expire(url: str) -> None:
    async def body(s: Store) -> None:
        digest = secrets.token_hex(32)
        assert await s.nonces.use(digest, "mi-1", 100.0)
        assert not await s.nonces.use(digest, "mi-1", 100.0)  # a replay
        assert await s.nonces.purge(99.0) == 0
        assert await s.nonces.purge(100.5) >= 1
        assert await s.nonces.use(digest, "mi-1", 200.0)  # forgotten after expiry

    with_store(url, body)


def test_activations_list_in_creation_order(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.activations.list() == []
        first, second = activation(), activation()
        await s.activations.create(replace(second, created_date=2.0))
        await s.activations.create(first)
        with pytest.raises(Conflict):
            await s.activations.create(first)
        listed = await s.activations.list()
        assert [x.activation_id for x in listed] == [first.activation_id, second.activation_id]
        assert listed[0] == first  # every field, tags included, comes back as stored

    with_store(url, body)


def test_nodes_list_and_connection_marks(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=3)
        await s.activations.create(a)
        nodes = [replace(node(a.activation_id), registration_date=float(i)) for i in range(3)]
        for n in nodes:
            assert await s.activations.register_node(a.activation_id, n, 5.0)
        assert [n.instance_id for n in await s.nodes.list()] == [n.instance_id for n in nodes]
        some = await s.nodes.list([nodes[2].instance_id, nodes[0].instance_id, "mi-none"])
        assert [n.instance_id for n in some] == [nodes[0].instance_id, nodes[2].instance_id]
        assert await s.nodes.list([]) == []
        await s.nodes.mark_connected(nodes[1].instance_id, True, 8.0)
        got = await s.nodes.get(nodes[1].instance_id)
        assert got is not None and got.connected and got.last_ping_at == 8.0
        await s.nodes.mark_connected(nodes[1].instance_id, False, 9.0)
        got = await s.nodes.get(nodes[1].instance_id)
        assert got is not None and not got.connected and got.last_ping_at == 8.0
        assert await s.nodes.get("mi-none") is None

    with_store(url, body)


def beat(instance_id: str, at: float, host: str = "host") -> Heartbeat:
    return Heartbeat(
        instance_id=instance_id, at=at, computer_name=host, platform_type="Linux",
        platform_name="Debian", platform_version="12", ip_address="10.0.0.1", agent_version="1.0",
    )  # fmt: skip


def test_heartbeats_in_one_batch(url: str) -> None:
    async def body(s: Store) -> None:
        a = activation(limit=3)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(3)]
        for n in nodes:
            assert await s.activations.register_node(a.activation_id, n, 5.0)
        await s.nodes.heartbeats([])  # nothing to do
        await s.nodes.heartbeats(
            [
                beat(nodes[0].instance_id, 9.0, "late"),
                beat(nodes[0].instance_id, 7.0, "early"),  # older than the one before: ignored
                beat(nodes[1].instance_id, 8.0),
                beat("mi-deregistered", 8.0),  # gone meanwhile: skipped, no error
            ]
        )
        first, second, third = [await s.nodes.get(n.instance_id) for n in nodes]
        assert first is not None and second is not None and third is not None
        assert (first.connected, first.last_ping_at, first.computer_name) == (True, 9.0, "late")
        assert (second.connected, second.last_ping_at) == (True, 8.0)
        assert (second.platform_type, second.platform_name) == ("Linux", "Debian")
        assert (second.platform_version, second.ip_address) == ("12", "10.0.0.1")
        assert second.agent_version == "1.0"
        assert (third.connected, third.last_ping_at) == (False, None)
        assert len(await s.nodes.list()) == 3

    with_store(url, body)


def test_concurrent_heartbeats_share_a_transaction(url: str) -> None:
    """Heartbeats that arrive while a batch waits for its turn join it (group commit)."""

    async def body(s: Store) -> None:
        a = activation(limit=200)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(200)]
        async with s.engine.begin() as conn:
            await conn.execute(insert(schema.nodes), [_asrow(n) for n in nodes])
        commits = 0

        def committed(_conn: Any) -> None:
            nonlocal commits
            commits += 1

        event.listen(s.engine.sync_engine, "commit", committed)
        await asyncio.gather(
            *(s.nodes.heartbeat(n.instance_id, 30.0, computer_name=f"h{i}")
              for i, n in enumerate(nodes)),
            s.nodes.heartbeat(nodes[0].instance_id, 29.0, computer_name="older"),
        )  # fmt: skip
        assert commits == 1
        stored = {n.instance_id: n for n in await s.nodes.list()}
        assert all(stored[n.instance_id].last_ping_at == 30.0 for n in nodes)
        assert [stored[n.instance_id].computer_name for n in nodes[:2]] == ["h0", "h1"]
        with pytest.raises(TypeError):
            await s.nodes.heartbeat(nodes[0].instance_id, 31.0, public_key="forged")

    with_store(url, body)


def test_a_failed_heartbeat_batch_fails_each_caller(tmp_path: Path) -> None:
    async def body(s: Store) -> None:
        async with s.engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE nodes")
        outcomes = await asyncio.gather(
            *(s.nodes.heartbeat(f"mi-{i}", 1.0) for i in range(3)), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, StoreError)]
        assert len(errors) == 3
        assert len({id(e) for e in errors}) == 3  # one exception per caller
        assert all("UPDATE" not in e.message and "mi-" not in e.message for e in errors)
        # the next heartbeat is a new batch (and fails the same way, not forever stuck)
        with pytest.raises(StoreError):
            await s.nodes.heartbeat("mi-0", 2.0)

    with_store(sqlite_url(tmp_path / "hatchway.db"), body)


def test_documents_ensure_never_overwrites(url: str) -> None:
    async def body(s: Store) -> None:
        doc = Document("SSM-SessionManagerRunShell", "Session", "JSON", "{}", "Amazon", 1.0)
        assert await s.documents.get(doc.name) is None
        await s.documents.ensure(doc)
        await s.documents.ensure(replace(doc, content='{"edited": true}'))
        assert await s.documents.get(doc.name) == doc

    with_store(url, body)


def test_session_filters(url: str) -> None:
    async def body(s: Store) -> None:
        for i, target in enumerate(["mi-1", "mi-1", "mi-2"]):
            await s.sessions.create(session(f"s-{i}", target, start=10.0 + i), f"t{i}", 1.0)
        await s.sessions.create(replace(session("other", "mi-1", 20.0), owner="arn:y"), "u", 1.0)
        assert [x.session_id for x in await s.sessions.active_on("mi-1")] == ["other", "s-1", "s-0"]
        by = s.sessions.describe
        assert [x.session_id for x in await by(active=True, owner="arn:y")] == ["other"]
        assert [x.session_id for x in await by(active=True, session_id="s-2")] == ["s-2"]
        assert len(await by(active=True, status="Connecting")) == 4
        window = await by(active=True, invoked_after=11.0, invoked_before=12.0)
        assert [x.session_id for x in window] == ["s-2", "s-1"]
        await s.sessions.set_status("s-2", SessionStatus.FAILED, now=30.0)

        history = {x.session_id: x for x in await by(active=False)}
        assert set(history) == {"s-2"}
        assert history["s-2"].status is SessionStatus.FAILED and history["s-2"].end_date == 30.0
        stored = await s.sessions.token("t2")
        assert stored is not None and stored.revoked

    with_store(url, body)


# --- the transaction wrapper and behaviour under load ---------------------------------------


def test_an_unreachable_database_is_a_store_error() -> None:
    """Driver errors, a refused connection included, come out as StoreError naming the error
    class, never SQL or secrets (port 1 refuses: no PostgreSQL server is needed)."""
    url = "postgresql+asyncpg://hatchway:s3cret-pw@127.0.0.1:1/none"

    async def main() -> None:
        store = Store.open(url, run_migrations=False)
        try:
            with pytest.raises(StoreError) as read:
                await store.nodes.get("mi-1")
            with pytest.raises(StoreError) as write:
                await store.settings.set_if_absent("k", "v")
            with pytest.raises(StoreError) as beat:
                await store.nodes.heartbeat("mi-1", 1.0)
        finally:
            await store.close()
        for exc in (read.value, write.value, beat.value):
            assert "s3cret" not in exc.message and "127.0.0.1" not in exc.message
            assert exc.__cause__ is not None

    run(main())


def test_reads_go_on_while_a_write_is_open(url: str) -> None:
    """Readers are not queued behind a writer (WAL on SQLite, MVCC on PostgreSQL)."""

    async def body(s: Store) -> None:
        await s.settings.set_if_absent("k", "before")
        async with s.database.write() as conn:
            await conn.execute(insert(schema.server_settings).values(key="k2", value="x"))
            assert await asyncio.wait_for(s.settings.get("k"), 10) == "before"
            assert await asyncio.wait_for(s.settings.get("k2"), 10) is None  # not committed
        assert await s.settings.get("k2") == "x"

    with_store(url, body)


def test_callers_beyond_the_pool_wait_their_turn(url: str) -> None:
    """More callers than connections queue in front of the pool instead of timing out in it.

    The pools here time out almost at once: any caller that met the pool's time-out would fail.
    """
    limits = DatabaseLimits.for_url(url)
    impatient = replace(limits.readers, size=2, timeout=0.001)
    limits = replace(
        limits,
        readers=impatient,
        writer=None if limits.writer is None else replace(impatient, size=1),
    )

    async def main() -> None:
        store = Store.open(url, limits=limits)
        try:
            await store.settings.set_if_absent("k", "v")
            results = await asyncio.gather(
                *(store.settings.get("k") for _ in range(100)),
                *(store.settings.set_if_absent(f"k{i}", "v") for i in range(100)),
            )
            assert set(results) == {"v"}
        finally:
            await store.close()

    run(main())


def test_sqlite_write_transactions_take_turns(tmp_path: Path) -> None:
    """SQLite has one write lock: this process never has two write transactions open at once.

    Pooled connections racing for the lock is what answered "database is locked" (and
    disconnected agents) with 2,000 nodes: SQLite's busy handler polls, unfairly, and gives up.
    """
    url = sqlite_url(tmp_path / "hatchway.db")
    open_now = 0
    most = 0

    def began(_conn: Any) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)

    def ended(_conn: Any) -> None:
        nonlocal open_now
        open_now -= 1

    async def body(s: Store) -> None:
        for name, fn in (("begin", began), ("commit", ended), ("rollback", ended)):
            event.listen(s.engine.sync_engine, name, fn)
        a = activation(limit=100)
        await s.activations.create(a)
        await asyncio.gather(
            *(s.activations.register_node(a.activation_id, node(a.activation_id), 5.0)
              for _ in range(50)),
            *(s.settings.set_if_absent(f"k{i}", "v") for i in range(50)),
        )  # fmt: skip
        assert open_now == 0
        assert most == 1

    with_store(url, body)


def test_a_busy_database_delays_and_never_fails(url: str) -> None:
    """2,000 registered nodes; 1,000 heartbeats, 20 registrations and session changes at once.

    Everything succeeds: with SQLite's writes queued in this process and callers queued in
    front of the pool, a busy database makes callers wait, never fail (issue 5 §2).
    """

    async def body(s: Store) -> None:
        a = activation(limit=3000)
        await s.activations.create(a)
        nodes = [node(a.activation_id) for _ in range(2000)]
        async with s.engine.begin() as conn:  # set-up: 2,000 registered nodes, quickly
            await conn.execute(insert(schema.nodes), [_asrow(n) for n in nodes])
        for i in range(20):
            await s.sessions.create(session(f"load-{i}", nodes[i].instance_id), f"lt{i}", 1.0)

        async def session_life(i: int) -> None:
            sid = f"load-{i}"
            assert await s.sessions.set_status(
                sid, SessionStatus.CONNECTED, now=20.0, only_if=(SessionStatus.CONNECTING,)
            )
            await s.sessions.add_bytes(sid, 10, 20)
            await s.sessions.replace_tokens(sid, f"lt{i}b", 21.0)
            assert await s.sessions.set_status(sid, SessionStatus.TERMINATED, now=22.0)

        outcomes = await asyncio.gather(
            *(s.nodes.heartbeat(n.instance_id, 20.0, computer_name="busy") for n in nodes[:1000]),
            s.nodes.heartbeats([beat(n.instance_id, 20.0, "batched") for n in nodes[1000:]]),
            *(s.activations.register_node(a.activation_id, node(a.activation_id), 20.0)
              for _ in range(20)),
            *(session_life(i) for i in range(20)),
            *(s.nodes.list() for _ in range(5)),
            *(s.sessions.describe(active=True) for _ in range(5)),
            return_exceptions=True,
        )  # fmt: skip
        failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        assert failures == []
        registered = outcomes[1001 : 1001 + 20]
        assert registered == [True] * 20
        stored = await s.nodes.list()
        assert len(stored) == 2020
        beats = {n.instance_id: n for n in stored}
        assert all(beats[n.instance_id].last_ping_at == 20.0 for n in nodes)
        assert {beats[n.instance_id].computer_name for n in nodes[:1000]} == {"busy"}
        assert {beats[n.instance_id].computer_name for n in nodes[1000:]} == {"batched"}
        assert await s.sessions.describe(active=True) == []

    with_store(url, body)


def _asrow(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def test_session_connections_are_kept_in_order_up_to_a_limit(url: str) -> None:
    from hatchway.store import repositories
    from hatchway.store.records import SessionConnection

    async def body(s: Store) -> None:
        await s.sessions.create(session("admin-c", "mi-1"), "tc", 1.0)
        late = SessionConnection("db:5432", 5.0, 6.0, 10, 20)
        early = SessionConnection("db:5432", 2.0, None, 0, 0, "connection refused")
        assert await s.sessions.add_connections("admin-c", [late, early]) == 2
        assert await s.sessions.connections("admin-c") == [early, late]
        assert await s.sessions.connections("admin-other") == []
        big = SessionConnection("x:1", 7.0, 8.0, 2**40, 2**41)
        old = repositories.MAX_CONNECTIONS_PER_SESSION
        repositories.MAX_CONNECTIONS_PER_SESSION = 3
        try:
            assert await s.sessions.add_connections("admin-c", [big, big]) == 1
        finally:
            repositories.MAX_CONNECTIONS_PER_SESSION = old
        assert (await s.sessions.connections("admin-c"))[-1] == big

    with_store(url, body)
