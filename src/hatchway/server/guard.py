"""Admission and time limits for the server's connections, in front of aiohttp.

aiohttp (3.14) bounds a request's size but not the time it may take to arrive: it has no
time-out for reading a request head or body (only its keep-alive timer, armed when a
connection starts and 3,630 s by default, eventually closes a connection whose head never
completes; nothing bounds a stalled body), and nothing caps the number of connections.
``ConnectionGuard`` runs the accept loop itself (``loop.sock_accept`` on its own listening
sockets, then ``loop.connect_accepted_socket``), so that it can refuse a connection before any
TLS work, and serves each admitted one with the protocol factory that aiohttp's public
``AppRunner.server`` provides, wrapped so that it sees the bytes arrive; an aiohttp middleware
tells it where each request starts and ends:

* **Admission.** A new connection over the total cap, or over the cap for its source (an IPv4
  address or an IPv6 /64), is closed at once, before any TLS work; refusals are counted and
  logged at most once per ``LOG_INTERVAL``. The total cap defaults to the process's file
  descriptor limit minus headroom (:func:`default_max_connections`), so the server refuses
  connections cheaply instead of running out of descriptors, which made asyncio stop
  accepting for everyone.
* **TLS handshake**, after admission, within ``tls_handshake_timeout``.
* **Request head.** A request's head (request line and headers) must be complete within
  ``head_timeout`` of the connection's start, or of the first byte of a later request on a
  keep-alive connection; a keep-alive connection may stay idle between requests for
  ``idle_timeout`` (also aiohttp's ``keepalive_timeout``).
* **Request body**: while a handler waits for its body, ``body_timeout`` is the longest pause
  between two pieces of it (progress-based: a large body on a slow link is fine, a stalled
  one is not).
* A WebSocket, once upgraded, is under none of these time limits: its handler is running, and
  the relay's own pings and grace periods apply.

A connection that breaks a time limit is aborted (no TLS shutdown to wait for). Only public
APIs are used: ``loop.sock_accept``, ``loop.connect_accepted_socket``, ``asyncio.Protocol``,
transports, ``AppRunner.server``, an aiohttp middleware, ``BaseRequest.transport``,
``BaseRequest.body_exists`` and ``StreamReader.is_eof()``.

Why not ``loop.create_server(..., ssl=...)`` with a wrapped factory: the factory does not
know the peer's address, a refused connection would still cost a TLS handshake, and a
handshake that fails never reaches the app protocol, so its place could not be given back.
(``loop.start_tls`` after a plain ``create_server`` loses bytes on uvloop, which starts
reading after ``connection_made`` even when the protocol paused reading.)
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import resource
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from hatchway.server.listening import listen
from hatchway.server.memory import MemoryReclaimer
from hatchway.server.throttle import source_key

__all__ = [
    "ConnectionGuard",
    "ConnectionLimits",
    "GuardStats",
    "default_max_connections",
    "listen",
]

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
"""Refusals and time-outs are summed up in the log at most this often."""

ACCEPT_RETRY = 0.1
"""Pause of the accept loop when the process is out of descriptors or memory."""

_ACCEPT_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def default_max_connections(nofile: int | None = None) -> int:
    """The default total cap: the descriptor limit minus a tenth (at least 256) of headroom
    for the database, logs, the listening socket and the relay's own needs."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
    return max(16, nofile - max(256, nofile // 10))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How many connections, and how long each may take (seconds).

    Attributes:
        max_connections: open connections at most (TLS handshakes included).
        max_per_source: open connections at most from one source address (IPv6: per /64).
        tls_handshake_timeout: a TLS handshake must finish within this.
        head_timeout: a request's head must be complete within this of its first byte (of
            the connection's start, for its first request).
        body_timeout: the longest pause while a request body arrives.
        idle_timeout: how long a keep-alive connection may wait for its next request.
        tls_shutdown_timeout: how long a closing TLS connection waits for the peer's close.
    """

    max_connections: int
    max_per_source: int
    tls_handshake_timeout: float = 10.0
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    idle_timeout: float = 30.0
    tls_shutdown_timeout: float = 5.0

    @classmethod
    def derive(
        cls,
        max_connections: int | None = None,
        max_per_source: int | None = None,
        **timeouts: float,
    ) -> ConnectionLimits:
        """Limits with the caps left ``None`` derived: the total from the descriptor limit
        (:func:`default_max_connections`), per source a quarter of the total (at least 1024
        or the total): many agents behind one NAT address are normal, one address taking
        every descriptor is not."""
        total = max_connections or default_max_connections()
        per_source = max_per_source or min(total, max(1024, total // 4))
        return cls(max_connections=total, max_per_source=per_source, **timeouts)


@dataclass
class GuardStats:
    """What the guard did since it started (for tests, benchmarks and the log)."""

    accepted: int = 0
    refused_total_cap: int = 0
    refused_source_cap: int = 0
    tls_failed: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0


async def _readable(sock: socket.socket, timeout: float) -> None:
    """Wait until ``sock`` has something to read (or its end), within ``timeout``.

    A TLS connection's state (~50 KiB: buffers, the TLS object) is only made once the client
    has sent its first handshake message, so connections that never send one cost little.

    Raises:
        TimeoutError: nothing arrived in time.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
    finally:
        loop.remove_reader(sock.fileno())


class _Phase(enum.Enum):
    HEAD = "waiting for a request head"  # bytes of a head may be arriving
    IDLE = "idle between requests"  # keep-alive, no byte of the next request yet
    BUSY = "handling a request"  # a handler runs (a WebSocket, once upgraded, stays here)


class ConnectionGuard:
    """Accepts, admits and times the server's connections (see the module docstring).

    Install :attr:`middleware` in the aiohttp application (it tells the guard where each
    request starts and ends), then::

        await guard.start(runner.server, listen(host, port))
        ...
        await guard.close()

    Args:
        limits: caps and time-outs.
        ssl_context: serve TLS (the guard starts the handshake after admission), or ``None``.
        reclaimer: told the number of open connections, to give memory back after a burst.
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reclaimer: MemoryReclaimer | None = None,
    ) -> None:
        self.limits = limits
        self.stats = GuardStats()
        self._ssl = ssl_context
        self._reclaimer = reclaimer
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._listeners: list[socket.socket] = []
        self._sources: Counter[str] = Counter()
        self._open = 0
        self._by_transport: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._events = _EventLog()

    # ---- what the guard knows -----------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections open now (in a TLS handshake or admitted)."""
        return self._open

    def connections_from(self, address: str) -> int:
        """Connections open now from the source of ``address``."""
        return self._sources.get(source_key(address), 0)

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets (``getsockname()`` gives the bound addresses)."""
        return list(self._listeners)

    # ---- accepting ----------------------------------------------------------------------

    async def start(
        self, serve: Callable[[], asyncio.Protocol], listeners: list[socket.socket]
    ) -> None:
        """Accept connections on ``listeners`` (see :func:`listen`); each admitted one is
        served by a protocol from ``serve`` (aiohttp's ``AppRunner.server``)."""
        self._factory = serve
        self._listeners = listeners
        for listener in listeners:
            self._spawn(self._accept(listener))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno not in _ACCEPT_SHORTAGES:
                    log.debug("accept failed: %s", exc)  # the peer gave up already
                    continue
                # Out of descriptors or memory in spite of the caps (another part of the
                # process holds many): let some connections end rather than spin.
                self._events.note(f"accept failed: {exc.strerror}", "-")
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            source = source_key(peer[0] if isinstance(peer, tuple) else None)
            if self._admit(source):
                self._spawn(self._connect(sock, source))
            else:
                sock.close()

    def _admit(self, source: str) -> bool:
        """Take a place for a new connection from ``source``; False when a cap is reached."""
        if self._open >= self.limits.max_connections:
            self.stats.refused_total_cap += 1
            self._events.note(f"over the total cap of {self.limits.max_connections}", source)
            return False
        if self._sources[source] >= self.limits.max_per_source:
            self.stats.refused_source_cap += 1
            self._events.note(f"over the cap of {self.limits.max_per_source} per source", source)
            return False
        self._open += 1
        self._sources[source] += 1
        self.stats.accepted += 1
        if self._reclaimer is not None:
            self._reclaimer.connections_changed(self._open)
        return True

    def _release(self, source: str) -> None:
        self._open -= 1
        self._sources[source] -= 1
        if self._sources[source] <= 0:
            del self._sources[source]
        if self._reclaimer is not None:
            self._reclaimer.connections_changed(self._open)

    async def _connect(self, sock: socket.socket, source: str) -> None:
        """Make the connection's transport (after its TLS handshake, within the limit)."""
        assert self._factory is not None
        loop = asyncio.get_running_loop()
        conn = _GuardedConnection(self, source, self._factory)
        tls: dict[str, Any] = {}
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keystrokes go at once
            if self._ssl is not None:
                deadline = loop.time() + self.limits.tls_handshake_timeout
                await _readable(sock, self.limits.tls_handshake_timeout)
                tls = {
                    "ssl": self._ssl,
                    "ssl_handshake_timeout": max(0.1, deadline - loop.time()),
                    "ssl_shutdown_timeout": self.limits.tls_shutdown_timeout,
                }
            await loop.connect_accepted_socket(lambda: conn, sock, **tls)
        except asyncio.CancelledError:
            conn.release()
            sock.close()
            raise
        except Exception as exc:  # a task boundary: every failed handshake ends here
            conn.release()
            sock.close()
            self.stats.tls_failed += 1
            self._events.note("TLS handshake failed or timed out", source)
            log.debug("TLS handshake with %s failed: %r", source, exc)

    async def close(self) -> None:
        """Stop accepting (close the listening sockets) and abandon handshakes in progress;
        admitted connections are aiohttp's to close (``runner.cleanup()``)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._events.close()
        if self._reclaimer is not None:
            await self._reclaimer.close()

    # ---- aiohttp's side -----------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the request's head as complete, times its body, and marks its end."""
        conn = self._by_transport.get(request.transport) if request.transport else None
        if conn is None:  # not a connection this guard admitted (a test client, say)
            return await handler(request)
        conn.request_started()
        try:
            if not request.body_exists or request.content.is_eof():
                return await handler(request)
            return await conn.with_body_deadline(request, handler)
        finally:
            conn.request_finished()


class _GuardedConnection(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection and enforces the time limits."""

    def __init__(
        self, guard: ConnectionGuard, source: str, factory: Callable[[], asyncio.Protocol]
    ) -> None:
        self.source = source
        self._guard = guard
        self._limits = guard.limits
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.HEAD
        self._timer: asyncio.TimerHandle | None = None
        self._released = False
        self._body: _BodyWatch | None = None

    # ---- asyncio.Protocol, forwarded to aiohttp ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Only now (after the TLS handshake) does aiohttp get a protocol of its own.
        self._transport = cast(asyncio.Transport, transport)
        self._inner = self._factory()
        self._guard._by_transport[transport] = self
        self._arm(self._limits.head_timeout, self._head_expired)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._inner is not None
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.HEAD
            self._arm(self._limits.head_timeout, self._head_expired)
        self._inner.data_received(data)
        if self._body is not None:
            self._body.progress()

    def eof_received(self) -> bool | None:
        assert self._inner is not None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.release()
        if self._transport is None or self._inner is None:
            return
        self._guard._by_transport.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def release(self) -> None:
        """Give back the connection's place (once, whichever way it ends)."""
        if not self._released:
            self._released = True
            self._guard._release(self.source)

    # ---- the request cycle, told by the middleware ---------------------------------------

    def request_started(self) -> None:
        self._phase = _Phase.BUSY
        self._cancel_timer()

    def request_finished(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._phase = _Phase.IDLE
        self._arm(self._limits.idle_timeout, self._idle_expired)

    async def with_body_deadline(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Run the handler while its body arrives, each pause bounded by ``body_timeout``.

        The deadline only runs while the body is incomplete, when a handler can do nothing
        but wait for it; once the body is in, the handler has all the time it needs.
        """
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout(self._limits.body_timeout)
        try:
            async with deadline:
                self._body = _BodyWatch(request, deadline, loop, self._limits.body_timeout)
                try:
                    return await handler(request)
                finally:
                    self._body = None
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own time-out, not ours
        self._guard.stats.body_timeouts += 1
        self._guard._events.note("request body stalled", self.source)
        self._abort()
        raise web.HTTPRequestTimeout()

    # ---- timers --------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self._phase is _Phase.HEAD:
            self._guard.stats.head_timeouts += 1
            self._guard._events.note("request head incomplete", self.source)
            self._abort()

    def _idle_expired(self) -> None:
        self._timer = None
        if self._phase is _Phase.IDLE:
            self._abort()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


@dataclass
class _BodyWatch:
    """Pushes a body deadline forward while the body progresses; lifts it once complete."""

    request: web.Request
    deadline: asyncio.Timeout
    loop: asyncio.AbstractEventLoop
    pause: float

    def progress(self) -> None:
        if self.deadline.expired():
            return
        if self.request.content.is_eof():
            self.deadline.reschedule(None)
        else:
            self.deadline.reschedule(self.loop.time() + self.pause)


@dataclass
class _EventLog:
    """Refusals and time-outs in the log: the first of a kind at once, then one summary
    per ``LOG_INTERVAL`` while they continue (a flood must not flood the log too)."""

    counts: Counter[str] = field(default_factory=Counter)
    timer: asyncio.TimerHandle | None = None

    def note(self, what: str, source: str) -> None:
        if self.timer is None:
            log.warning(
                "closed a connection from %s: %s (further ones are summed up)", source, what
            )
            self.timer = asyncio.get_running_loop().call_later(LOG_INTERVAL, self._flush)
        else:
            self.counts[what] += 1

    def _flush(self) -> None:
        self.timer = None
        if self.counts:
            summary = ", ".join(f"{n} {what}" for what, n in self.counts.most_common())
            log.warning("closed connections in the last %.0f s: %s", LOG_INTERVAL, summary)
            self.counts.clear()
            self.timer = asyncio.get_running_loop().call_later(LOG_INTERVAL, self._flush)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
