"""An in-memory WebSocket pair: the console's terminal bridge is a data channel's client end
inside the server, so it hands the gateway one end of a pipe instead of dialling itself.

Each end has the shape of :class:`hatchway.transport.socket.TextSocket`: bounded (a send waits
while the peer has :data:`QUEUE` messages unread, and gives up after ``SEND_TIMEOUT``, as a
network socket's would), closes once, and the peer sees the close code after the messages
sent before it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from hatchway.errors import ChannelClosed, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.transport.socket import SEND_TIMEOUT

__all__ = ["QUEUE", "PipeEnd", "pipe"]

QUEUE = 256
"""Messages an end may have unread before its peer's sends wait."""

_CLOSE = object()
ABNORMAL = 1006  # RFC 6455 §7.4.1: closed without a close frame


class PipeEnd:
    """One end of :func:`pipe`."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._peer: PipeEnd | None = None
        self._inbox: deque[object] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._close_code: int | None = None
        self._close_reason = ""

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    # ---- sending ------------------------------------------------------------------------

    async def send(self, data: bytes) -> bool:
        return await self._put(bytes(data))

    async def send_text(self, text: str) -> None:
        if not await self._put(text):
            raise ChannelClosed(f"{self.label} closed")

    def send_now(self, frames: Sequence[bytes]) -> bool:
        peer = self._peer
        if self._closed or peer is None or len(peer._inbox) + len(frames) > QUEUE:
            return False
        for frame in frames:
            peer._deliver(bytes(frame))
        return True

    async def _put(self, message: object) -> bool:
        peer = self._peer
        if self._closed or peer is None or peer._closed:
            return False
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                while len(peer._inbox) >= QUEUE:
                    peer._writable.clear()
                    await peer._writable.wait()
                    if self._closed or peer._closed:
                        return False
        except TimeoutError:
            self._shut(CloseCode.STALLED, "the peer did not read")
            return False
        peer._deliver(message)
        return True

    def _deliver(self, message: object) -> None:
        self._inbox.append(message)
        self._readable.set()

    # ---- receiving ----------------------------------------------------------------------

    async def _next(self) -> object:
        while not self._inbox:
            if self._closed:
                return _CLOSE
            self._readable.clear()
            await self._readable.wait()
        message = self._inbox.popleft()
        if len(self._inbox) < QUEUE:
            self._writable.set()
        return message

    async def receive_text(self) -> str:
        message = await self._next()
        if message is _CLOSE:
            raise ChannelClosed(f"{self.label} closed before its first message")
        if not isinstance(message, str):
            raise RemoteProtocolError("expected a text message, got a binary one")
        return message

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._next()
            if message is _CLOSE:
                return
            if isinstance(message, bytes):
                yield message

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        """Hand every binary message to ``handler`` in order until the pipe closes (the
        Socket protocol's; a pipe has no reader callback to call it from, so it iterates)."""
        try:
            async for message in self:
                handler(message)
        except Exception:
            self.abort()
            raise

    # ---- closing ------------------------------------------------------------------------

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        self._shut(code, reason)

    def abort(self) -> None:
        self._shut(ABNORMAL, "aborted")

    def _shut(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_code, self._close_reason = code, reason
        self._readable.set()
        self._writable.set()
        peer = self._peer
        if peer is not None and not peer._closed:
            # The peer reads what was sent before the close, then sees the close.
            peer._close_code, peer._close_reason = code, reason
            peer._inbox.append(_CLOSE)
            peer._readable.set()
            peer._writable.set()


def pipe(label: str) -> tuple[PipeEnd, PipeEnd]:
    """Two connected ends: ``(client end, server end)``."""
    a, b = PipeEnd(f"{label} (client end)"), PipeEnd(f"{label} (server end)")
    a._peer, b._peer = b, a
    return a, b
