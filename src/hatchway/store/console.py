"""The console's rows: signed-in browsers (hashed tokens) and users' TOTP second factors."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from hatchway.store import schema as t
from hatchway.store.repositories import _Repository

__all__ = ["ConsoleLogin", "ConsoleRepository", "MfaDevice"]


@dataclass(frozen=True, slots=True)
class ConsoleLogin:
    """One signed-in browser. Only hashes of its tokens are kept."""

    token_hash: str
    csrf_hash: str
    user_id: str
    created_at: float
    last_seen_at: float
    source_ip: str = ""


@dataclass(frozen=True, slots=True)
class MfaDevice:
    """A user's TOTP secret (encrypted), whether it is in use, and the newest step used."""

    user_id: str
    secret_encrypted: str
    enabled: bool
    created_at: float
    last_step: int


class ConsoleRepository(_Repository):
    """Console sign-ins and TOTP devices."""

    # ---- sign-ins ---------------------------------------------------------------------------

    async def create_login(self, login: ConsoleLogin) -> None:
        values = {name: getattr(login, name) for name in ConsoleLogin.__slots__}
        await self._write(insert(t.console_logins).values(**values))

    async def login(self, token_hash: str) -> ConsoleLogin | None:
        rows = await self._fetch(
            select(t.console_logins).where(t.console_logins.c.token_hash == token_hash)
        )
        if not rows:
            return None
        r = rows[0]
        return ConsoleLogin(
            r.token_hash, r.csrf_hash, r.user_id, r.created_at, r.last_seen_at, r.source_ip
        )

    async def touch_login(self, token_hash: str, now: float) -> None:
        c = t.console_logins.c
        await self._write(
            update(t.console_logins).where(c.token_hash == token_hash).values(last_seen_at=now)
        )

    async def delete_login(self, token_hash: str) -> bool:
        c = t.console_logins.c
        return await self._write(delete(t.console_logins).where(c.token_hash == token_hash)) > 0

    async def delete_logins_of(self, user_id: str) -> int:
        """Sign a user out everywhere (e.g. after enrolling a second factor)."""
        c = t.console_logins.c
        return await self._write(delete(t.console_logins).where(c.user_id == user_id))

    async def purge_logins(self, *, idle_before: float, created_before: float) -> int:
        """Forget sign-ins idle since ``idle_before`` or created before ``created_before``."""
        c = t.console_logins.c
        return await self._write(
            delete(t.console_logins).where(
                (c.last_seen_at < idle_before) | (c.created_at < created_before)
            )
        )

    # ---- TOTP devices -----------------------------------------------------------------------

    async def mfa(self, user_id: str) -> MfaDevice | None:
        rows = await self._fetch(select(t.console_mfa).where(t.console_mfa.c.user_id == user_id))
        if not rows:
            return None
        r = rows[0]
        return MfaDevice(r.user_id, r.secret_encrypted, bool(r.enabled), r.created_at, r.last_step)

    async def put_pending_mfa(self, user_id: str, secret_encrypted: str, now: float) -> None:
        """A new secret, not in use until :meth:`enable_mfa` (replaces a pending one only).

        Returns without change when the user already has an enabled device (callers check).
        """
        c = t.console_mfa.c
        async with self._transaction() as conn:
            await conn.execute(
                delete(t.console_mfa).where(c.user_id == user_id, c.enabled.is_(False))
            )
            rows = (await conn.execute(select(c.user_id).where(c.user_id == user_id))).all()
            if not rows:
                await conn.execute(
                    insert(t.console_mfa).values(
                        user_id=user_id,
                        secret_encrypted=secret_encrypted,
                        enabled=False,
                        created_at=now,
                        last_step=0,
                    )
                )

    async def use_step(self, user_id: str, step: int, *, enable: bool = False) -> bool:
        """Record that the code of time step ``step`` was used; False if it (or a later one)
        was used already (a code works once). ``enable`` also turns the device on."""
        c = t.console_mfa.c
        values: dict[str, object] = {"last_step": step}
        if enable:
            values["enabled"] = True
        stmt = update(t.console_mfa).where(c.user_id == user_id, c.last_step < step)
        return await self._write(stmt.values(**values)) == 1

    async def delete_mfa(self, user_id: str) -> bool:
        c = t.console_mfa.c
        return await self._write(delete(t.console_mfa).where(c.user_id == user_id)) > 0
