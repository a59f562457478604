"""A scripted WebSocket server for the CLI WebSocket's tests.

websockets' sans-I/O ``ServerProtocol`` over asyncio streams on ``127.0.0.1:0``, driven step by
step by the test: it can refuse the upgrade, stay silent, stop reading (so pings go unanswered
and the client's writes back up), send fragments, oversize messages and close frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence

from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol


class ServerEnd:
    """The server's end of one accepted TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ServerProtocol(max_size=None)
        self.request: Request | None = None
        self._events: deque[object] = deque()
        self.done = asyncio.Event()

    async def upgrade(
        self, *, status: int = 101, headers: Sequence[tuple[str, str]] = (), timeout: float = 5
    ) -> Request:
        """Read the upgrade request and accept it (101) or refuse it with ``status``."""
        event = await self._next_event(timeout)
        assert isinstance(event, Request), event
        self.request = event
        if status == 101:
            response = self.protocol.accept(event)
        else:
            response = self.protocol.reject(status, "refused\n")
        for name, value in headers:
            response.headers[name] = value
        self.protocol.send_response(response)
        self.flush()
        return event

    async def receive(self, timeout: float = 5) -> Frame:
        """The next frame from the client (pings included; they are answered)."""
        event = await self._next_event(timeout)
        assert isinstance(event, Frame), event
        return event

    async def receive_data(self, timeout: float = 5) -> Frame:
        """The next text, binary or close frame (pings are answered and skipped)."""
        while True:
            frame = await self.receive(timeout)
            if frame.opcode not in (Opcode.PING, Opcode.PONG):
                return frame

    async def wait_closed(self, timeout: float = 5) -> None:
        """Until the client has ended the TCP connection."""
        async with asyncio.timeout(timeout):
            while not self.reader.at_eof():
                data = await self.reader.read(65536)
                if not data:
                    break
                self.protocol.receive_data(data)
                self.flush()

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        self.protocol.send_binary(data, fin)
        self.flush()

    def send_continuation(self, data: bytes, fin: bool) -> None:
        self.protocol.send_continuation(data, fin)
        self.flush()

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.flush()

    def send_close(self, code: int, reason: str = "") -> None:
        self.protocol.send_close(code, reason)
        self.flush()

    def abort(self) -> None:
        self.writer.transport.abort()

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                with contextlib.suppress(OSError):  # the client may be gone already
                    self.writer.write_eof()
            else:
                self.writer.close()

    async def _next_event(self, timeout: float) -> object:
        async with asyncio.timeout(timeout):
            while not self._events:
                data = await self.reader.read(65536)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                self.flush()
                self._events.extend(self.protocol.events_received())
                if not data and not self._events:
                    raise EOFError("the client ended the connection")
        return self._events.popleft()


def close_of(frame: Frame) -> Close:
    assert frame.opcode is Opcode.CLOSE, frame
    return Close.parse(frame.data)


class ScriptedServer:
    """Accepts connections; the test takes each one with :meth:`accept`."""

    def __init__(self) -> None:
        self.url = ""
        self._ends: asyncio.Queue[ServerEnd] = asyncio.Queue()
        self._all: list[ServerEnd] = []

    async def accept(self, timeout: float = 5) -> ServerEnd:
        async with asyncio.timeout(timeout):
            return await self._ends.get()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        end = ServerEnd(reader, writer)
        self._all.append(end)
        await self._ends.put(end)
        await end.done.wait()

    def _finish(self) -> None:
        for end in self._all:
            end.writer.transport.abort()
            end.done.set()


@contextlib.asynccontextmanager
async def scripted_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[ScriptedServer]:
    """A :class:`ScriptedServer` listening on ``127.0.0.1:0`` (``wss://`` with ``tls``)."""
    scripted = ScriptedServer()
    server = await asyncio.start_server(scripted._serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scripted.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/v1/data-channel/s-1"
    try:
        yield scripted
    finally:
        scripted._finish()
        server.close()
        await server.wait_closed()
