"""Replicas sharing one PostgreSQL database: the URL operators write, migrations that take
turns, the first-start lock, and the settings steps that must be race-free."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hatchway.errors import ConfigError
from hatchway.store.database import (
    ClusterLock,
    Database,
    _at_head,
    _sync_url,
    async_url,
    migrate,
)
from hatchway.store.store import Store
from tests.store.conftest import fresh_pg_database, run, with_store


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A new database with no schema at all, for each test."""
    with fresh_pg_database() as url:
        yield url


def plain(url: str) -> str:
    """The URL as an operator writes it: ``postgresql://`` with no driver."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/hw", "postgresql+asyncpg://u:p@db:5432/hw"),
        ("postgres://db/hw", "postgresql+asyncpg://db/hw"),
        ("postgresql+asyncpg://db/hw", "postgresql+asyncpg://db/hw"),
        ("postgresql+psycopg://db/hw", "postgresql+psycopg://db/hw"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_a_url_without_a_driver_gets_the_async_one(given: str, expected: str) -> None:
    assert async_url(given) == expected


def test_the_sync_url_of_a_plain_postgresql_url_is_psycopg() -> None:
    assert _sync_url("postgresql://db/hw") == "postgresql+psycopg://db/hw"


def test_a_url_that_is_no_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--database-url"):
        async_url("not a url")


def test_store_opens_a_plain_postgresql_url(empty_pg: str) -> None:
    async def body(store: Store) -> None:
        assert store.database.backend == "postgresql" and store.database.shared
        assert await store.settings.set_if_absent("k", "v") == "v"

    with_store(plain(empty_pg), body)


def test_replicas_migrating_an_empty_database_at_once_take_turns(empty_pg: str) -> None:
    """Four processes' worth of ``migrate`` at once: each returns, the schema is at its head
    once (alembic_version has one row), and nobody saw a half-made schema."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def replica() -> None:
        barrier.wait()
        try:
            migrate(plain(empty_pg))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    engine = create_engine(_sync_url(empty_pg))
    try:
        with engine.connect() as conn:
            assert _at_head(conn)
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_the_first_start_lock_makes_replicas_take_turns(empty_pg: str) -> None:
    """While one replica holds the lock, another waits for it (seen in ``pg_locks``), and
    goes on once it is released."""
    migrate(empty_pg)

    async def main() -> None:
        first, second, observer = Database(empty_pg), Database(empty_pg), Database(empty_pg)
        entered = asyncio.Event()
        try:
            async with first.exclusive(ClusterLock.FIRST_START):

                async def take() -> None:
                    async with second.exclusive(ClusterLock.FIRST_START):
                        entered.set()

                waiter = asyncio.create_task(take())
                async with asyncio.timeout(30):
                    while not await _someone_waits(observer):
                        await asyncio.sleep(0.02)
                assert not entered.is_set()
            async with asyncio.timeout(30):
                await waiter
            assert entered.is_set()
            # Released on the way out: it can be taken again at once.
            async with first.exclusive(ClusterLock.FIRST_START):
                pass
        finally:
            for db in (first, second, observer):
                await db.dispose()

    run(main())


async def _someone_waits(db: Database) -> bool:
    async with db.read() as conn:
        waiting = await conn.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return bool(waiting)


def test_the_lock_is_nothing_on_sqlite(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(f"sqlite:///{tmp_path / 'hatchway.db'}")
        try:
            assert not db.shared
            lock = ClusterLock.FIRST_START
            async with db.exclusive(lock), db.exclusive(lock):  # nested: not even a lock
                pass
        finally:
            await db.dispose()

    run(main())


def test_set_if_absent_has_one_winner_across_replicas(empty_pg: str) -> None:
    """The account id step: replicas (stores of their own) racing to set one key all come
    back with the same value, the one stored."""
    migrate(empty_pg)

    async def main() -> None:
        stores = [Store.open(empty_pg, run_migrations=False) for _ in range(6)]
        try:
            got = await asyncio.gather(
                *(s.settings.set_if_absent("account_id", f"{i:012d}") for i, s in enumerate(stores))
            )
            assert len(set(got)) == 1
            assert await stores[0].settings.get("account_id") == got[0]
        finally:
            for s in stores:
                await s.close()

    run(main())


def test_settings_replace_is_compare_and_set(empty_pg: str) -> None:
    async def body(store: Store) -> None:
        await store.settings.set_if_absent("k", "one")
        assert not await store.settings.replace("k", "other", "two")
        assert await store.settings.get("k") == "one"
        assert await store.settings.replace("k", "one", "two")
        assert await store.settings.get("k") == "two"
        assert not await store.settings.replace("missing", "one", "two")

    with_store(empty_pg, body)
