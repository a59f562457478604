"""Console sign-in with a fake clock: passwords, TOTP, expiry, the failure back-off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from hatchway.auth.secretbox import SecretBox
from hatchway.auth.tokens import hash_secret, hash_token
from hatchway.auth.totp import STEP
from hatchway.errors import AuthError, Conflict, Throttled
from hatchway.server.console.logins import ConsoleLogins, MfaRequired, SignInFailed
from hatchway.server.settings import ServerSettings
from hatchway.server.throttle import BackoffPolicy, FailureLimiter
from hatchway.server.verifier import SecretVerifier
from hatchway.store.database import sqlite_url
from hatchway.store.records import User
from hatchway.store.store import Store
from tests.fakes import FakeClock

PASSWORD = "Corr3ct-Horse-Battery"
# Cheap scrypt for tests: the parameters live in the hash, verification follows them.
HASHED = hash_secret(PASSWORD, n=2**4, r=1, p=1)


def run(tmp_path: Path, body: Callable[[ConsoleLogins, Store, FakeClock], Awaitable[None]]) -> None:
    async def main() -> None:
        store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
        clock = FakeClock(1_800_000_000.0)
        settings = ServerSettings(
            data_dir=tmp_path, tls=True, console_idle_timeout=600, console_lifetime=3600
        )
        limiter = FailureLimiter(BackoffPolicy(free_failures=3, first_delay=10), clock=clock)
        logins = ConsoleLogins(
            store,
            SecretBox(b"k" * 32),
            settings,
            "123456789012",
            clock,
            SecretVerifier(),
            limiter,
        )
        await store.identity.create_user(User("u1", "alice", 0.0, tags={"team": "a"}))
        await store.identity.set_password("alice", HASHED)
        await store.identity.create_user(User("u2", "nopass", 0.0))
        try:
            await body(logins, store, clock)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_sign_in_gives_tokens_stored_only_as_hashes_and_a_principal(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        signed = await logins.sign_in("alice", PASSWORD, None, "192.0.2.7")
        assert signed.token != signed.csrf and len(signed.token) >= 43
        row = await store.console.login(hash_token(signed.token))
        assert row is not None and row.csrf_hash == hash_token(signed.csrf)
        assert await store.console.login(signed.token) is None  # not stored in clear
        who = await logins.authenticate(signed.token, "192.0.2.7")
        assert who.principal.user_name == "alice"
        assert dict(who.principal.tags) == {"team": "a"}
        assert who.principal.secure_transport and who.principal.source_ip == "192.0.2.7"
        assert who.csrf_ok(signed.csrf)
        assert not who.csrf_ok(signed.token) and not who.csrf_ok("") and not who.csrf_ok(None)

    run(tmp_path, body)


def test_wrong_name_password_or_no_password_fail_alike(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        messages = set()
        for name, password in (("alice", "wrong"), ("nobody", PASSWORD), ("nopass", PASSWORD)):
            with pytest.raises(SignInFailed) as failed:
                await logins.sign_in(name, password, None, f"192.0.2.{len(messages) + 10}")
            messages.add(failed.value.message)
        assert len(messages) == 1
        with pytest.raises(AuthError):
            await logins.authenticate(None, None)
        with pytest.raises(AuthError):
            await logins.authenticate("made-up", None)

    run(tmp_path, body)


def test_failures_of_a_source_make_it_wait_and_a_success_forgets_them(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        for _ in range(3):
            with pytest.raises(SignInFailed):
                await logins.sign_in("alice", "wrong", None, "198.51.100.1")
        with pytest.raises(SignInFailed):  # the 4th failure sets the wait
            await logins.sign_in("alice", "wrong", None, "198.51.100.1")
        with pytest.raises(Throttled):  # even the right password waits
            await logins.sign_in("alice", PASSWORD, None, "198.51.100.1")
        await logins.sign_in("alice", PASSWORD, None, "198.51.100.2")  # other sources do not
        clock.advance(11)
        await logins.sign_in("alice", PASSWORD, None, "198.51.100.1")

    run(tmp_path, body)


def test_idle_and_absolute_expiry_and_sign_out(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        idle = await logins.sign_in("alice", PASSWORD, None, None)
        busy = await logins.sign_in("alice", PASSWORD, None, None)
        for _ in range(6):  # used every 500 s (idle limit 600 s) up to 3000 s
            clock.advance(500)
            await logins.authenticate(busy.token, None)
        with pytest.raises(AuthError, match="expired"):
            await logins.authenticate(idle.token, None)
        clock.advance(500)  # 3500 s: still within the 3600 s lifetime
        await logins.authenticate(busy.token, None)
        clock.advance(101)
        with pytest.raises(AuthError, match="expired"):
            await logins.authenticate(busy.token, None)
        assert await store.console.login(hash_token(busy.token)) is None  # removed
        fresh = await logins.sign_in("alice", PASSWORD, None, None)
        await logins.sign_out(await logins.authenticate(fresh.token, None))
        with pytest.raises(AuthError):
            await logins.authenticate(fresh.token, None)

    run(tmp_path, body)


def test_deleting_the_password_ends_sign_ins(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        signed = await logins.sign_in("alice", PASSWORD, None, None)
        await store.identity.set_password("alice", None)
        with pytest.raises(AuthError, match="no longer"):
            await logins.authenticate(signed.token, None)

    run(tmp_path, body)


def _code(secret_b32: str, now: float) -> str:
    import base64

    padded = secret_b32 + "=" * (-len(secret_b32) % 8)
    return TOTP(base64.b32decode(padded), 6, SHA1(), STEP).generate(now).decode()


def test_totp_enrolment_then_sign_in_needs_a_fresh_code(tmp_path: Path) -> None:
    async def body(logins: ConsoleLogins, store: Store, clock: FakeClock) -> None:
        who = await logins.authenticate(
            (await logins.sign_in("alice", PASSWORD, None, None)).token, None
        )
        secret, uri = await logins.begin_mfa(who)
        assert uri.startswith("otpauth://totp/Hatchway%3Aalice?") and f"secret={secret}" in uri
        device = await store.console.mfa("u1")
        assert device is not None and secret not in device.secret_encrypted  # encrypted
        with pytest.raises(SignInFailed):
            await logins.confirm_mfa(who, "000000" if _code(secret, clock()) != "000000" else "1")
        await logins.confirm_mfa(who, _code(secret, clock()))
        assert await logins.mfa_enabled("u1")
        with pytest.raises(Conflict):
            await logins.begin_mfa(who)
        with pytest.raises(MfaRequired):
            await logins.sign_in("alice", PASSWORD, None, None)
        with pytest.raises(SignInFailed):  # the code used to confirm cannot sign in
            await logins.sign_in("alice", PASSWORD, _code(secret, clock()), None)
        clock.advance(STEP)
        code = _code(secret, clock())
        await logins.sign_in("alice", PASSWORD, code, None)
        with pytest.raises(SignInFailed):  # nor twice
            await logins.sign_in("alice", PASSWORD, code, None)
        clock.advance(STEP)
        await logins.disable_mfa(who, _code(secret, clock()))
        await logins.sign_in("alice", PASSWORD, None, None)

    run(tmp_path, body)
