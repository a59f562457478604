"""The :class:`~hatchway.transport.socket.Socket` over aiohttp's WebSockets.

The server uses aiohttp (C-accelerated frames, docs/design.md); the CLI and the agent have
their own adapter on websockets' sans-I/O layer in ``transport/sansio_socket.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
from aiohttp import web

from hatchway.errors import ChannelClosed, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode, close_reason
from hatchway.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from hatchway.transport.socket import CLOSE_TIMEOUT, SEND_TIMEOUT

log = logging.getLogger(__name__)

__all__ = ["AiohttpSocket", "aiohttp_max_msg_size"]


def aiohttp_max_msg_size(max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> int:
    """aiohttp refuses a message of exactly ``max_msg_size`` bytes; our limit is inclusive
    (docs/protocol.md §13.1: "at most 1 MiB"), so ask aiohttp for one byte more and check exactly in
    :class:`AiohttpSocket`."""
    return max_frame_size + 1


class AiohttpSocket:
    """:class:`Socket` over aiohttp's ``web.WebSocketResponse`` or ``ClientWebSocketResponse``
    (and :class:`TextSocket`, for the server's end of a client's data channel).

    Args:
        ws: the prepared (server) or connected (client) WebSocket.
        label: for logs (``client:<session>``, ``control:<node>``).
        abort: drops the underlying connection (the server passes ``request.transport.abort``);
            without it a stalled connection is closed as well as aiohttp can.
        max_size: messages larger than this close the connection with ``TOO_BIG``.
        send_timeout: see :data:`SEND_TIMEOUT`.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        label: str,
        *,
        abort: Callable[[], None] | None = None,
        max_size: int = DEFAULT_MAX_FRAME_SIZE,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.label = label
        self._ws = ws
        self._abort = abort
        self._max_size = max_size
        self._send_timeout = send_timeout
        self._lock = asyncio.Lock()
        self._close_code: int | None = None
        self._close_reason = ""
        self._closing = False
        # The send time-out, watched by one timer per socket rather than a time-out per send
        # (that costs a timer on every relayed frame): when a send started, and the watchdog.
        self._send_started: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self._closing or self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._close_code if self._close_code is not None else self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        if self._abort is None:
            return await self._send_within_timeout(data)
        # One writer at a time. A writer queued behind a stalled one is released when the
        # watchdog drops the connection, so every send is bounded by the send time-out.
        async with self._lock:
            if self.closed:
                return False
            loop = asyncio.get_running_loop()
            self._send_started = loop.time()
            if self._watchdog is None:
                self._watchdog = loop.call_later(self._send_timeout, self._check_stalled)
            try:
                await self._ws.send_bytes(data)
                return self._close_code != CloseCode.STALLED  # not if dropped meanwhile
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.debug("send to %s failed: %s", self.label, exc)
                return False
            finally:
                self._send_started = None

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_stalled(self) -> None:
        self._watchdog = None
        started = self._send_started
        if started is None or self._closing:
            return  # no send under way: the next one re-arms the watchdog
        loop = asyncio.get_running_loop()
        left = started + self._send_timeout - loop.time()
        if left > 0:
            self._watchdog = loop.call_later(left, self._check_stalled)
            return
        log.info("%s did not read for %.0f s; dropping it", self.label, self._send_timeout)
        self._close_code = CloseCode.STALLED
        self.abort()

    async def _send_within_timeout(self, data: bytes) -> bool:
        """Without a way to drop the connection, a stalled send is given up by a time-out."""
        try:
            async with asyncio.timeout(self._send_timeout):
                async with self._lock:
                    await self._ws.send_bytes(data)
            return True
        except TimeoutError:
            log.info("%s did not read for %.0f s; dropping it", self.label, self._send_timeout)
            self._close_code = CloseCode.STALLED
            self._closing = True
            return False
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.debug("send to %s failed: %s", self.label, exc)
            return False

    def send_now(self, frames: Sequence[bytes]) -> bool:
        return False  # aiohttp has no synchronous send; the driver awaits send()

    async def receive_text(self) -> str:
        try:
            msg = await self._ws.receive()
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise ChannelClosed(f"{self.label} closed: {exc}") from exc
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            raise RemoteProtocolError("expected a text message, got a binary one")
        if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
            self._close_code = self._close_code or msg.data
            self._close_reason = str(msg.extra or "")
        raise ChannelClosed(f"{self.label} closed before its first message")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                msg = await self._ws.receive()
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.debug("receive from %s failed: %s", self.label, exc)
                return
            if msg.type == aiohttp.WSMsgType.BINARY:
                data: bytes = msg.data
                if len(data) > self._max_size:
                    await self.close(CloseCode.TOO_BIG, f"message over {self._max_size} bytes")
                    return
                yield data
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                self._close_reason = str(msg.extra or "")
                if self._close_code is None and isinstance(msg.data, int):
                    self._close_code = msg.data
            elif msg.type in (
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                return
            # TEXT after the first message carries nothing we use (docs/protocol.md §3.1).

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        # aiohttp hands messages over through its reader task only.
        try:
            async for message in self:
                handler(message)
        except Exception:
            self.abort()
            raise

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason
        if self._ws.closed:
            self._stop_watching()
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._ws.close(code=code, message=close_reason(reason).encode())
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
            self.abort()
        self._stop_watching()

    def abort(self) -> None:
        self._closing = True
        self._stop_watching()
        if self._abort is not None:
            with contextlib.suppress(Exception):
                self._abort()
