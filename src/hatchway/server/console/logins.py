"""Console sign-in: passwords (and TOTP) checked, cookie sessions stored hashed, expiry.

A sign-in gives the browser two random 256-bit tokens: the session token in an HttpOnly
cookie, and a CSRF token in a cookie the page's script reads and echoes in ``X-CSRF-Token``
on every state-changing request (double submit, checked against the stored hash, so a page of
another site that could somehow send the cookie still cannot produce the header). Only
SHA-256 hashes of both are stored (``store.console``), like data-channel tokens
(``auth.tokens``): a copy of the database signs nobody in.

A sign-in ends after ``console_idle_timeout`` without use, ``console_lifetime`` after it
began, at sign-out, and when its user is deleted. Wrong passwords count against the source
address in the server's failure limiter (``server.throttle``): after a few the source waits,
twice as long after each further failure; password hashes are checked on the bounded scrypt
pool (``server.verifier``), so a flood queues nowhere.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from hatchway.audit.events import HATCHWAY_SOURCE, AuditEvent, EventCode, Identity, IdentityType
from hatchway.auth.secretbox import SecretBox
from hatchway.auth.tokens import UNMATCHABLE_HASH, hash_token, new_token, tokens_equal
from hatchway.auth.totp import matching_step, new_secret, provisioning_uri, secret_base32
from hatchway.errors import AuthError, Conflict, HatchwayError, NotFound, Throttled
from hatchway.server.principal import Principal, user_arn
from hatchway.server.settings import ServerSettings
from hatchway.server.throttle import Attempt, FailureLimiter, source_key
from hatchway.server.verifier import SecretVerifier
from hatchway.store.console import ConsoleLogin
from hatchway.store.records import User
from hatchway.store.store import Store

__all__ = ["ConsoleLogins", "MfaRequired", "SignIn", "SignInFailed", "SignedIn"]

log = logging.getLogger(__name__)

TOUCH_EVERY = 30.0
"""Seconds between writes of a sign-in's last use (idle expiry is not finer than this)."""
ISSUER = "Hatchway"


class SignInFailed(AuthError):
    """Wrong user name, password or code (one message for all: no user enumeration)."""

    code = "SignInFailed"


class MfaRequired(AuthError):
    """The password was right and the user has a second factor: send the code too."""

    code = "MfaRequired"


@dataclass(frozen=True, slots=True)
class SignIn:
    """A new sign-in: the two tokens for the browser's cookies (never stored in clear)."""

    token: str
    csrf: str
    user: User


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A request's valid sign-in, its user, and the principal the console acts as."""

    login: ConsoleLogin
    user: User
    principal: Principal

    def csrf_ok(self, header: str | None) -> bool:
        """Whether ``header`` (``X-CSRF-Token``) is this sign-in's CSRF token."""
        return bool(header) and tokens_equal(hash_token(header or ""), self.login.csrf_hash)


class ConsoleLogins:
    """Signs users in and out and recognises their cookies.

    Args:
        clock: wall clock (expiry); tests pass a fake one.
        limiter: per-source failure back-off (its own, not the registrations').
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        settings: ServerSettings,
        account_id: str,
        clock: Callable[[], float],
        verifier: SecretVerifier,
        limiter: FailureLimiter,
    ) -> None:
        self._store = store
        self._box = box
        self._settings = settings
        self._account_id = account_id
        self._clock = clock
        self._verifier = verifier
        self._limiter = limiter

    async def sign_in(
        self,
        user_name: str,
        password: str,
        code: str | None,
        source: str | None,
        user_agent: str = "",
    ) -> SignIn:
        """Check the password (and the TOTP code of a user who has one); start a sign-in.

        Raises:
            Throttled: this source failed too often; it must wait.
            SignInFailed: wrong name, password or code (counted against the source).
            MfaRequired: right password, the user has a second factor and sent no code.

        Every attempt but a throttled one is recorded in the audit trail.
        """
        attempt = self._limiter.begin(source_key(source))  # Throttled: not recorded
        try:
            user = await self._check(user_name, password, code, source, attempt)
        except HatchwayError as exc:
            if not isinstance(exc, Throttled):
                await self._record(user_name, source, user_agent, exc)
            raise
        finally:
            self._limiter.end(attempt)
        token, csrf, now = new_token(), new_token(), self._clock()
        await self._store.console.create_login(
            ConsoleLogin(hash_token(token), hash_token(csrf), user.user_id, now, now, source or "")
        )
        await self._record(user.name, source, user_agent, None, user)
        log.info("console sign-in of %s from %s", user.name, source)
        return SignIn(token, csrf, user)

    async def _check(
        self,
        user_name: str,
        password: str,
        code: str | None,
        source: str | None,
        attempt: Attempt,
    ) -> User:
        """The user whose password (and code) these are; sets ``attempt``'s outcome."""
        with self._verifier.admission():
            user = await self._store.identity.user_by_name(user_name)
            stored = user.password_hash if user is not None else None
            # As much work for an unknown user as for a known one (no timing oracle).
            ok = await self._verifier.verify(password, stored or UNMATCHABLE_HASH)
        if user is None or stored is None or not ok:
            attempt.outcome = False
            log.info("console sign-in of %r failed from %s", user_name[:64], source)
            raise SignInFailed("Wrong user name or password.")
        device = await self._store.console.mfa(user.user_id)
        if device is not None and device.enabled:
            if not code:
                raise MfaRequired("Enter the code of your authenticator app.")
            secret = self._box.decrypt(device.secret_encrypted, context=_context(user.user_id))
            step = matching_step(secret, code, self._clock())
            if step is None or not await self._store.console.use_step(user.user_id, step):
                attempt.outcome = False
                log.info("console sign-in of %s: wrong code from %s", user.name, source)
                raise SignInFailed("Wrong code.")
        attempt.outcome = True
        return user

    async def _record(
        self,
        user_name: str,
        source: str | None,
        user_agent: str,
        error: HatchwayError | None,
        user: User | None = None,
    ) -> None:
        """A sign-in in the audit trail (``ConsoleSignIn``, as CloudTrail's ConsoleLogin):
        who tried, from where, and how it ended."""
        if user is not None:
            identity = Identity(
                IdentityType.USER, arn=user_arn(self._account_id, user.name), user_name=user.name
            )
        else:
            identity = Identity(IdentityType.ANONYMOUS, user_name=user_name[:64])
        await self._store.audit.append(
            AuditEvent(
                event_id=str(uuid.uuid4()),
                event_time=self._clock(),
                code=EventCode.API_CALL if error is None else EventCode.AUTHENTICATION_FAILED,
                event_name="ConsoleSignIn",
                event_source=HATCHWAY_SOURCE,
                identity=identity,
                source_ip=source or "",
                user_agent=user_agent[:1024],
                request_id=str(uuid.uuid4()),
                error_code=error.code if error is not None else "",
                error_message=error.message if error is not None else "",
            )
        )

    async def authenticate(self, token: str | None, source: str | None) -> SignedIn:
        """The sign-in of the cookie ``token``.

        Raises:
            AuthError: no cookie, unknown, expired, or its user is gone.
        """
        if not token:
            raise AuthError("Not signed in.")
        token_hash = hash_token(token)
        login = await self._store.console.login(token_hash)
        if login is None:
            raise AuthError("Not signed in (or the sign-in has ended).")
        now = self._clock()
        if (
            now - login.last_seen_at > self._settings.console_idle_timeout
            or now - login.created_at > self._settings.console_lifetime
        ):
            await self._store.console.delete_login(token_hash)
            raise AuthError("The sign-in has expired; sign in again.")
        user = await self._store.identity.user(login.user_id)
        if user is None or user.password_hash is None:
            await self._store.console.delete_login(token_hash)
            raise AuthError("The user can no longer sign in.")
        if now - login.last_seen_at >= TOUCH_EVERY:
            await self._store.console.touch_login(token_hash, now)
        principal = Principal(
            user.user_id,
            user.name,
            self._account_id,
            "",
            tags=MappingProxyType(dict(user.tags)),
            source_ip=source or "",
            secure_transport=self._settings.tls,
        )
        return SignedIn(login, user, principal)

    async def sign_out(self, signed_in: SignedIn) -> None:
        await self._store.console.delete_login(signed_in.login.token_hash)
        log.info("console sign-out of %s", signed_in.user.name)

    async def purge(self) -> int:
        """Forget expired sign-ins (run now and then)."""
        now = self._clock()
        return await self._store.console.purge_logins(
            idle_before=now - self._settings.console_idle_timeout,
            created_before=now - self._settings.console_lifetime,
        )

    # ---- TOTP enrolment ------------------------------------------------------------------

    async def mfa_enabled(self, user_id: str) -> bool:
        device = await self._store.console.mfa(user_id)
        return device is not None and device.enabled

    async def begin_mfa(self, signed_in: SignedIn) -> tuple[str, str]:
        """A new secret for the user to add to an app: (base32 secret, otpauth URI). It is
        used only once :meth:`confirm_mfa` saw a code of it.

        Raises:
            Conflict: the user has a second factor already (disable it first).
        """
        user = signed_in.user
        if await self.mfa_enabled(user.user_id):
            raise Conflict("A second factor is already enabled; disable it first.")
        secret = new_secret()
        await self._store.console.put_pending_mfa(
            user.user_id, self._box.encrypt(secret, context=_context(user.user_id)), self._clock()
        )
        return secret_base32(secret), provisioning_uri(secret, user.name, ISSUER)

    async def confirm_mfa(self, signed_in: SignedIn, code: str) -> None:
        """Turn the pending secret on, given a code of it.

        Raises:
            NotFound: nothing to confirm.
            SignInFailed: wrong code.
        """
        await self._check_code(signed_in, code, enable=True)
        log.info("console: %s enabled a second factor", signed_in.user.name)

    async def disable_mfa(self, signed_in: SignedIn, code: str) -> None:
        """Remove the user's second factor, given a current code of it."""
        await self._check_code(signed_in, code, enable=False)
        await self._store.console.delete_mfa(signed_in.user.user_id)
        log.info("console: %s disabled the second factor", signed_in.user.name)

    async def _check_code(self, signed_in: SignedIn, code: str, *, enable: bool) -> None:
        user_id = signed_in.user.user_id
        device = await self._store.console.mfa(user_id)
        if device is None or device.enabled == enable:
            raise NotFound("No second factor to " + ("confirm." if enable else "disable."))
        source = source_key(signed_in.principal.source_ip)
        attempt = self._limiter.begin(source)
        try:
            try:
                secret = self._box.decrypt(device.secret_encrypted, context=_context(user_id))
            except HatchwayError as exc:
                raise SignInFailed("The stored secret cannot be read; enrol again.") from exc
            step = matching_step(secret, code, self._clock())
            if step is None or not await self._store.console.use_step(user_id, step, enable=enable):
                attempt.outcome = False
                raise SignInFailed("Wrong code.")
            attempt.outcome = True
        finally:
            self._limiter.end(attempt)


def _context(user_id: str) -> bytes:
    """What a TOTP secret is bound to when encrypted: a secret copied to another user's row
    does not decrypt."""
    return b"console totp:" + user_id.encode()
