"""Opening the database and bringing its schema up to date.

The embedded default is SQLite in the data directory; any SQLAlchemy URL with an async driver
works (``postgresql+asyncpg://`` for scale-out). Alembic is configured here in code, so a
non-editable install finds its migration scripts as package data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
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


def migrate(url: str) -> None:
    """Apply every pending migration to the database at ``url`` (idempotent)."""
    from alembic import command

    engine = create_engine(_sync_url(url))
    try:
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
