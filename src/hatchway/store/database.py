"""Opening the database and bringing its schema up to date.

The embedded default is SQLite in the data directory; any SQLAlchemy URL with an async driver
works (``postgresql+asyncpg://`` for scale-out). Alembic is configured here in code, so a
non-editable install finds its migration scripts as package data.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hatchway.errors import StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of the SQLite database at ``path``."""
    return f"sqlite+aiosqlite:///{path}"


def _sync_url(url: str) -> str:
    u = make_url(url)
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
    """Apply every pending migration to the database at ``url`` (idempotent)."""
    engine = create_engine(_sync_url(url))
    try:
        with engine.connect() as conn:
            if _at_head(conn):
                return
        from alembic import command

        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    except Exception as exc:
        raise StoreError(f"cannot migrate the database: {exc}") from exc
    finally:
        engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``, with SQLite tuned for concurrent readers (WAL)."""
    engine = create_async_engine(url)
    if make_url(url).get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine
