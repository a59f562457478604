"""The client WebSocket of the CLI and the agent: websockets' sans-I/O client protocol over an
asyncio transport of ours.

``websockets.client.ClientProtocol`` does the WebSocket itself (the upgrade, framing, masking,
the close handshake, answering pings, the message size limit: RFC 6455); :class:`WebSocket` is
the thin I/O half the websockets guide "Integrate the Sans-I/O layer" describes: an
``asyncio.Protocol`` that feeds it the bytes the transport receives and writes the bytes it
produces. Owning that half is what lets the keystroke path write a frame synchronously
(:meth:`WebSocket.send_now`) and hand a received message to the session from the callback
that parsed it (:meth:`WebSocket.deliver`) without relying on any library's private
internals, and it keeps the CLI's start-up lean: no aiohttp (the server uses it; importing it
costs several hundred milliseconds) and not even websockets' own asyncio layer.

:class:`WebSocket` implements :class:`hatchway.transport.socket.Socket` (send and close
bounded by its ``SEND_TIMEOUT``/``CLOSE_TIMEOUT``), plus ``send_text`` for the data channel's
open message (docs/protocol.md §3.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Close, Frame, Opcode
from websockets.frames import CloseCode as WsCloseCode
from websockets.protocol import State
from websockets.uri import parse_uri

from hatchway import __version__
from hatchway.errors import ConfigError, Unavailable
from hatchway.protocol.closecodes import CloseCode, close_reason
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from hatchway.protocol.timing import PING_INTERVAL
from hatchway.transport.socket import CLOSE_TIMEOUT, SEND_TIMEOUT

log = logging.getLogger(__name__)

__all__ = [
    "ABNORMAL_CLOSURE",
    "CLOSE_TIMEOUT",
    "OPEN_TIMEOUT",
    "SEND_TIMEOUT",
    "UpgradeRefused",
    "WebSocket",
    "connect",
]

#: Seconds to open a connection: TCP, TLS and the WebSocket upgrade.
OPEN_TIMEOUT = 15.0
#: The close code of a connection that ended without a close frame (RFC 6455 §7.1.5); it is
#: never sent on the wire.
ABNORMAL_CLOSURE = int(WsCloseCode.ABNORMAL_CLOSURE)
#: Received messages held for the reader before the transport stops reading (backpressure
#: toward the server), and the level at which it reads again.
RECEIVE_HIGH_WATER = 64
RECEIVE_LOW_WATER = 16


class UpgradeRefused(Unavailable):
    """The server answered the WebSocket upgrade with an HTTP status other than 101.

    Attributes:
        status: the HTTP status.
        headers: the response's headers, case-insensitive (the server says why in
            ``X-Hatchway-Error``).
    """

    def __init__(self, message: str, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


async def connect(
    url: str,
    ssl_context: ssl.SSLContext | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    label: str = "data channel",
    max_size: int = DEFAULT_MAX_FRAME_SIZE,
    open_timeout: float = OPEN_TIMEOUT,
    ping_interval: float | None = PING_INTERVAL,
    ping_timeout: float = PING_INTERVAL,
    send_timeout: float = SEND_TIMEOUT,
    close_timeout: float = CLOSE_TIMEOUT,
) -> WebSocket:
    """Open a WebSocket to ``url`` (``ws://`` or ``wss://``) and return it once it is open.

    Args:
        url: the server's ``StreamUrl``.
        ssl_context: verifies the server of a ``wss://`` URL (the profile's CA); None: the
            system's trust store. Ignored for ``ws://``.
        headers: sent with the upgrade request (the agent's signature, docs/protocol.md §3.2).
        label: names the connection in logs.
        max_size: the largest message accepted, in bytes, inclusive (docs/protocol.md §13.1: a
            frame is "1 MiB at most"); a larger one closes the connection with 1009.
        open_timeout: for TCP, TLS and the upgrade together.
        ping_interval: seconds between pings (None: no pings); a pong must arrive within
            ``ping_timeout`` or the connection is dropped (docs/protocol.md §3.3).
        send_timeout: see :data:`SEND_TIMEOUT`.
        close_timeout: see :data:`CLOSE_TIMEOUT`.

    Raises:
        ConfigError: a malformed URL, or the server's certificate did not verify (trying again
            will not help).
        UpgradeRefused: the server answered the upgrade with another HTTP status.
        Unavailable: the server could not be reached or did not answer the upgrade in time
            (it may work a moment later).
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ConfigError(f"not a WebSocket URL: {url!r}") from exc
    tls: ssl.SSLContext | None = None
    if uri.secure:
        tls = ssl_context if ssl_context is not None else ssl.create_default_context()
    loop = asyncio.get_running_loop()
    protocol = ClientProtocol(uri, max_size=max_size)

    def factory() -> WebSocket:
        return WebSocket(
            protocol,
            label,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            send_timeout=send_timeout,
            close_timeout=close_timeout,
        )

    try:
        async with asyncio.timeout(open_timeout):
            _transport, ws = await loop.create_connection(
                factory, uri.host, uri.port, ssl=tls, server_hostname=uri.host if tls else None
            )
            try:
                await ws.handshake(headers or {})
            except BaseException:
                ws.abort()
                raise
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"TLS verification of {url} failed ({exc.verify_message}); "
            "is the right CA file configured?"
        ) from exc
    except TimeoutError as exc:
        raise Unavailable(f"no WebSocket connection to {url} within {open_timeout:g} s") from exc
    except InvalidStatus as exc:
        response = exc.response
        why = response.headers.get("X-Hatchway-Error") or response.reason_phrase
        raise UpgradeRefused(
            f"{url} refused the WebSocket upgrade: HTTP {response.status_code} {why}",
            response.status_code,
            response.headers,
        ) from exc
    except InvalidHandshake as exc:
        raise Unavailable(f"{url} answered the WebSocket upgrade wrongly: {exc}") from exc
    except OSError as exc:  # refused, unreachable, reset, a TLS failure other than trust
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise Unavailable(f"cannot reach {url}: {reason}") from exc
    return ws


class WebSocket(asyncio.Protocol):
    """One client WebSocket connection (a :class:`~hatchway.transport.socket.Socket`).

    Made by :func:`connect`. Binary messages are read by iterating; text messages are ignored
    (docs/protocol.md §3.1: nothing after the open message is text). Writes go straight to the
    transport, so frames leave in the order they were sent; :meth:`send` waits (bounded) while
    the transport's buffer is full, :meth:`send_now` declines then.
    """

    def __init__(
        self,
        protocol: ClientProtocol,
        label: str,
        *,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float = PING_INTERVAL,
        send_timeout: float = SEND_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.label = label
        self._protocol = protocol
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._answered = False  # the server has answered the upgrade request
        self._opened: asyncio.Future[None] | None = None  # handshake() waits on it
        self._lost: asyncio.Future[None] = self._loop.create_future()
        # Received binary messages, and the reader waiting for one.
        self._messages: deque[bytes] = deque()
        self._reader: asyncio.Future[None] | None = None
        # While deliver() runs: messages go to this handler from data_received, and what it
        # raised, to be raised by deliver().
        self._handler: Callable[[bytes], None] | None = None
        self._handler_error: Exception | None = None
        self._reading_paused = False
        self._fragments: list[bytes] | None = None  # a fragmented binary message so far
        self._in_text = False  # inside a fragmented text message (skipped)
        # Sending: one sender at a time waits for the transport's buffer to drain.
        self._send_lock = asyncio.Lock()
        self._writable = asyncio.Event()
        self._writable.set()
        # Why the connection ended: our own verdict (close, stall, missing pong) or the
        # server's close frame, whichever came first.
        self._close_code: int | None = None
        self._close_reason = ""
        self._ended = False  # no more messages will arrive
        self._closing = False  # close() or abort() was called
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- Socket ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing or self._ended

    @property
    def close_code(self) -> int | None:
        """Why the connection ended (``None`` while it is open); 1006 without a close frame."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def send(self, data: bytes) -> bool:
        """Send one binary message; False if the connection is gone or the server stalled
        (not reading for ``send_timeout`` seconds: the connection is then dropped)."""
        async with self._send_lock:
            if not self._writable.is_set() and self._can_send():
                try:
                    async with asyncio.timeout(self._send_timeout):
                        await self._writable.wait()
                except TimeoutError:
                    log.info("%s: the server did not read for %g s", self.label, self._send_timeout)
                    self._set_close(CloseCode.STALLED, "the server stopped reading")
                    self.abort()
                    return False
            return self._write_messages((data,))

    def send_now(self, frames: Sequence[bytes]) -> bool:
        """Write ``frames`` without yielding to the event loop, unless the transport is
        applying backpressure or a :meth:`send` is waiting: then nothing is sent and the
        caller uses :meth:`send` (so the order of messages is kept)."""
        if self._send_lock.locked() or not self._writable.is_set():
            return False
        return self._write_messages(frames)

    async def send_text(self, text: str) -> None:
        """Send one text message (the open message); a closed connection ignores it."""
        if self._can_send():
            self._protocol.send_text(text.encode())
            self._flush()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Binary messages until the connection closes (or the server's close frame arrives)."""
        while True:
            if self._messages:
                yield self._next_message()
            elif self._ended:
                return
            else:
                self._reader = self._loop.create_future()
                try:
                    await self._reader
                finally:
                    self._reader = None

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        """Hand every binary message to ``handler`` until the connection closes: those
        already received first, then each from :meth:`data_received` as it is parsed, without
        waking a task (see :meth:`hatchway.transport.socket.Socket.deliver`)."""
        if self._handler is not None:
            raise RuntimeError(f"{self.label}: deliver() is already running")
        self._handler = handler
        try:
            while self._handler_error is None:
                if self._messages:
                    handler(self._next_message())
                elif self._ended:
                    break
                else:
                    self._reader = self._loop.create_future()
                    try:
                        await self._reader
                    finally:
                        self._reader = None
        except Exception:
            self.abort()
            raise
        finally:
            self._handler = None
        error, self._handler_error = self._handler_error, None
        if error is not None:
            raise error

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close once (later calls return at once): send a close frame and wait up to
        ``close_timeout`` for the server to end the connection, then drop it."""
        if self._closing:
            return
        self._closing = True
        self._set_close(code, reason)
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, close_reason(reason))
            self._flush()
        try:
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._lost)
        except TimeoutError:
            log.debug("%s: no close from the server within %g s", self.label, self._close_timeout)
        finally:
            if not self._lost.done():
                self.abort()

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # ---- opening ---------------------------------------------------------------------------

    async def handshake(self, headers: Mapping[str, str]) -> None:
        """Send the upgrade request (with ``headers`` added) and wait for the answer (run by
        :func:`connect`).

        Raises:
            InvalidHandshake: the server refused the upgrade or answered something else.
            ConnectionError: the connection ended first.
        """
        request = self._protocol.connect()
        request.headers["User-Agent"] = f"hatchway/{__version__}"
        for name, value in headers.items():
            request.headers[name] = value
        self._protocol.send_request(request)
        self._opened = self._loop.create_future()
        self._flush()
        await self._opened

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._flush()  # pongs and the echo of a close frame
        for event in self._protocol.events_received():
            if not self._answered:
                self._on_handshake_answer()  # the first event is the upgrade's answer
            elif isinstance(event, Frame):
                self._on_frame(event)
        if self._protocol.close_expected() and self._close_timer is None:
            # Closing: the server ends TCP after the close handshake; don't wait for ever.
            self._close_timer = self._loop.call_later(self._close_timeout, self.abort)

    def eof_received(self) -> None:
        self._protocol.receive_eof()
        self._flush()
        # Returning None lets the transport close itself: WebSocket ends never write after
        # the peer's end of stream (and TLS transports cannot half-close anyway).

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.receive_eof()  # idempotent: the state becomes CLOSED
        self._protocol.data_to_send()  # nothing can be written any more
        # Unless we know better already: the close frame received, else the one the protocol
        # sent when it failed the connection (e.g. 1009 for an oversize message), else 1006.
        closed = self._protocol.close_exc
        if closed.rcvd is not None:
            self._set_close(closed.rcvd.code, closed.rcvd.reason)
        elif closed.sent is not None:
            self._set_close(closed.sent.code, closed.sent.reason)
        self._set_close(ABNORMAL_CLOSURE, str(exc) if exc else "the connection was lost")
        self._end()
        for timer in (self._ping_timer, self._pong_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = self._close_timer = None
        self._writable.set()  # a waiting send() finds the connection gone
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(ConnectionError(str(exc or "connection closed")))
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- internals -------------------------------------------------------------------------

    def _can_send(self) -> bool:
        return self._protocol.state is State.OPEN and not self._closing

    def _write_messages(self, messages: Sequence[bytes]) -> bool:
        if not self._can_send():
            return False
        for message in messages:
            self._protocol.send_binary(message)
        self._flush()
        return True

    def _flush(self) -> None:
        """Write what the protocol has produced to the transport.

        Frames produced together (bulk output, resends, data with the acknowledgements riding
        along) are handed over in one ``writelines``: one TLS write and one system call
        instead of one per frame.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            self._protocol.data_to_send()  # nothing can be written any more
            return
        pending: list[bytes] = []
        for data in self._protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            self._write(transport, pending)
            pending = []
            if transport.can_write_eof():  # the protocol's end of stream (SEND_EOF)
                with contextlib.suppress(OSError, RuntimeError):  # uvloop: RuntimeError
                    transport.write_eof()
            else:
                transport.close()
        self._write(transport, pending)

    @staticmethod
    def _write(transport: asyncio.Transport, chunks: list[bytes]) -> None:
        if len(chunks) == 1:
            transport.write(chunks[0])
        elif chunks and not transport.is_closing():
            transport.writelines(chunks)

    def _on_handshake_answer(self) -> None:
        self._answered = True
        error = self._protocol.handshake_exc
        if self._opened is not None and not self._opened.done():
            if error is not None:
                self._opened.set_exception(error)
            else:
                self._opened.set_result(None)
        if error is None:
            self._schedule_ping()

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        if opcode is Opcode.BINARY:
            if frame.fin:
                self._deliver(data)
            else:
                self._fragments = [data]
        elif opcode is Opcode.CONT:
            if self._fragments is not None:
                self._fragments.append(data)
                if frame.fin:
                    message, self._fragments = b"".join(self._fragments), None
                    self._deliver(message)
            elif frame.fin:
                self._in_text = False
        elif opcode is Opcode.TEXT:
            self._in_text = not frame.fin  # nothing after the open message is text
        elif opcode is Opcode.PONG:
            self._on_pong(data)
        elif opcode is Opcode.CLOSE:
            close = Close.parse(frame.data)
            self._set_close(close.code, close.reason)
            self._end()  # the protocol has answered it; no message follows a close
        # PING: the protocol has already queued the pong (RFC 6455 §5.5.2).

    def _next_message(self) -> bytes:
        message = self._messages.popleft()
        if self._reading_paused and len(self._messages) <= RECEIVE_LOW_WATER:
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        return message

    def _deliver(self, message: bytes) -> None:
        handler = self._handler
        if handler is not None and not self._messages and self._handler_error is None:
            # The keystroke path: straight to the session, no task switch (deliver()).
            try:
                handler(message)
            except Exception as exc:
                log.debug("%s: the message handler failed", self.label, exc_info=True)
                self._handler_error = exc
                self._handler = None
                self.abort()
                self._end()
            return
        self._messages.append(message)
        if len(self._messages) >= RECEIVE_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None and not self._transport.is_closing():
                self._transport.pause_reading()
        self._wake_reader()

    def _end(self) -> None:
        self._ended = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _set_close(self, code: int, reason: str) -> None:
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason

    # ---- keepalive (docs/protocol.md §3.3) -------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_interval is not None:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._protocol.state is not State.OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._protocol.send_ping(self._ping_payload)
        self._flush()
        self._pong_timer = self._loop.call_later(self._ping_timeout, self._pong_missing)

    def _on_pong(self, data: bytes) -> None:
        if self._ping_payload is None or data != self._ping_payload:
            return  # unsolicited, or an answer to an older ping
        self._ping_payload = None
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
        self._schedule_ping()

    def _pong_missing(self) -> None:
        self._pong_timer = None
        log.info("%s: no pong within %g s; dropping the connection", self.label, self._ping_timeout)
        self._set_close(ABNORMAL_CLOSURE, f"no pong within {self._ping_timeout:g} s")
        self.abort()
