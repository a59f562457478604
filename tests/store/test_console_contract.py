"""The console repository's contract (sign-ins, TOTP devices), on SQLite and PostgreSQL."""

from __future__ import annotations

from hatchway.store.console import ConsoleLogin
from hatchway.store.store import Store
from tests.store.conftest import with_store


def login(token_hash: str, user_id: str = "u1", created: float = 100.0) -> ConsoleLogin:
    return ConsoleLogin(token_hash, "c" * 64, user_id, created, created, "192.0.2.1")


def test_sign_ins_are_created_read_touched_and_deleted(url: str) -> None:
    async def body(store: Store) -> None:
        repo = store.console
        await repo.create_login(login("a" * 64))
        assert await repo.login("a" * 64) == login("a" * 64)
        assert await repo.login("b" * 64) is None
        await repo.touch_login("a" * 64, 150.0)
        row = await repo.login("a" * 64)
        assert row is not None and (row.created_at, row.last_seen_at) == (100.0, 150.0)
        assert await repo.delete_login("a" * 64) is True
        assert await repo.delete_login("a" * 64) is False
        assert await repo.login("a" * 64) is None

    with_store(url, body)


def test_purge_forgets_idle_and_old_sign_ins_and_a_user_can_be_signed_out_everywhere(
    url: str,
) -> None:
    async def body(store: Store) -> None:
        repo = store.console
        await repo.create_login(login("1" * 64, created=10.0))  # too old
        await repo.create_login(login("2" * 64, created=100.0))
        await repo.touch_login("2" * 64, 120.0)  # idle since 120
        await repo.create_login(login("3" * 64, created=100.0))
        await repo.touch_login("3" * 64, 200.0)  # fresh
        await repo.create_login(login("4" * 64, user_id="u2", created=100.0))
        await repo.touch_login("4" * 64, 200.0)
        assert await repo.purge_logins(idle_before=150.0, created_before=50.0) == 2
        assert [await repo.login(c * 64) is not None for c in "1234"] == [
            False,
            False,
            True,
            True,
        ]
        assert await repo.delete_logins_of("u1") == 1
        assert await repo.login("4" * 64) is not None

    with_store(url, body)


def test_a_totp_step_is_used_once_and_only_moving_forward(url: str) -> None:
    async def body(store: Store) -> None:
        repo = store.console
        assert await repo.mfa("u1") is None
        await repo.put_pending_mfa("u1", "v1:secret", 5.0)
        device = await repo.mfa("u1")
        assert device is not None and not device.enabled and device.last_step == 0
        await repo.put_pending_mfa("u1", "v1:other", 6.0)  # a pending one is replaced
        device = await repo.mfa("u1")
        assert device is not None and device.secret_encrypted == "v1:other"
        assert await repo.use_step("u1", 1000, enable=True) is True
        assert await repo.use_step("u1", 1000) is False  # the same code again
        assert await repo.use_step("u1", 999) is False  # an older one
        assert await repo.use_step("u1", 1001) is True
        device = await repo.mfa("u1")
        assert device is not None and device.enabled and device.last_step == 1001
        await repo.put_pending_mfa("u1", "v1:third", 7.0)  # an enabled one stays
        device = await repo.mfa("u1")
        assert device is not None and device.secret_encrypted == "v1:other"
        assert await repo.delete_mfa("u1") is True
        assert await repo.mfa("u1") is None

    with_store(url, body)
