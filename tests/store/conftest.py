"""The storage contract suites' backends: SQLite and PostgreSQL (the ``url`` fixture).

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
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from sqlalchemy.engine import make_url

from hatchway.store.database import sqlite_url
from hatchway.store.store import Store

T = TypeVar("T")
PG_ADMIN = os.environ.get("HATCHWAY_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")
PG_MODES = ("auto", "require", "0")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A database of this run's own on the test PostgreSQL server (see the module docstring)."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create an empty database (no schema) on the test PostgreSQL server, yield its async URL
    and drop it at the end; skip or fail as HATCHWAY_TEST_PG says if there is no server."""
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
                "TRUNCATE kms_aliases, kms_keys, recordings, log_groups, event_deliveries, "
                "event_outbox, event_subscriptions, "
                "session_tokens, sessions, nodes, activations, access_keys, users, "
                "documents, server_settings, group_members, iam_groups, user_policy_attachments, "
                "group_policy_attachments, user_inline_policies, group_inline_policies, "
                "console_logins, console_mfa CASCADE"
            )
        )
        # Built-in policies come with the migration: keep them, drop the tests' own.
        await conn.execute(
            text(
                "DELETE FROM policy_versions WHERE policy_id IN "
                "(SELECT policy_id FROM policies WHERE NOT builtin)"
            )
        )
        await conn.execute(text("DELETE FROM policies WHERE NOT builtin"))
        # The audit trail starts over: no records, the head back at the genesis.
        await conn.execute(text("TRUNCATE audit_events, audit_event_resources"))
        await conn.execute(
            text(
                f"UPDATE audit_chain SET sequence = 0, hash = '{'0' * 64}', first_sequence = 1, "
                f"first_previous_hash = '{'0' * 64}'"
            )
        )
    await store.close()


def with_store(url: str, body: Any) -> None:
    async def main() -> None:
        store = Store.open(url)
        try:
            await body(store)
        finally:
            await store.close()

    run(main())
