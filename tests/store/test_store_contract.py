"""One storage contract, run against SQLite and PostgreSQL (STYLE.md "Tests").

PostgreSQL is the machine's local server (127.0.0.1:5432, trust auth; another one with
HATCHWAY_TEST_PG_URL); each run gets a database of its own, dropped afterwards. HATCHWAY_TEST_PG
says what to do without one:

- unset (or ``auto``): the PostgreSQL tests are skipped, with the reason, if it is unreachable;
- ``require`` (CI, ``.ci/run``): an unreachable PostgreSQL fails them;
- ``0``: they are skipped without trying.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from sqlalchemy.engine import make_url

from hatchway.errors import Conflict, NotFound
from hatchway.store.database import sqlite_url
from hatchway.store.records import Activation, Node, Session, SessionStatus, User
from hatchway.store.store import Store

T = TypeVar("T")
PG_ADMIN = os.environ.get("HATCHWAY_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")
PG_MODES = ("auto", "require", "0")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A database of this run's own on the test PostgreSQL server (see the module docstring)."""
    mode = os.environ.get("HATCHWAY_TEST_PG") or "auto"
    if mode not in PG_MODES:
        pytest.fail(f"HATCHWAY_TEST_PG={mode!r}: expected one of {', '.join(PG_MODES)}")
    if mode == "0":
        pytest.skip("PostgreSQL tests disabled by HATCHWAY_TEST_PG=0")
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(mode, f"psycopg is not installed ({exc})")
    name = f"hatchway_test_{secrets.token_hex(4)}"
    problem = ""
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        problem = f"cannot reach PostgreSQL at {PG_ADMIN}: {' '.join(str(exc).split())}"
    if problem:  # said outside the except block: a reason, not a chained traceback
        _unavailable(mode, problem)
    url = make_url(PG_ADMIN).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _unavailable(mode: str, reason: str) -> NoReturn:
    """Skip the PostgreSQL tests, saying why, or fail them when CI requires them."""
    if mode == "require":
        pytest.fail(f"{reason} (HATCHWAY_TEST_PG=require)", pytrace=False)
    pytest.skip(f"{reason}; set HATCHWAY_TEST_PG=require to make this a failure")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "hatchway.db")
    db: str = request.getfixturevalue("pg_database")
    # a clean schema for every test: migrate down to nothing first
    store = Store.open(db)
    run(_truncate(store))
    return db


async def _truncate(store: Store) -> None:
    from sqlalchemy import text

    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE session_tokens, sessions, nodes, activations, access_keys, users, "
                "documents, server_settings CASCADE"
            )
        )
    await store.close()


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


def with_store(url: str, body: Any) -> None:
    async def main() -> None:
        store = Store.open(url)
        try:
            await body(store)
        finally:
            await store.close()

    run(main())


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
        await s.identity.create_user(User("AIDA1", "admin", 1.0))
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


def test_used_nonces_are_refused_until_they_expire(url: str) -> None:
    async def body(s: Store) -> None:
        digest = secrets.token_hex(32)
        assert await s.nonces.use(digest, "mi-1", 100.0)
        assert not await s.nonces.use(digest, "mi-1", 100.0)  # a replay
        assert await s.nonces.purge(99.0) == 0
        assert await s.nonces.purge(100.5) >= 1
        assert await s.nonces.use(digest, "mi-1", 200.0)  # forgotten after expiry

    with_store(url, body)
