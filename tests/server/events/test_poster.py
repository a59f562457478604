"""``HttpPoster`` against a real aiohttp server on loopback: what counts as delivered, and that
redirects are not followed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from hatchway.server.events.worker import HttpPoster

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/ok":
            assert await request.read() == b'{"x":1}'
            assert request.headers["X-Test"] == "yes"
            return web.Response(status=204)
        if request.path == "/moved":
            raise web.HTTPFound("/ok")
        if request.path == "/slow":
            await asyncio.sleep(2)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


async def test_2xx_delivers_and_anything_else_fails_saying_why(
    receiver: tuple[str, list[str]],
) -> None:
    base, hits = receiver
    poster = HttpPoster(timeout=0.5)
    try:
        ok = await poster.post(base + "/ok", b'{"x":1}', {"X-Test": "yes"})
        assert ok.ok and ok.status == 204 and ok.error == ""
        failed = await poster.post(base + "/broken", b"{}", {})
        assert not failed.ok and (failed.status, failed.error) == (500, "HTTP 500")
        moved = await poster.post(base + "/moved", b"{}", {})
        assert not moved.ok and moved.status == 302 and "not followed" in moved.error
        assert hits == ["/ok", "/broken", "/moved"]  # the redirect's target was not posted to
        slow = await poster.post(base + "/slow", b"{}", {})
        assert slow.status is None and "no answer within 0.5 s" in slow.error
    finally:
        await poster.close()


async def test_a_refused_connection_is_a_failed_attempt() -> None:
    import socket

    with socket.socket() as s:  # bound, not listening: connecting is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        poster = HttpPoster(timeout=2)
        try:
            result = await poster.post(f"http://127.0.0.1:{port}/x", b"{}", {})
        finally:
            await poster.close()
    assert result.status is None and not result.ok
    assert result.error.startswith("ClientConnectorError")
