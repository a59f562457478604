"""The agent's dialer against a real in-process aiohttp server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from hatchway.agent.dialer import ERROR_HEADER, Dialer
from hatchway.agent.state import AgentState
from hatchway.auth.agentkey import generate_private_key, save_private_key
from hatchway.auth.nonce import NONCE_HEADER
from hatchway.errors import AuthError, Conflict, NotFound, Unavailable
from hatchway.protocol.controlchannel import MAX_SESSIONS_PER_NODE
from hatchway.transport.sansio_socket import WebSocket

NODE = "mi-0123456789abcdef0"


class FakeServer:
    """Hands out nonces and accepts every upgrade (or refuses with ``refuse_with``)."""

    def __init__(self) -> None:
        self.upgrades: list[dict[str, str]] = []
        self.nonces = 0
        self.refuse_with: int | None = None
        self.open: list[web.WebSocketResponse] = []
        self.app = web.Application()
        self.app.router.add_get("/v1/agent-nonce", self.nonce)
        self.app.router.add_get("/v1/data-channel/{sid}", self.upgrade)

    async def nonce(self, request: web.Request) -> web.Response:
        self.nonces += 1
        return web.json_response({"Nonce": f"nonce-{self.nonces}-{request.query['node']}"})

    async def upgrade(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_with is not None:
            return web.Response(status=self.refuse_with, headers={ERROR_HEADER: "no (Test)"})
        self.upgrades.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open.append(ws)
        async for _ in ws:
            pass
        return ws


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[FakeServer, str]]:
    fake = FakeServer()
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        for ws in fake.open:
            await ws.close()
        await runner.cleanup()


def state(tmp_path: Path, endpoint: str) -> AgentState:
    save_private_key(tmp_path / "private-key.pem", generate_private_key())
    return AgentState(tmp_path, NODE, endpoint, "local", None)


@pytest.mark.asyncio
async def test_one_agent_holds_more_than_a_hundred_connections(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    """aiohttp's default connector stopped at 100 connections (the 100th session hung, when
    the agent's WebSockets were aiohttp's); no limit of a library's may come back."""
    fake, endpoint = server
    dialer = Dialer(state(tmp_path, endpoint))
    count = 120
    assert count < MAX_SESSIONS_PER_NODE
    try:
        async with asyncio.timeout(30):
            sockets = await asyncio.gather(
                *(dialer.connect(f"/v1/data-channel/admin-{i}") for i in range(count))
            )
        assert len(fake.upgrades) == count
        assert all(isinstance(s, WebSocket) for s in sockets)  # one writer, bounded sends
    finally:
        await dialer.close()
    # Closing the dialer closes what it opened: upgraded connections leave the HTTP client's
    # pool, so closing that alone would leave them to the garbage collector.
    assert all(s.closed for s in sockets)


@pytest.mark.asyncio
async def test_every_upgrade_signs_a_fresh_nonce(
    server: tuple[FakeServer, str], tmp_path: Path
) -> None:
    fake, endpoint = server
    dialer = Dialer(state(tmp_path, endpoint))
    try:
        for i in range(2):
            sock = await dialer.connect(f"/v1/data-channel/admin-{i}")
            await sock.close()
    finally:
        await dialer.close()
    nonces = [h[NONCE_HEADER] for h in fake.upgrades]
    assert nonces == [f"nonce-1-{NODE}", f"nonce-2-{NODE}"]
    for headers in fake.upgrades:
        assert "x-hatchway-nonce" in headers["Authorization"].split("SignedHeaders=")[1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "error"),
    [(403, AuthError), (404, NotFound), (409, Conflict), (503, Unavailable), (429, Unavailable)],
)
async def test_a_refused_upgrade_says_what_to_do(
    server: tuple[FakeServer, str], tmp_path: Path, status: int, error: type[Exception]
) -> None:
    fake, endpoint = server
    fake.refuse_with = status
    dialer = Dialer(state(tmp_path, endpoint))
    try:
        with pytest.raises(error) as raised:
            await dialer.connect("/v1/data-channel/admin-1")
    finally:
        await dialer.close()
    if status in (403, 409):
        assert "no (Test)" in str(raised.value)  # the server's X-Hatchway-Error


@pytest.mark.asyncio
async def test_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    dialer = Dialer(state(tmp_path, "http://127.0.0.1:9"))
    try:
        with pytest.raises(Unavailable):
            await dialer.connect("/v1/data-channel/admin-1")
    finally:
        await dialer.close()
