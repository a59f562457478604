"""``migrate`` skips alembic when the schema is already at its head (server start-up time)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from hatchway.store.database import MIGRATIONS_DIR, _at_head, head_revisions, migrate


def test_head_revisions_are_alembics_heads() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revisions() == frozenset(ScriptDirectory.from_config(config).get_heads())


def test_a_migrated_database_is_at_head_and_a_new_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "hatchway.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert not _at_head(conn)
        migrate(f"sqlite+aiosqlite:///{path}")
        with engine.connect() as conn:
            assert _at_head(conn)
        migrate(f"sqlite+aiosqlite:///{path}")  # again: nothing to do
    finally:
        engine.dispose()
