"""Opening the database, bringing its schema up to date, and the one way to reach it.

The embedded default is SQLite in the data directory; any SQLAlchemy URL with an async driver
works, and a plain ``postgresql://`` URL (what operators write) means asyncpg
(:func:`async_url`). Alembic is configured here in code, so a non-editable install finds its
migration scripts as package data.

Several server replicas may share one PostgreSQL database and start at once: migrations run
under a PostgreSQL advisory lock, so one replica migrates while the others wait and then find
the schema at its head, and :meth:`Database.exclusive` gives the rest of a first start
(``server.clusterinit``) the same kind of lock (:class:`ClusterLock`).

:class:`Database` is the only door to the database: repositories run every statement inside
its :meth:`~Database.read` or :meth:`~Database.write` transaction, which

* admit callers through a FIFO queue in front of the connection pool, so a busy database makes
  callers wait their turn instead of failing on a pool time-out;
* serialize writes on SQLite in this process (SQLite has a single write lock; several pooled
  connections racing for it is what answered "database is locked" under load), while readers
  stay concurrent under WAL;
* map every SQLAlchemy error to the project's tree (``IntegrityError`` → :class:`Conflict`,
  anything else → :class:`StoreError`), with a message that never carries SQL or values.

Every pool and time-out setting is chosen in :class:`DatabaseLimits`, never a library default;
``docs/design.md`` ("Storage") gives the reasons.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from hatchway.errors import ConfigError, Conflict, StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class ClusterLock(IntEnum):
    """The PostgreSQL advisory locks replicas sharing a database take, by their fixed keys.

    Advisory locks are per database, so other installations (other databases on the same
    server) never contend with these; the keys are arbitrary but fixed (ASCII ``hatchmig``
    and ``hatchini``) so that every replica of every release takes the same lock.
    """

    MIGRATIONS = 0x68617463686D6967
    """Held around Alembic's upgrade (:func:`migrate`)."""
    FIRST_START = 0x6861746368696E69
    """Held around the rest of first start: account id, built-in rows, TLS identity, admin."""

    @property
    def holder_is(self) -> str:
        """What the replica holding it is doing (for the log line of one that waits)."""
        if self is ClusterLock.MIGRATIONS:
            return "migrating the database"
        return "setting up the installation (first start)"


_DEFAULT_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of the SQLite database at ``path``."""
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> str:
    """``url`` with an async driver: ``postgresql://`` (and ``postgres://``) become
    ``postgresql+asyncpg://``, ``sqlite://`` becomes ``sqlite+aiosqlite://``; a URL that names
    its driver is kept as it is.

    Raises:
        ConfigError: ``url`` is not a database URL.
    """
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            "--database-url must be a database URL such as postgresql://USER@HOST/DB"
        ) from exc
    driver = _DEFAULT_ASYNC_DRIVERS.get(u.drivername)
    if driver is None:
        return url
    return u.set(drivername=driver).render_as_string(hide_password=False)


def _sync_url(url: str) -> str:
    u = make_url(async_url(url))
    driver = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}.get(
        u.drivername, u.drivername
    )
    return u.set(drivername=driver).render_as_string(hide_password=False)


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> frozenset[str]:
    """The revisions no other migration revises, read from the scripts without importing
    alembic: its import is a third of a server's start-up, and a restarted server must serve
    again within 2 s (docs/protocol.md §9.7)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                        values[target.id] = ast.literal_eval(node.value)
        if "revision" not in values:
            continue  # not a migration (the package's __init__)
        revisions.add(values["revision"])
        down = values.get("down_revision")
        revised.update([down] if isinstance(down, str) else (down or ()))
    return frozenset(revisions - revised)


def _at_head(conn: Any) -> bool:
    try:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        return False  # a new database: no version table yet
    return frozenset(r[0] for r in rows) == head_revisions()


def migrate(url: str) -> None:
    """Apply every pending migration to the database at ``url`` (idempotent).

    On PostgreSQL the upgrade runs under the advisory lock :attr:`ClusterLock.MIGRATIONS`,
    held on a connection of its own: replicas starting together against one database take
    turns, and those that waited find the schema at its head and do nothing. A database
    already at its head costs one query and no lock (the common start).
    """
    engine = create_engine(_sync_url(url))
    try:
        with engine.connect() as conn:
            if _at_head(conn):
                return
        with _migration_lock(engine):
            with engine.connect() as conn:
                if _at_head(conn):
                    return  # another replica migrated while we waited
            from alembic import command

            with engine.begin() as conn:
                command.upgrade(_alembic_config(conn), "head")
    except Exception as exc:
        raise StoreError(f"cannot migrate the database: {exc}") from exc
    finally:
        engine.dispose()


@contextmanager
def _migration_lock(engine: Any) -> Iterator[None]:
    """Hold :attr:`ClusterLock.MIGRATIONS` on PostgreSQL; elsewhere nothing (SQLite is one
    process's, and its own write lock serialises the rare second one)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = int(ClusterLock.MIGRATIONS)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            log.info("waiting for another server %s", ClusterLock.MIGRATIONS.holder_is)
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            # Closing the connection would release it too; say so explicitly while it is open.
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


@dataclass(frozen=True, slots=True)
class Pool:
    """One connection pool's settings, all chosen (SQLAlchemy's ``max_overflow`` is always 0).

    Attributes:
        size: connections kept open; also how many callers the admission queue lets through
            at once, so the pool itself never makes anyone wait.
        timeout: seconds a checkout may wait inside the pool. Admission keeps the pool from
            running dry, so this is a safety net that reports a bug, not a wait anyone makes.
        pre_ping: test a connection before handing it out (a server-side database can drop
            idle connections; a local file cannot).
        recycle: seconds after which a connection is replaced; ``-1`` never.
    """

    size: int
    timeout: float
    pre_ping: bool
    recycle: float


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """Every limit between the repositories and the database (docs/design.md "Storage").

    Attributes:
        readers: the pool for reads; on PostgreSQL the only pool, shared by writes.
        writer: SQLite's write pool (one connection: SQLite has one write lock); ``None`` where
            writes share ``readers`` (PostgreSQL: row locks, many writers at once).
        lock_wait: SQLite ``busy_timeout``: how long a write waits for *another process*
            holding the write lock (in this process writes already take turns).
        connect_timeout: PostgreSQL: seconds to establish a connection before failing.
        statement_timeout: PostgreSQL: seconds one statement may run before failing; a
            statement this slow means a broken database, not a busy one.

    A limit that does not apply to a backend is ``None``.
    """

    readers: Pool
    writer: Pool | None
    lock_wait: float | None
    connect_timeout: float | None
    statement_timeout: float | None

    @classmethod
    def sqlite(cls) -> DatabaseLimits:
        """One writer connection and four readers (WAL lets readers run beside the writer)."""
        return cls(
            readers=Pool(size=4, timeout=10.0, pre_ping=False, recycle=-1),
            writer=Pool(size=1, timeout=10.0, pre_ping=False, recycle=-1),
            lock_wait=30.0,
            connect_timeout=None,
            statement_timeout=None,
        )

    @classmethod
    def postgresql(cls) -> DatabaseLimits:
        """Ten connections per server, tested before use and replaced every 30 minutes."""
        return cls(
            readers=Pool(size=10, timeout=10.0, pre_ping=True, recycle=1800.0),
            writer=None,
            lock_wait=None,
            connect_timeout=10.0,
            statement_timeout=30.0,
        )

    @classmethod
    def for_url(cls, url: str) -> DatabaseLimits:
        """The limits for the backend ``url`` names."""
        return cls.sqlite() if make_url(url).get_backend_name() == "sqlite" else cls.postgresql()


def _engine(url: str, pool: Pool, connect_args: dict[str, Any]) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool.size,
        max_overflow=0,
        pool_timeout=pool.timeout,
        pool_pre_ping=pool.pre_ping,
        pool_recycle=pool.recycle,
        pool_reset_on_return="rollback",
        connect_args=connect_args,
    )


def _sqlite_engine(url: str, pool: Pool, limits: DatabaseLimits, *, writer: bool) -> AsyncEngine:
    """A SQLite engine for the writer or for the readers.

    The writer's transactions begin ``IMMEDIATE`` (``sqlite3``'s ``isolation_level`` in its
    legacy transaction control, chosen explicitly: ``sqlite3`` emits the BEGIN with the first
    INSERT/UPDATE/DELETE of a transaction, in the same call to its thread): the write
    lock is taken at BEGIN, where SQLite's busy handler waits for another process holding it;
    a deferred transaction that upgrades a read lock later can get SQLITE_BUSY at once, busy
    handler or not. Reads run as single statements under WAL (a snapshot each, never blocked
    by the writer), on ``query_only`` connections so that no write can bypass the writer's
    turn. (SQLAlchemy's recipe of emitting BEGIN from the ``begin`` event costs two more
    round trips to aiosqlite's thread per transaction: twice the time of a heartbeat write.)
    """
    connect_args: dict[str, Any] = {"isolation_level": "IMMEDIATE" if writer else "DEFERRED"}
    if hasattr(sqlite3, "LEGACY_TRANSACTION_CONTROL"):  # Python 3.12+: say so, as 3.16 changes it
        connect_args["autocommit"] = sqlite3.LEGACY_TRANSACTION_CONTROL
    engine = _engine(url, pool, connect_args)
    busy_ms = round((limits.lock_wait or 0.0) * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not writer:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    event.listen(engine.sync_engine, "connect", on_connect)
    return engine


@contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Map database failures to the project's tree; the message names only the error class."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict("the record already exists or is still referenced") from exc
    except (SQLAlchemyError, OSError) as exc:  # OSError: asyncpg's refused or timed-out connect
        raise StoreError(f"database {action} failed: {exc.__class__.__name__}") from exc


class CommitHook(Protocol):
    """Work that joins every write transaction at its end (the audit trail's records: see
    ``store.audit``), so that it commits or rolls back with the change it belongs to."""

    async def before_commit(self, conn: AsyncConnection) -> Callable[[bool], None] | None:
        """The transaction's statements have run; add this hook's own, last. May return a
        callable to be told whether the transaction then committed (True) or not."""

    def release(self, conn: AsyncConnection) -> None:
        """The transaction is about to end (either way): forget what was kept on ``conn``
        (a pooled connection outlives the transaction)."""


class Database:
    """The database behind its admission queues and transaction wrappers.

    Callers wait in FIFO order for a connection (``asyncio.Semaphore``); nobody's wait has a
    deadline of ours, because a busy database must delay callers, not fail them. What bounds
    the queue is the callers: each holds at most one transaction at a time, the server caps its
    connections, and heartbeats are group-committed (``NodeRepository.heartbeat``), so they take
    at most two places however many nodes beat. What bounds each turn is the database: the
    statement time-out on PostgreSQL, the lock wait on SQLite.

    Transactions must not nest: a transaction that waited for a second one while holding its
    own slot could starve the queue.
    """

    def __init__(self, url: str, limits: DatabaseLimits | None = None) -> None:
        url = async_url(url)
        self._url = url
        self.limits = limits or DatabaseLimits.for_url(url)
        self.backend = make_url(url).get_backend_name()
        lim = self.limits
        if self.backend == "sqlite":
            writer_pool = lim.writer or replace(lim.readers, size=1)
            self._reader = _sqlite_engine(url, lim.readers, lim, writer=False)
            self._writer = _sqlite_engine(url, writer_pool, lim, writer=True)
            self._read_turns = asyncio.Semaphore(lim.readers.size)
            # SQLite has one write lock: one write transaction at a time, the rest queue here.
            self._write_turns = asyncio.Semaphore(1)
        else:
            connect_args: dict[str, Any] = {}
            if make_url(url).get_dialect().driver == "asyncpg":
                if lim.connect_timeout is not None:
                    connect_args["timeout"] = lim.connect_timeout
                if lim.statement_timeout is not None:
                    connect_args["command_timeout"] = lim.statement_timeout
            self._reader = self._writer = _engine(url, lim.readers, connect_args)
            self._read_turns = self._write_turns = asyncio.Semaphore(lim.readers.size)
        self.commit_hook: CommitHook | None = None
        """Joins every write transaction at its end (``Store.open`` sets the audit trail's)."""

    @property
    def engine(self) -> AsyncEngine:
        """The engine writes go through (for migrations and test set-up, not repositories)."""
        return self._writer

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (rolled back at the end), after waiting for a turn.

        Raises:
            StoreError: the database failed.
        """
        async with self._read_turns:
            with _store_errors("read"):
                async with self._reader.connect() as conn:
                    yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception.

        Raises:
            Conflict: a uniqueness or foreign-key constraint refused the change.
            StoreError: the database failed.
        """
        hook = self.commit_hook
        async with self._write_turns:
            with _store_errors("write"):
                outcome: Callable[[bool], None] | None = None
                try:
                    async with self._writer.begin() as conn:
                        try:
                            yield conn
                            if hook is not None:
                                outcome = await hook.before_commit(conn)
                        finally:
                            if hook is not None:
                                hook.release(conn)
                except BaseException:
                    if outcome is not None:
                        outcome(False)
                    raise
                if outcome is not None:
                    outcome(True)

    @property
    def shared(self) -> bool:
        """Whether several server processes may use this database (anything but SQLite,
        which is one process's file in its data directory)."""
        return self.backend != "sqlite"

    @asynccontextmanager
    async def exclusive(self, lock: ClusterLock) -> AsyncIterator[None]:
        """Hold ``lock`` across every process using this database for the block.

        On PostgreSQL a session-level advisory lock on a connection of its own, outside the
        pool (so the pool's and the admission queue's arithmetic is untouched, and the block
        may use the store freely): replicas take turns, and a replica that dies holding it
        releases it with its connection. The wait has no deadline of ours and no statement
        time-out (the holder may be migrating or issuing certificates); it is said once in the
        log. On SQLite nothing is taken: one process uses the file, as before.

        Blocks must not nest (a second ``exclusive`` would wait on another connection).

        Raises:
            StoreError: the database failed.
        """
        if self.backend != "postgresql":
            yield
            return
        connect_args: dict[str, Any] = {}
        asyncpg = make_url(self._url).get_dialect().driver == "asyncpg"
        if asyncpg and self.limits.connect_timeout is not None:
            connect_args["timeout"] = self.limits.connect_timeout
        engine = create_async_engine(
            self._url, poolclass=NullPool, connect_args=connect_args
        ).execution_options(isolation_level="AUTOCOMMIT")
        key = {"k": int(lock)}
        try:
            with _store_errors("lock"):
                conn = await engine.connect()
            try:
                with _store_errors("lock"):
                    taken = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), key)
                    if not taken:
                        log.info("waiting for another server %s", lock.holder_is)
                        await conn.execute(text("SELECT pg_advisory_lock(:k)"), key)
                try:
                    yield
                finally:
                    with suppress(SQLAlchemyError, OSError):
                        # Closing the connection releases it too; say so while it is open.
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
            finally:
                await conn.close()
        finally:
            await engine.dispose()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
