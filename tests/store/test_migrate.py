"""``migrate`` skips alembic when the schema is already at its head (server start-up time)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from hatchway.store.database import (
    MIGRATIONS_DIR,
    _alembic_config,
    _at_head,
    _sync_url,
    head_revisions,
    migrate,
)
from hatchway.store.store import Store
from tests.store.conftest import run


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


def _to_revision(url: str, revision: str) -> None:
    """Move the database at ``url`` to ``revision`` (up or down) with alembic."""
    from alembic import command

    engine = create_engine(_sync_url(url))
    try:
        with engine.begin() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            config = _alembic_config(conn)
            if int(current) > int(revision):
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
    finally:
        engine.dispose()


def test_0004_makes_every_existing_user_an_administrator(url: str) -> None:
    """Before issue 6 every user could do everything: upgrading must not take that away."""
    migrate(url)
    _to_revision(url, "0003")  # also runs 0004's downgrade
    engine = create_engine(_sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM access_keys"))
            conn.execute(text("DELETE FROM users"))
            conn.execute(
                text(
                    "INSERT INTO users (user_id, name, created_at) VALUES "
                    "('AIDA0000000000000001', 'admin', 1.0), ('AIDA0000000000000002', 'ops', 2.0)"
                )
            )
    finally:
        engine.dispose()
    migrate(url)

    async def check() -> None:
        store = Store.open(url)
        try:
            for user_id in ("AIDA0000000000000001", "AIDA0000000000000002"):
                labels = [p.label for p in await store.identity.policies_for(user_id)]
                assert labels == ["arn:aws:iam::aws:policy/AdministratorAccess"]
                user = await store.identity.user(user_id)
                assert user is not None and user.tags == {} and user.path == "/"
                assert user.password_hash is None
            assert await store.identity.generation() >= 1
        finally:
            await store.close()

    run(check())
