"""The NATS connection of one replica: sealed publish, subscribe and request/reply.

Subjects all live under the cluster's prefix (``--cluster-prefix``, default ``hatchway``), so
several clusters can share one NATS server; every message is sealed (``envelope``). The
connection re-dials on its own forever; while it is down, :attr:`Bus.connected` is False (the
replica reports itself unhealthy) and publishing raises ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hatchway.errors import ConfigError, RemoteProtocolError, Unavailable
from hatchway.server.cluster.envelope import Sealer

log = logging.getLogger(__name__)

__all__ = ["Bus", "BusOptions", "NoResponder"]

Handler = Callable[[str, bytes, str | None], Awaitable[None]]
"""A subscription's handler: (subject, opened body, reply subject or None)."""


#: Messages of ``concurrent`` subscriptions handled at once (the rest wait their turn).
MAX_CONCURRENT: Final = 256


class NoResponder(Unavailable):
    """Nobody subscribes to a request's subject: the replica it names is gone."""


@dataclass(frozen=True)
class BusOptions:
    """How to reach NATS (``hatchway server --nats-*``)."""

    servers: tuple[str, ...]
    prefix: str = "hatchway"
    name: str = "hatchway"
    token: str | None = field(default=None, repr=False)
    credentials_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    connect_timeout: float = 2.0
    #: Seconds to keep trying the first connection before giving up (start-up).
    first_connect_for: float = 30.0

    def tls_context(self) -> ssl.SSLContext | None:
        wants_tls = any(s.startswith("tls://") for s in self.servers)
        if not (wants_tls or self.tls_ca_file or self.tls_cert_file):
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca_file) if self.tls_ca_file else None
        )
        if self.tls_cert_file:
            context.load_cert_chain(
                str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None
            )
        return context


class Bus:
    """One replica's NATS connection (``open`` it, then ``close``)."""

    def __init__(self, options: BusOptions, sealer: Sealer) -> None:
        self.options = options
        self._sealer = sealer
        self._nc: Client | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self.connected = False
        #: Called (no arguments) after the connection came back from an outage.
        self.on_reconnected: Callable[[], None] | None = None
        self.on_disconnected: Callable[[], None] | None = None

    def subject(self, *parts: str) -> str:
        return ".".join((self.options.prefix, *parts))

    async def open(self) -> None:
        """Connect, trying for ``first_connect_for`` seconds; ConfigError if it never works."""
        o = self.options
        kwargs: dict[str, Any] = {
            "servers": list(o.servers),
            "name": o.name,
            "connect_timeout": o.connect_timeout,
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": -1,
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "allow_reconnect": True,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
            "pending_size": 64 * 1024 * 1024,
        }
        if o.token:
            kwargs["token"] = o.token
        if o.credentials_file:
            kwargs["user_credentials"] = str(o.credentials_file)
        try:
            tls = o.tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the NATS TLS files: {exc}") from exc
        if tls is not None:
            kwargs["tls"] = tls
        nc = Client()
        try:
            # nats-py retries a first connection itself, for ever (max_reconnect_attempts is
            # -1; each failure goes to error_cb): bounded here.
            async with asyncio.timeout(o.first_connect_for):
                await nc.connect(**kwargs)
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise ConfigError(
                f"cannot connect to NATS at {', '.join(o.servers)}: {exc or 'timed out'}"
            ) from exc
        self._nc = nc
        self.connected = True
        url = self._nc.connected_url
        log.info("connected to NATS at %s", url.netloc if url else "?")

    async def close(self) -> None:
        if self._nc is None:
            return
        nc, self._nc = self._nc, None
        self.connected = False
        for task in list(self._tasks):
            task.cancel()
        try:
            await asyncio.wait_for(nc.drain(), timeout=2.0)
        except Exception:
            await nc.close()

    # ---- messages ----------------------------------------------------------------------------

    async def subscribe(self, subject: str, handler: Handler, *, concurrent: bool = False) -> None:
        """Call ``handler`` for every sealed message on ``subject`` (wildcards allowed);
        messages that are not sealed for their subject are dropped and logged.

        In order, one message after the other, unless ``concurrent``: then each message is
        handled in a task of its own (at most :data:`MAX_CONCURRENT` at once, the rest wait),
        so that one slow request (a database round trip) holds up no other: for requests,
        which are independent of each other."""
        nc = self._client()

        async def handle(msg: Msg) -> None:
            try:
                body = self._sealer.open(msg.subject, msg.data)
            except RemoteProtocolError as exc:
                log.warning("dropped a message on %s: %s", msg.subject, exc.message)
                return
            try:
                await handler(msg.subject, body, msg.reply or None)
            except Exception:
                log.exception("handling a cluster message on %s failed", msg.subject)

        async def handle_bounded(msg: Msg) -> None:
            async with self._slots:
                await handle(msg)

        async def spawn(msg: Msg) -> None:
            task = asyncio.get_running_loop().create_task(handle_bounded(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        receive = spawn if concurrent else handle

        self._subs.append(
            await nc.subscribe(
                subject,
                cb=receive,
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=256 * 1024 * 1024,
            )
        )
        await nc.flush()

    async def publish(self, subject: str, body: bytes) -> None:
        try:
            await self._client().publish(subject, self._sealer.seal(subject, body))
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS: {exc}") from exc

    async def request(self, subject: str, body: bytes, timeout: float = 3.0) -> bytes:
        """Send a request and return the opened reply.

        Raises:
            NoResponder: nobody listens on ``subject`` (the replica is gone).
            Unavailable: no reply in time, or NATS is unreachable.
        """
        try:
            msg = await self._client().request(
                subject, self._sealer.seal(subject, body), timeout=timeout
            )
        except nats.errors.NoRespondersError as exc:
            raise NoResponder(f"nobody answers on {subject}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"no answer on {subject}: {exc or 'timed out'}") from exc
        try:
            # Sealed for this request's own inbox (see reply()), so that an answer recorded
            # from another request cannot be sent back as this one's.
            return self._sealer.open(msg.subject + "#reply", msg.data)
        except RemoteProtocolError as exc:
            raise Unavailable(f"bad answer on {subject}: {exc.message}") from exc

    async def reply(self, request_subject: str, reply_to: str, body: bytes) -> None:
        """Answer a request: sealed for its inbox ``reply_to``, unique to that request."""
        await self.publish_raw(reply_to, self._sealer.seal(reply_to + "#reply", body))

    async def publish_raw(self, subject: str, data: bytes) -> None:
        try:
            await self._client().publish(subject, data)
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS: {exc}") from exc

    def _client(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise Unavailable("not connected to NATS")
        return self._nc

    # ---- connection events -------------------------------------------------------------------

    async def _disconnected(self) -> None:
        if self.connected:
            log.warning("lost the connection to NATS; re-dialling")
        self.connected = False
        if self.on_disconnected is not None:
            self.on_disconnected()

    async def _reconnected(self) -> None:
        self.connected = True
        log.info("connected to NATS again")
        if self.on_reconnected is not None:
            self.on_reconnected()

    async def _error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            log.warning("NATS: a subscription fell behind; messages dropped (resent end to end)")
        else:
            log.info("NATS: %s", exc)
