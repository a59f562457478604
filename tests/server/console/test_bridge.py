"""The console's terminal bridge in process: a fake agent's endpoint on the pipe's far end
(where the gateway would be) and a browser on a real aiohttp WebSocket.

Offsets make resumption exact (replay from where the page was, input never taken twice), input
typed before the shell started waits for the first size, output the page has not acknowledged
is bounded (the agent is held back), and a terminal without its page for the resume window ends
its session.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.events import StreamData
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import (
    HATCHWAY_MAX_PAYLOAD,
    Extensions,
    HandshakeComplete,
    HandshakeResponse,
    build_request,
    negotiated_from_response,
)
from hatchway.protocol.payloads import decode_flag, encode_exit_code
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.server.console import bridge
from hatchway.server.console.bridge import Terminal, Terminals
from hatchway.server.console.pipe import PipeEnd

OFFER = Extensions(max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True, no_payload_digest=True)
OFFSET = struct.Struct(">Q")
SESSION = "alice-0123456789abcdef0"


class FakeAgent:
    """The agent's end of the session, on the pipe end the gateway would get."""

    def __init__(self) -> None:
        self.endpoint = Endpoint(Role.AGENT, wall_clock=time.time)
        self.end: PipeEnd | None = None
        self.opened = ""
        self.events: list[tuple[str, Any]] = []  # ("size", (cols, rows)) / ("input", bytes)
        self.changed = asyncio.Event()
        self.terminated = False
        self._flushes: set[asyncio.Future[None]] = set()

    async def serve(self, end: PipeEnd, session_id: str) -> None:
        assert session_id == SESSION
        self.end = end
        self.opened = await end.receive_text()
        request = build_request("Standard_Stream", None, OFFER)
        self.send(PayloadType.HANDSHAKE_REQUEST, request.to_json())
        async for message in end:
            for event in self.endpoint.receive(message, now=self.now()):
                if isinstance(event, StreamData):
                    self._on_stream(event.payload_type, event.payload)
            await self.flush()

    def _on_stream(self, kind: int, payload: bytes) -> None:
        if kind == PayloadType.HANDSHAKE_RESPONSE:
            negotiated = negotiated_from_response(HandshakeResponse.from_json(payload), offer=OFFER)
            self.endpoint.max_payload_size = negotiated.max_payload_size
            self.endpoint.payload_digest = not negotiated.no_payload_digest
            complete = HandshakeComplete(handshake_time_to_complete_ns=0, customer_message="")
            self.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json())
        elif kind == PayloadType.SIZE:
            size = json.loads(payload)
            self.events.append(("size", (size["cols"], size["rows"])))
        elif kind == PayloadType.OUTPUT:
            self.events.append(("input", payload))
        elif kind == PayloadType.FLAG and decode_flag(payload) == FlagValue.TERMINATE_SESSION:
            self.terminated = True
        self.changed.set()

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def send(self, kind: int, data: bytes) -> None:
        self.endpoint.send(kind, data, now=self.now())
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        assert self.end is not None
        for frame in self.endpoint.data_to_send():
            await self.end.send(frame)

    def typed(self) -> bytes:
        return b"".join(data for kind, data in self.events if kind == "input")

    async def wait(self, what: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not what():
                self.changed.clear()
                await self.changed.wait()


class Page:
    """A browser page's WebSocket to the bridge."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.output = bytearray()
        self.received_from = -1
        self.hello: dict[str, Any] = {}
        self.json: list[dict[str, Any]] = []

    async def read(self, until: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not until():
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    (offset,) = OFFSET.unpack_from(msg.data)
                    if self.received_from < 0:
                        self.received_from = offset
                    assert offset == self.received_from + len(self.output)  # no gap, no repeat
                    self.output += msg.data[OFFSET.size :]
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data["type"] == "hello":
                        self.hello = data
                    self.json.append(data)
                else:
                    raise AssertionError(f"the bridge closed the page: {msg}")

    async def close_code(self) -> int | None:
        """Read until the bridge closes this page; its close code."""
        async with asyncio.timeout(5):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return self.ws.close_code

    async def type(self, offset: int, data: bytes) -> None:
        await self.ws.send_bytes(OFFSET.pack(offset) + data)

    async def command(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message))


Scenario = Callable[[Terminal, FakeAgent, Callable[[int], Awaitable[Page]]], Awaitable[None]]


def run(scenario: Scenario, resume_window: float = 30.0) -> None:
    async def main() -> None:
        agent = FakeAgent()
        terminals = Terminals(agent.serve, resume_window)
        terminal = terminals.open(SESSION, "mi-0123456789abcdef0", "u1", "the-token")

        async def browser(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await terminal.serve_browser(ws, int(request.query["offset"]))
            return ws

        app = web.Application()
        app.router.add_get("/t", browser)
        async with TestClient(TestServer(app)) as client:
            sockets: list[aiohttp.ClientWebSocketResponse] = []

            async def open_page(offset: int) -> Page:
                ws = await client.ws_connect(f"/t?offset={offset}")
                sockets.append(ws)
                page = Page(ws)
                await page.read(lambda: bool(page.hello))
                return page

            try:
                await scenario(terminal, agent, open_page)
            finally:
                for ws in sockets:
                    await ws.close()
                await terminals.close_all()

    asyncio.run(main())


def test_input_typed_before_the_shell_starts_waits_for_the_first_size() -> None:
    async def scenario(terminal: Terminal, agent: FakeAgent, open_page: Any) -> None:
        page = await open_page(0)
        assert page.hello["sessionId"] == SESSION and page.hello["inputOffset"] == 0
        assert json.loads(agent.opened)["TokenValue"] == "the-token"
        await page.type(0, b"ls\r")
        await page.command(type="resize", cols=100, rows=30)
        await agent.wait(lambda: agent.typed() == b"ls\r")
        assert agent.events[0] == ("size", (100, 30))  # the size came first
        await page.command(type="resize", cols=0, rows=30)  # out of range: ignored
        await page.command(type="resize", cols=120, rows=40)
        await agent.wait(lambda: ("size", (120, 40)) in agent.events)
        assert ("size", (0, 30)) not in agent.events

    run(scenario)


def test_a_page_that_comes_back_gets_exactly_what_it_missed_and_input_is_taken_once() -> None:
    async def scenario(terminal: Terminal, agent: FakeAgent, open_page: Any) -> None:
        page = await open_page(0)
        await page.command(type="resize", cols=80, rows=24)
        await agent.wait(lambda: bool(agent.events))
        agent.send(PayloadType.OUTPUT, b"first;")
        await page.read(lambda: bytes(page.output) == b"first;")
        await page.ws.close()  # the network drops
        agent.send(PayloadType.OUTPUT, "second é;".encode())
        await asyncio.sleep(0.05)
        again = await open_page(len(b"first;"))  # reconnects from where it was
        await again.read(lambda: bytes(again.output) == "second é;".encode())
        assert again.received_from == len(b"first;")
        # Input sent before the drop and again after it (the page had no confirmation).
        await again.type(0, b"abc")
        await again.read(lambda: {"type": "inputAck", "offset": 3} in again.json)
        await again.type(0, b"abcdef")
        await again.type(6, b"gh")
        await again.type(20, b"a gap: refused")
        await again.read(lambda: {"type": "inputAck", "offset": 8} in again.json)
        await agent.wait(lambda: agent.typed() == b"abcdefgh")
        reloaded = await open_page(0)  # a reload redraws everything kept
        await reloaded.read(lambda: bytes(reloaded.output) == "first;second é;".encode())
        assert reloaded.hello["inputOffset"] == 8
        assert await again.close_code() == 4000  # the older page was replaced

    run(scenario)


def test_unacknowledged_output_is_bounded_and_the_agent_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge, "UNACKED_LIMIT", 100)
    monkeypatch.setattr(bridge, "REPLAY_KEEP", 10)

    async def scenario(terminal: Terminal, agent: FakeAgent, open_page: Any) -> None:
        page = await open_page(0)
        await page.command(type="resize", cols=80, rows=24)
        await agent.wait(lambda: bool(agent.events))
        agent.send(PayloadType.OUTPUT, b"x" * 120)
        await page.read(lambda: len(page.output) == 120)
        assert not terminal.endpoint.accepting  # the agent keeps the rest for now
        await page.command(type="ack", offset=120)
        await agent.wait(lambda: True)
        async with asyncio.timeout(5):
            while not terminal.endpoint.accepting:
                await asyncio.sleep(0.01)
        reloaded = await open_page(0)  # only REPLAY_KEEP acknowledged bytes were kept
        assert reloaded.hello["outputStart"] == 110
        await reloaded.read(lambda: bytes(reloaded.output) == b"x" * 10)

    run(scenario)


def test_the_end_of_the_session_reaches_the_page() -> None:
    async def scenario(terminal: Terminal, agent: FakeAgent, open_page: Any) -> None:
        page = await open_page(0)
        await page.command(type="resize", cols=80, rows=24)
        await agent.wait(lambda: bool(agent.events))
        agent.send(PayloadType.EXIT_CODE, encode_exit_code(7))
        await asyncio.sleep(0.05)
        assert agent.end is not None
        await agent.end.close(CloseCode.ENDED, "the shell exited")
        await page.read(lambda: any(m["type"] == "ended" for m in page.json))
        ended = next(m for m in page.json if m["type"] == "ended")
        assert ended == {"type": "ended", "message": "the shell exited", "exitCode": 7}

    run(scenario)


def test_a_terminal_without_its_page_for_the_resume_window_ends_its_session() -> None:
    async def scenario(terminal: Terminal, agent: FakeAgent, open_page: Any) -> None:
        page = await open_page(0)
        await page.command(type="resize", cols=80, rows=24)
        await agent.wait(lambda: bool(agent.events))
        await asyncio.sleep(1.2)  # attached for longer than the window: nothing happens
        assert not agent.terminated
        await page.ws.close()
        await agent.wait(lambda: agent.terminated)

    # The window also runs from the terminal's start until a page attaches: long enough here
    # for the page to connect on a busy machine.
    run(scenario, resume_window=1.0)
