"""The delivery worker: posts the outbox's deliveries to their webhooks, signed, retried.

One background task per server process (:meth:`DeliveryWorker.run`). Each pass reads every
subscription's oldest pending delivery (its head, ``store.events``); for each head that is due
it starts a *drain* of that subscription, which posts the head and, once it is delivered (or
given up), the next one, until the subscription has nothing due. So a failing receiver holds up
its own subscription only, and each subscription gets its events in order, at least once.

The worker wakes when a transaction committed deliveries in this process (``Outbox.listen``),
when the next retry is due, and at least every ``poll_interval`` (events written by another
replica, leases that expired). Pending deliveries survive a restart: they are in the database,
and the first pass after start picks them up. A delivery being posted is leased; a server that
stops gives its leases back, one that crashed leaves them to expire after ``LEASE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp

from hatchway import __version__
from hatchway.auth.secretbox import SecretBox
from hatchway.errors import CorruptData, HatchwayError
from hatchway.server.events.retry import RetryPolicy
from hatchway.server.events.signature import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from hatchway.store.events import DeliveryStatus, EventRepository, Head

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a receiver has to answer a delivery (connecting included)."""
LEASE: Final = DEFAULT_TIMEOUT + 20.0
"""Seconds a delivery being posted is reserved for this process."""
POLL_INTERVAL: Final = 1.0
CONCURRENCY: Final = 8
"""Subscriptions drained at once."""
RETENTION: Final = 7 * 24 * 3600.0
"""Delivered and failed deliveries are kept this long in the delivery log."""
PURGE_EVERY: Final = 3600.0
USER_AGENT: Final = f"Hatchway-Webhooks/{__version__}"


def secret_context(subscription_id: str) -> bytes:
    """Associated data of a subscription's encrypted secret: it decrypts for that row only."""
    return b"event-subscription:" + subscription_id.encode()


@dataclass(frozen=True, slots=True)
class PostResult:
    """What a receiver answered: its HTTP status (``None``: no answer) and, unless it took
    the delivery (2xx), why it counts as failed."""

    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Poster(Protocol):
    """Posts one delivery (``HttpPoster``; tests use a fake)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult: ...

    async def close(self) -> None: ...


class HttpPoster:
    """Posts with aiohttp: ``timeout`` for the whole exchange, redirects not followed (a 3xx
    is a failure, so a delivery never lands on a host it was not addressed to), no cookies,
    no proxy from the environment, certificates checked against the system's CAs."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        try:
            async with self._session.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                status = response.status
        except TimeoutError:
            return PostResult(None, f"no answer within {self._timeout:g} s")
        except aiohttp.ClientError as exc:
            return PostResult(None, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
        if 200 <= status < 300:
            return PostResult(status)
        if 300 <= status < 400:
            return PostResult(status, f"HTTP {status}: redirects are not followed")
        return PostResult(status, f"HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class DeliveryWorker:
    """Delivers the outbox (see the module docstring).

    Args:
        events: the outbox and delivery log.
        box: decrypts subscriptions' secrets (to sign).
        poster: posts one delivery.
        clock: wall-clock seconds (delivery times are compared across replicas).
        policy: when to retry and when to give up.
    """

    def __init__(
        self,
        events: EventRepository,
        box: SecretBox,
        poster: Poster,
        *,
        clock: Callable[[], float],
        policy: RetryPolicy | None = None,
        lease: float = LEASE,
        poll_interval: float = POLL_INTERVAL,
        concurrency: int = CONCURRENCY,
        retention: float = RETENTION,
    ) -> None:
        self._events = events
        self._box = box
        self._poster = poster
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._lease = lease
        self._poll_interval = poll_interval
        self._concurrency = concurrency
        self._retention = retention
        self._wake = asyncio.Event()
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._held: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = -math.inf

    # ---- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Run in the background (from the server's event loop) until :meth:`stop`."""
        if self._task is None:
            self._events.outbox.listen(self.wake)
            self._task = asyncio.get_running_loop().create_task(self.run(), name="webhooks")

    async def stop(self) -> None:
        """Stop posting; leases of deliveries cut short are given back. Idempotent."""
        tasks = [t for t in (self._task, *self._drains.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        held, self._held = list(self._held), set()
        try:
            await self._events.release(held)
        except HatchwayError as exc:  # they expire by themselves
            log.warning("cannot give back %d webhook delivery lease(s): %s", len(held), exc)
        await self._poster.close()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were committed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            self._wake.clear()
            next_due: float | None = None
            try:
                next_due = await self.deliver_due()
                await self._purge_now_and_then()
            except HatchwayError as exc:
                log.warning("webhook deliveries: %s; trying again shortly", exc.message)
            except Exception:
                log.exception("webhook deliveries failed; trying again shortly")
            wait = self._poll_interval
            if next_due is not None:
                wait = min(wait, max(next_due - self._clock(), 0.0))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    # ---- one pass -------------------------------------------------------------------------

    async def deliver_due(self) -> float | None:
        """Start draining every subscription whose head is due and that no drain of this
        worker holds; returns when the earliest head that is not due yet becomes due (None:
        none is waiting)."""
        now = self._clock()
        next_due: float | None = None
        for head in await self._events.heads():
            if head.subscription_id in self._drains:
                continue
            due = max(head.next_attempt_at, head.lease_until or 0.0)
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if len(self._drains) >= self._concurrency:
                continue  # a drain that ends wakes the worker

            task = asyncio.get_running_loop().create_task(self._drain(head))
            self._drains[head.subscription_id] = task
        return next_due

    @property
    def busy(self) -> int:
        """Subscriptions being drained now."""
        return len(self._drains)

    async def settle(self) -> None:
        """Wait until the drains under way are done (tests)."""
        while self._drains:
            await asyncio.gather(*self._drains.values(), return_exceptions=True)

    async def _drain(self, head: Head) -> None:
        subscription_id = head.subscription_id
        try:
            current: Head | None = head
            while current is not None and await self._attempt(current):
                heads = await self._events.heads(subscription_id)
                current = heads[0] if heads else None
                if current is not None and current.next_attempt_at > self._clock():
                    break
        except HatchwayError as exc:
            log.warning("webhook subscription %s: %s", subscription_id, exc.message)
        except Exception:  # a task boundary: logged, and the next pass tries again
            log.exception("webhook subscription %s: delivery failed", subscription_id)
        finally:
            del self._drains[subscription_id]
            self.wake()

    async def _attempt(self, head: Head) -> bool:
        """Post ``head`` once and log the attempt; True when it is settled (delivered or
        given up) and the subscription's next delivery may go."""
        if not await self._events.claim(head.delivery_id, now=self._clock(), lease=self._lease):
            return False  # another process is posting it
        self._held.add(head.delivery_id)
        try:
            result = await self._post(head)
            now = self._clock()
            next_attempt: float | None = None
            if result.ok:
                status = DeliveryStatus.DELIVERED
            else:
                next_attempt = self._policy.next_attempt(
                    attempts=head.attempts + 1, created_at=head.created_at, now=now
                )
                status = (
                    DeliveryStatus.PENDING if next_attempt is not None else DeliveryStatus.FAILED
                )
                self._log_failure(head, result, status)
            await self._events.record_attempt(
                head.delivery_id,
                now=now,
                status=status,
                status_code=result.status,
                error=result.error,
                next_attempt_at=next_attempt,
            )
        finally:
            self._held.discard(head.delivery_id)
        return status is not DeliveryStatus.PENDING

    async def _post(self, head: Head) -> PostResult:
        try:
            secret = self._box.decrypt(
                head.secret_encrypted, context=secret_context(head.subscription_id)
            ).decode("utf-8")
        except (CorruptData, UnicodeDecodeError):
            return PostResult(
                None, "cannot decrypt the subscription's secret (another master key?)"
            )
        body = head.body.encode("utf-8")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: head.event_id,
            EVENT_TYPE_HEADER: head.event_type,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        return await self._poster.post(head.url, body, headers)

    @staticmethod
    def _log_failure(head: Head, result: PostResult, status: DeliveryStatus) -> None:
        if status is DeliveryStatus.FAILED:
            log.warning(
                "webhook subscription %s: gave up delivering event %s (%s) after %d attempts: %s",
                head.subscription_id,
                head.event_id,
                head.event_type,
                head.attempts + 1,
                result.error,
            )
        else:
            log.info(
                "webhook subscription %s: delivery of event %s failed (attempt %d): %s",
                head.subscription_id,
                head.event_id,
                head.attempts + 1,
                result.error,
            )

    async def _purge_now_and_then(self) -> None:
        now = self._clock()
        if now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        gone = await self._events.purge(now - self._retention)
        if gone:
            log.info("forgot %d webhook deliveries older than %.0f days", gone,
                     self._retention / 86400)  # fmt: skip
