"""The far end of a client session in tests: the gateway's dialer (:class:`Server`), a
real agent ``Endpoint`` behind it (:class:`Agent`), ResumeSession (:class:`FakeApi`) and pipes
as the local terminal (:class:`Pipes`)."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hatchway.errors import Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.events import StreamData
from hatchway.protocol.frames import MessageType, PayloadType
from hatchway.protocol.handshake import (
    Extensions,
    HandshakeComplete,
    HandshakeResponse,
    build_request,
    negotiated_from_response,
)
from hatchway.protocol.payloads import ChannelClosedPayload, OpenDataChannelInput, encode_exit_code
from hatchway.protocol.reliability import Endpoint, Role
from tests.fakes import MemorySocket, socket_pair

SESSION = "alice-0123456789abcdef0"
URL = f"wss://hatchway.test/v1/data-channel/{SESSION}"
OFFER = Extensions(max_payload_size=65536, exit_code=True)


# ---- the far end ---------------------------------------------------------------------------


@dataclass
class FakeApi:
    """ResumeSession: hands out ``tokens`` in order; None once they run out (session ended)."""

    tokens: deque[str | Exception] = field(default_factory=deque)
    calls: int = 0

    async def resume_session(self, session_id: str) -> str | None:
        assert session_id == SESSION
        self.calls += 1
        if not self.tokens:
            return None
        token = self.tokens.popleft()
        if isinstance(token, Exception):
            raise token
        return token


class Server:
    """The dialer the session gets, and the gateway's ends of the connections it opens."""

    def __init__(self, capacity: int = 64) -> None:
        self.unreachable = False
        self.dialled = 0
        self.capacity = capacity  # messages each direction holds before a sender waits
        self._ends: asyncio.Queue[MemorySocket] = asyncio.Queue()

    async def dial(self, url: str, ssl_context: ssl.SSLContext | None) -> MemorySocket:
        assert url == URL
        self.dialled += 1
        if self.unreachable:
            raise Unavailable("cannot reach the server: connection refused")
        client, server = socket_pair("client", "gateway", capacity=self.capacity)
        self._ends.put_nowait(server)
        return client

    async def accept(self) -> tuple[MemorySocket, OpenDataChannelInput]:
        """The next connection and its open message."""
        async with asyncio.timeout(30):
            end = await self._ends.get()
        opened = OpenDataChannelInput.from_json((await end.receive_text()).encode())
        return end, opened


class Agent:
    """The agent behind the gateway: a real agent ``Endpoint`` speaking over the current
    connection's gateway end."""

    def __init__(self) -> None:
        self.endpoint = Endpoint(Role.AGENT, wall_clock=time.time)
        self.end: MemorySocket | None = None
        self._messages: AsyncIterator[bytes] | None = None
        self._received: deque[StreamData] = deque()

    def attach(self, end: MemorySocket) -> None:
        self.end = end
        self._messages = aiter(end)

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    async def send(self, payload_type: int, data: bytes) -> None:
        self.endpoint.send(payload_type, data, now=self.now())
        await self.flush()

    async def flush(self) -> None:
        assert self.end is not None
        for frame in self.endpoint.data_to_send():
            await self.end.send(frame)

    async def control(self, message_type: str, payload: bytes) -> None:
        assert self.end is not None
        await self.end.send(control_frame(message_type, payload, now=time.time()))

    async def next_message(self) -> bytes:
        assert self._messages is not None
        async with asyncio.timeout(30):
            return await anext(self._messages)

    async def receive(self) -> StreamData:
        """The client's next stream frame (acknowledged)."""
        while not self._received:
            events = self.endpoint.receive(await self.next_message(), now=self.now())
            self._received.extend(e for e in events if isinstance(e, StreamData))
            await self.flush()
        return self._received.popleft()

    async def handshake(
        self,
        session_type: str = "Standard_Stream",
        properties: Any = None,
        offer: Extensions | None = OFFER,
    ) -> HandshakeResponse:
        """The handshake; ``offer`` None is AWS's agent (no extensions offered)."""
        request = build_request(session_type, properties, offer or Extensions())
        if offer is None:
            request = type(request)(request.agent_version, request.requested_client_actions[:1])
        await self.send(PayloadType.HANDSHAKE_REQUEST, request.to_json())
        answer = await self.receive()
        assert answer.payload_type == PayloadType.HANDSHAKE_RESPONSE
        response = HandshakeResponse.from_json(answer.payload)
        negotiated = negotiated_from_response(response, offer=offer or Extensions())
        self.endpoint.max_payload_size = negotiated.max_payload_size
        complete = HandshakeComplete(handshake_time_to_complete_ns=0, customer_message="")
        await self.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json())
        return response

    async def end_session(self, output: str = "", exit_code: int | None = None) -> None:
        """As the server ends a session: exit code, channel_closed, close 4001."""
        assert self.end is not None
        if exit_code is not None:
            await self.send(PayloadType.EXIT_CODE, encode_exit_code(exit_code))
        closed = ChannelClosedPayload(
            message_id="m-1",
            created_date="0",
            destination_id="mi-0123456789abcdef0",
            session_id=SESSION,
            output=output,
        )
        await self.control(MessageType.CHANNEL_CLOSED, closed.to_json())
        await self.end.close(CloseCode.ENDED, "session ended")


# ---- the terminal --------------------------------------------------------------------------


@dataclass
class Pipes:
    stdin: int  # the session reads
    typing: int  # the test writes
    stdout: int
    screen: int
    stderr: int
    errors: int

    def type(self, data: bytes) -> None:
        os.write(self.typing, data)

    def end_input(self) -> None:
        os.close(self.typing)
        self.typing = -1


def drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


async def read_until(fd: int, expected: bytes) -> bytes:
    """What arrives on ``fd`` until it contains ``expected``."""
    seen = b""
    async with asyncio.timeout(30):
        while expected not in seen:
            seen += drain(fd)
            await asyncio.sleep(0.01)
    return seen


async def connected(server: Server, agent: Agent) -> OpenDataChannelInput:
    end, opened = await server.accept()
    agent.attach(end)
    return opened
