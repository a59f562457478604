"""The agent's control loop, in process: a fake dialer hands it in-memory sockets, the test
plays the server on the other end, and the loop clock is fast-forwarded (looptime)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest
import pytest_asyncio

from hatchway.agent.agent import Agent, AgentSettings, Deregistered, Superseded
from hatchway.agent.state import AgentState, claim_generation
from hatchway.errors import Conflict, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.controlchannel import (
    AGENT_GENERATION_HEADER,
    ControlMessage,
    Heartbeat,
    Sender,
    StartSession,
    TaskAcknowledge,
    TaskComplete,
    TaskStatus,
    decode,
    encode,
)
from hatchway.protocol.payloads import AgentTaskPayload
from tests.fakes import FakeClock, FakeDialer, MemorySocket

NODE = "mi-0123456789abcdef0"


class FixedFacts:
    async def heartbeat(self, session_ids: Iterable[str]) -> Heartbeat:
        return Heartbeat.create(
            hostname="node-1",
            platform_type="Linux",
            platform_name="Test",
            platform_version="1",
            ip_address="10.0.0.7",
            agent_version="0.1.0",
            session_ids=tuple(session_ids),
        )


class Running:
    """An agent run in the background, and the server ends of its connections."""

    def __init__(self, tmp_path: Path, settings: AgentSettings | None = None) -> None:
        state_dir = tmp_path / "state"
        state_dir.mkdir(mode=0o700, exist_ok=True)
        self.state = AgentState(state_dir, NODE, "https://hatchway.test", "local", None)
        self.dialer = FakeDialer()
        self.agent = Agent(
            self.state,
            settings or AgentSettings(),
            FakeClock(),
            dialer=self.dialer,
            facts=FixedFacts(),
        )
        self.stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.agent.run(self.stop))

    async def server_end(self) -> tuple[dict[str, str], MemorySocket]:
        _, headers, sock = await self.dialer.next_server_end()
        return headers, sock

    async def finished(self, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.wait({self.task})


async def receive(sock: MemorySocket, timeout: float = 30.0) -> ControlMessage:
    messages = sock.__aiter__()
    try:
        async with asyncio.timeout(timeout):
            return decode(await anext(messages), sender=Sender.AGENT)
    finally:
        await messages.aclose()


async def receive_kind(sock: MemorySocket, kind: type, timeout: float = 30.0) -> ControlMessage:
    async with asyncio.timeout(timeout):
        while True:
            message = await receive(sock, timeout)
            if isinstance(message, kind):
                return message


Start = Callable[..., Running]


@pytest_asyncio.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts agents from inside the test (looptime only follows the worker thread the agent
    uses for its state directory from there), and stops them afterwards."""
    started: list[Running] = []

    def start_agent(settings: AgentSettings | None = None) -> Running:
        started.append(Running(tmp_path, settings))
        return started[-1]

    try:
        yield start_agent
    finally:
        for run in started:
            run.stop.set()
            await asyncio.wait({run.task}, timeout=30)
            if not run.task.done():
                run.task.cancel()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_the_agent_names_its_generation_and_sends_heartbeats(start: Start) -> None:
    running = start()
    headers, server = await running.server_end()
    assert headers[AGENT_GENERATION_HEADER] == "1"
    loop = asyncio.get_running_loop()
    first = await receive(server)
    t0 = loop.time()
    second = await receive(server)
    assert isinstance(first, Heartbeat) and isinstance(second, Heartbeat)
    assert first.hostname == "node-1" and first.session_ids == ()
    assert loop.time() - t0 == pytest.approx(running.agent.settings.heartbeat_interval)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_completion_is_resent_until_acknowledged_across_reconnects(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    await running.agent.complete("admin-1", "Success", "0")
    done = await receive_kind(server, TaskComplete)
    again = await receive_kind(server, TaskComplete)
    assert isinstance(done, TaskComplete) and isinstance(again, TaskComplete)
    assert again.message_id == done.message_id and done.exit_code == 0

    await server.close(CloseCode.GOING_AWAY, "server restarting")
    _, server = await running.server_end()
    resent = await receive_kind(server, TaskComplete)
    assert isinstance(resent, TaskComplete) and resent.message_id == done.message_id

    await server.send(encode(TaskAcknowledge(done.message_id, "admin-1"), now=1.0))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await receive_kind(server, TaskComplete, timeout=5)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_bad_messages_from_the_server_are_dropped(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    for _ in range(50):
        await server.send(b"\xff" * 150)
    await receive_kind(server, Heartbeat)
    await receive_kind(server, Heartbeat)
    assert not running.task.done() and not server.closed


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_session_beyond_the_limit_is_refused_with_a_reason(start: Start) -> None:
    run = start(AgentSettings(max_sessions=0))
    _, server = await run.server_end()
    task = AgentTaskPayload("admin-9", "doc", {"sessionType": "Standard_Stream"}, {})
    await server.send(encode(StartSession(task), now=1.0))
    done = await receive_kind(server, TaskComplete)
    assert isinstance(done, TaskComplete)
    assert done.final_task_status == TaskStatus.FAILED and "maximum of 0" in done.output
    run.stop.set()
    await run.finished()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_unknown_session_type_fails_without_echoing_details(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    task = AgentTaskPayload("admin-2", "doc", {"sessionType": "\x1b[2JPwn"}, {})
    await server.send(encode(StartSession(task), now=1.0))
    done = await receive_kind(server, TaskComplete)
    assert isinstance(done, TaskComplete) and done.final_task_status == TaskStatus.FAILED
    assert done.output == "this agent runs no such session type"


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_stop_closes_the_channel_and_the_dialer(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    await receive_kind(server, Heartbeat)
    running.stop.set()
    await running.finished()
    assert running.task.exception() is None
    assert server.closed and server.close_code == CloseCode.NORMAL
    assert running.dialer.closed


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_deregistration_stops_the_agent(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    await server.close(CloseCode.DEREGISTERED, "node deregistered")
    await running.finished()
    assert isinstance(running.task.exception(), Deregistered)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_unreachable_server_is_retried(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    running.dialer.refusals.extend([Unavailable("no route"), Unavailable("no route")])
    await server.close(CloseCode.GOING_AWAY, "bye")
    _, server = await running.server_end()
    assert len(running.dialer.dials) == 4
    assert isinstance(await receive(server), Heartbeat)


# ---- two agents on one state directory: the newer one wins, in both orders -----------------


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_older_agent_is_superseded_by_a_newer_one(start: Start) -> None:
    running = start()
    """Order 1: the old agent is connected when the new one starts and connects."""
    _, server = await running.server_end()
    newer = claim_generation(running.state.state_dir, pid=4242)  # `agent run` elsewhere
    assert newer.number == 2
    await server.close(CloseCode.SUPERSEDED, "a newer agent took over this node")
    await running.finished()
    error = running.task.exception()
    assert isinstance(error, Superseded)
    assert str(error) == (
        "another agent (pid 4242) took over this node's state directory; stopping"
    )
    assert len(running.dialer.dials) == 1  # it did not come back


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_older_agent_notices_the_newer_one_before_redialling(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    claim_generation(running.state.state_dir, pid=4343)
    await server.close(CloseCode.GOING_AWAY, "server restarting")  # a plain drop
    await running.finished()
    error = running.task.exception()
    assert isinstance(error, Superseded) and "pid 4343" in str(error)
    assert len(running.dialer.dials) == 1


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_older_agent_refused_by_the_server_stops(start: Start) -> None:
    """Order 2: the new agent connected first; the old one dials afterwards (HTTP 409)."""
    run = start()
    _, server = await run.server_end()
    claim_generation(run.state.state_dir, pid=4444)
    run.dialer.refusals.append(Conflict("a newer agent took over"))
    # The old agent dials before it happens to look at its state directory.
    run.agent._check_generation = lambda: None  # type: ignore[method-assign]
    await server.close(CloseCode.GOING_AWAY, "bye")
    await run.finished()
    error = run.task.exception()
    assert isinstance(error, Superseded) and "pid 4444" in str(error)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_same_generation_takeover_stops_rather_than_fighting(start: Start) -> None:
    running = start()
    _, server = await running.server_end()
    await server.close(CloseCode.REPLACED, "replaced by a newer connection")
    await running.finished()
    error = running.task.exception()
    assert error is not None and "copy of its state directory" in str(error)
