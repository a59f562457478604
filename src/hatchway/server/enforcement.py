"""Live enforcement: a session that its owner may no longer run is ended within seconds.

Policies are checked when a session starts, when its client re-attaches, and again whenever
anything that decides access may have changed: a user, a group membership, an access key, a
policy or attachment, or a node's tags. Every such change bumps a counter in the database
(``store.identity.generation``, in the change's own transaction); this module polls it (one
small read per ``interval``) and, when it moved, re-checks every session this server relays
with ``authz.Authorizer.session_decision``. A change made through this server also pokes the
loop at once (:meth:`LiveEnforcement.poke`), so revocation takes well under a second here and at
most about ``interval`` when made through another replica. Time-bound policies
(``DateLessThan`` on ``aws:CurrentTime``) are re-checked every ``full_check_every`` seconds
even when nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hatchway.errors import HatchwayError
from hatchway.server.authz import Authorizer
from hatchway.server.sessions import SessionService
from hatchway.store.store import Store

log = logging.getLogger(__name__)


class LiveEnforcement:
    """Re-checks live sessions when access may have changed, and ends the denied ones.

    Args:
        interval: seconds between two reads of the change counter.
        full_check_every: seconds after which sessions are re-checked even without a change.
        secure: whether clients reach this server over TLS (``aws:SecureTransport``).
        clock: a monotonic clock.
    """

    def __init__(
        self,
        store: Store,
        authz: Authorizer,
        sessions: SessionService,
        clock: Callable[[], float],
        *,
        secure: bool,
        interval: float = 1.0,
        full_check_every: float = 30.0,
    ) -> None:
        self._store = store
        self._authz = authz
        self._sessions = sessions
        self._clock = clock
        self._secure = secure
        self._interval = interval
        self._full_check_every = full_check_every
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self) -> None:
        """Something that decides access changed here: re-check now."""
        self._poked.set()

    async def _run(self) -> None:
        seen: int | None = None
        last_full = self._clock()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._poked.wait()
            poked = self._poked.is_set()
            self._poked.clear()
            try:
                generation = await self._store.identity.generation()
            except HatchwayError as exc:
                log.info("cannot read the access-change counter now: %s", exc.message)
                if poked:
                    self._poked.set()  # not checked yet: check as soon as it can be read
                continue
            # The first read sweeps too: sessions restored at start may predate a change.
            due = self._clock() - last_full >= self._full_check_every
            if poked or due or generation != seen:
                await self.sweep()
                last_full = self._clock()
                seen = generation

    async def sweep(self) -> int:
        """Re-check every live session; end the ones denied now. Returns how many ended."""
        ended = 0
        for session_id in self._sessions.live_session_ids():
            try:
                session = await self._store.sessions.get(session_id)
                if session is None or not session.status.is_active:
                    continue
                decision = await self._authz.session_decision(session, secure=self._secure)
                if decision.allowed:
                    continue
                await self._sessions.revoke(
                    session_id,
                    f"access revoked: {session.owner.rpartition('/')[2]} may no longer start "
                    f"sessions on {session.target} with {session.document_name} "
                    f"({decision.explain()})",
                )
                ended += 1
            except HatchwayError as exc:  # a failing database delays the check, no more
                log.warning("cannot re-check session %s now: %s", session_id, exc.message)
        return ended
