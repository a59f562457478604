"""``AiohttpSocket`` over a real aiohttp server: a peer that keeps TCP open but stops reading is
dropped after the send time-out, and a writer queued behind the stalled send is let go too."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from hatchway.protocol.closecodes import CloseCode
from hatchway.transport.aiohttp_socket import AiohttpSocket

SEND_TIMEOUT = 0.5


class Server:
    def __init__(self) -> None:
        self.socket: asyncio.Future[AiohttpSocket] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        sock = AiohttpSocket(ws, "test", abort=request.transport.abort, send_timeout=SEND_TIMEOUT)
        self.socket.set_result(sock)
        await self.done.wait()
        return ws


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Server, int]]:
    server = Server()
    app = web.Application()
    app.router.add_get("/ws", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield server, runner.addresses[0][1]
    finally:
        server.done.set()
        await runner.cleanup()


async def upgrade_and_stop_reading(port: int) -> socket.socket:
    """A WebSocket client that completes the upgrade and then never reads again."""
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.to_thread(raw.recv, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


@pytest.mark.asyncio
async def test_a_peer_that_stops_reading_is_dropped_after_the_send_timeout(
    served: tuple[Server, int],
) -> None:
    server, port = served
    raw = await upgrade_and_stop_reading(port)
    try:
        sock = await asyncio.wait_for(server.socket, 10)
        chunk = b"x" * 1_000_000
        async with asyncio.timeout(60):
            sent = 0
            while await sock.send(chunk):
                sent += 1
            # A second writer that queued behind the stalled send is let go as well.
            assert not await sock.send(b"late")
        assert sent >= 1
        assert sock.closed and sock.close_code == CloseCode.STALLED
    finally:
        raw.close()


@pytest.mark.asyncio
async def test_a_reading_peer_is_never_dropped(served: tuple[Server, int]) -> None:
    server, port = served
    raw = await upgrade_and_stop_reading(port)
    reader = asyncio.get_running_loop().run_in_executor(None, _read_all, raw)
    try:
        sock = await asyncio.wait_for(server.socket, 10)
        for _ in range(8):
            assert await sock.send(b"y" * 200_000)
            await asyncio.sleep(SEND_TIMEOUT / 5)  # the watchdog fires in between, harmlessly
        assert not sock.closed
        await sock.close(CloseCode.NORMAL)
    finally:
        raw.shutdown(socket.SHUT_RDWR)
        raw.close()
        await reader


def _read_all(raw: socket.socket) -> None:
    try:
        while raw.recv(65536):
            pass
    except OSError:
        pass


@pytest.mark.asyncio
async def test_deliver_hands_every_message_over_in_order_until_the_close(
    served: tuple[Server, int],
) -> None:
    server, port = served
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
    ):
        sock = await server.socket
        got: list[bytes] = []
        delivering = asyncio.create_task(sock.deliver(got.append))
        for message in (b"one", b"two", b"three"):
            await ws.send_bytes(message)
        await ws.close()
        async with asyncio.timeout(5):
            await delivering
    assert got == [b"one", b"two", b"three"]


@pytest.mark.asyncio
async def test_a_failing_handler_drops_the_connection_and_deliver_raises(
    served: tuple[Server, int],
) -> None:
    server, port = served
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
    ):
        sock = await server.socket

        def handler(message: bytes) -> None:
            raise ValueError(f"cannot take {message!r}")

        delivering = asyncio.create_task(sock.deliver(handler))
        await ws.send_bytes(b"one")
        with pytest.raises(ValueError, match="cannot take"):
            async with asyncio.timeout(5):
                await delivering
        assert sock.closed
