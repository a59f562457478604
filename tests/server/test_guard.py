"""The connection guard in front of aiohttp (``server.guard``): real sockets on 127.0.0.1.

Time limits are set small here; tests wait for the server to close a connection (with a
generous bound) and never assert how long anything took.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hatchway.server.certificates import ensure_tls_identity, ssl_server_context
from hatchway.server.guard import ConnectionGuard, ConnectionLimits, listen

WAIT = 10.0  # bound for anything the server is expected to do


def limits(**changes: float) -> ConnectionLimits:
    values: dict[str, float] = {
        "max_connections": 100,
        "max_per_source": 100,
        "tls_handshake_timeout": 10.0,
        "head_timeout": 10.0,
        "body_timeout": 10.0,
        "idle_timeout": 10.0,
    }
    values.update(changes)
    return ConnectionLimits(**values)  # type: ignore[arg-type]


@dataclass
class Served:
    guard: ConnectionGuard
    port: int

    async def connect(
        self, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1",
                self.port,
                local_addr=(source, 0),
                ssl=tls,
                server_hostname="127.0.0.1" if tls else None,
            ),
            WAIT,
        )


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="hello")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(message.data)
    return ws


@asynccontextmanager
async def served(
    guard_limits: ConnectionLimits, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Served]:
    guard = ConnectionGuard(guard_limits, ssl_context=tls)
    app = web.Application(middlewares=[guard.middleware])
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/ws", ws_echo)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=guard_limits.idle_timeout)
    await runner.setup()
    assert runner.server is not None
    await guard.start(runner.server, listen("127.0.0.1", 0))
    try:
        yield Served(guard, guard.sockets[0].getsockname()[1])
    finally:
        await guard.close()
        await runner.cleanup()


Run = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test body on asyncio's own event loop and on uvloop (what the server uses)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return lambda body: uvloop.run(asyncio.wait_for(body(), 60))
    return lambda body: asyncio.run(asyncio.wait_for(body(), 60))


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode().split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    return int(lines[0].split()[1]), await asyncio.wait_for(reader.readexactly(length), WAIT)


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """Wait for the server to end the connection (end of stream or a reset); a connection
    still open after ``WAIT`` fails the test with ``TimeoutError``."""
    with suppress(ConnectionResetError, ssl.SSLError):
        await asyncio.wait_for(reader.read(), WAIT)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until ``predicate`` holds: the server's side of a close is seen by
    the client first."""
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.01)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


# ---- request heads ---------------------------------------------------------------------------


def test_a_head_that_never_completes_is_closed(run: Run) -> None:
    async def body() -> None:
        async with served(limits(head_timeout=0.3)) as s:
            reader, writer = await s.connect()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await closed_by_server(reader)
            assert s.guard.stats.head_timeouts == 1
            writer.close()
            await eventually(lambda: s.guard.connections == 0)

    run(body)


def test_a_later_head_on_a_keep_alive_connection_is_timed_too(run: Run) -> None:
    async def body() -> None:
        async with served(limits(head_timeout=0.3)) as s:
            reader, writer = await s.connect()
            writer.write(GET)
            assert await response(reader) == (200, b"hello")
            writer.write(b"GET / HTTP/1.1\r\nHo")
            await closed_by_server(reader)
            assert s.guard.stats.head_timeouts == 1
            writer.close()

    run(body)


def test_an_idle_keep_alive_connection_is_closed(run: Run) -> None:
    async def body() -> None:
        async with served(limits(idle_timeout=0.3)) as s:
            reader, writer = await s.connect()
            writer.write(GET)
            assert await response(reader) == (200, b"hello")
            await closed_by_server(reader)
            assert s.guard.stats.head_timeouts == 0
            writer.close()

    run(body)


# ---- request bodies --------------------------------------------------------------------------


def test_a_stalled_body_is_closed(run: Run) -> None:
    async def body() -> None:
        async with served(limits(body_timeout=0.3)) as s:
            reader, writer = await s.connect()
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n12345")
            await closed_by_server(reader)
            assert s.guard.stats.body_timeouts == 1
            writer.close()
            await eventually(lambda: s.guard.connections == 0)

    run(body)


def test_a_slow_body_that_keeps_coming_is_served(run: Run) -> None:
    async def body() -> None:
        async with served(limits(body_timeout=1.0)) as s:
            reader, writer = await s.connect()
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
            for piece in (b"ab", b"cd", b"ef", b"gh", b"ij", b"kl"):
                await asyncio.sleep(0.3)  # the client's pace: 1.8 s in all, > body_timeout
                writer.write(piece)
            assert await response(reader) == (200, b"abcdefghijkl")
            assert s.guard.stats.body_timeouts == 0
            writer.close()

    run(body)


# ---- caps ------------------------------------------------------------------------------------


def test_connections_over_the_cap_per_source_are_closed_at_once(run: Run) -> None:
    async def body() -> None:
        async with served(limits(max_per_source=2)) as s:
            kept = [await s.connect("127.0.0.1") for _ in range(2)]
            for reader, writer in kept:  # both are served
                writer.write(GET)
                assert await response(reader) == (200, b"hello")
            reader, writer = await s.connect("127.0.0.1")
            await closed_by_server(reader)
            writer.close()
            assert s.guard.stats.refused_source_cap == 1
            other_reader, other_writer = await s.connect("127.0.0.2")  # another source
            other_writer.write(GET)
            assert await response(other_reader) == (200, b"hello")
            assert s.guard.connections_from("127.0.0.1") == 2
            kept[0][1].close()
            await eventually(lambda: s.guard.connections_from("127.0.0.1") == 1)
            reader, writer = await s.connect("127.0.0.1")  # a place is free again
            writer.write(GET)
            assert await response(reader) == (200, b"hello")
            for w in (writer, other_writer, kept[1][1]):
                w.close()

    run(body)


def test_connections_over_the_total_cap_are_closed_at_once(run: Run) -> None:
    async def body() -> None:
        async with served(limits(max_connections=3)) as s:
            kept = [await s.connect(f"127.0.0.{i}") for i in (2, 3, 4)]
            for reader, writer in kept:
                writer.write(GET)
                assert await response(reader) == (200, b"hello")
            reader, writer = await s.connect("127.0.0.5")
            await closed_by_server(reader)
            writer.close()
            assert s.guard.stats.refused_total_cap == 1
            assert s.guard.connections == 3
            for _, w in kept:
                w.close()
            await eventually(lambda: s.guard.connections == 0)

    run(body)


# ---- TLS and WebSockets ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    identity = ensure_tls_identity(Path(tmp_path_factory.mktemp("tls")))
    client = ssl.create_default_context(cafile=str(identity.ca_cert_path))
    return ssl_server_context(identity), client


def test_requests_are_served_over_tls_and_a_silent_handshake_is_closed(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], run: Run
) -> None:
    server_tls, client_tls = tls_pair

    async def body() -> None:
        async with served(limits(tls_handshake_timeout=0.3), tls=server_tls) as s:
            reader, writer = await s.connect(tls=client_tls)
            writer.write(GET)
            assert await response(reader) == (200, b"hello")
            with socket.create_connection(("127.0.0.1", s.port)) as silent:
                silent.setblocking(False)
                loop = asyncio.get_running_loop()
                assert await asyncio.wait_for(loop.sock_recv(silent, 1), WAIT) == b""
            assert s.guard.stats.tls_failed == 1
            writer.close()
            await eventually(lambda: s.guard.connections == 0)

    run(body)


def test_a_websocket_is_not_under_the_head_or_idle_time_limits(
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext], run: Run
) -> None:
    server_tls, client_tls = tls_pair

    async def body() -> None:
        quick = limits(head_timeout=0.3, idle_timeout=0.3)
        async with served(quick, tls=server_tls) as s, aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{s.port}/ws"
            async with session.ws_connect(url, ssl=client_tls, autoping=False) as ws:
                await ws.send_str("one")
                assert (await ws.receive(WAIT)).data == "one"
                # A slow head opened after the WebSocket is closed: its time limit has passed
                # for the WebSocket's connection too.
                reader, writer = await s.connect(tls=client_tls)
                writer.write(b"GET / HTTP/1.1\r\n")
                await closed_by_server(reader)
                writer.close()
                await ws.send_str("two")
                assert (await ws.receive(WAIT)).data == "two"
                assert s.guard.stats.head_timeouts == 1

    run(body)


def test_every_address_of_a_name_listens_on_the_same_port() -> None:
    try:
        listeners = listen("localhost", 0)
    except OSError as exc:  # e.g. no IPv6 on this machine
        pytest.skip(f"cannot listen on every address of localhost: {exc}")
    try:
        ports = {s.getsockname()[1] for s in listeners}
        assert len(ports) == 1 and ports != {0}
    finally:
        for s in listeners:
            s.close()
