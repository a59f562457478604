"""The server's control channels, in process: in-memory sockets, a fake node store, loop time."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import Conflict, StoreError
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.controlchannel import (
    Heartbeat,
    Sender,
    TaskAcknowledge,
    TaskComplete,
    TaskStatus,
    decode,
    encode,
)
from hatchway.protocol.frames import MessageType
from hatchway.protocol.gojson import dumps
from hatchway.server.control import BAD_MESSAGE_LIMIT, LOG_BURST, ControlChannels
from hatchway.server.settings import ServerSettings
from tests.fakes import FakeClock, FakeNodeStore, MemorySocket, socket_pair

NODE = "mi-0123456789abcdef0"


def beat(*session_ids: str, hostname: str = "web-1") -> bytes:
    heartbeat = Heartbeat.create(
        hostname=hostname,
        platform_type="Linux",
        platform_name="Debian",
        platform_version="12",
        ip_address="10.0.0.5",
        agent_version="0.1.0",
        session_ids=session_ids,
    )
    return encode(heartbeat, now=FakeClock().now)


def complete_frame(output: str, task_id: str = "admin-0123") -> tuple[TaskComplete, bytes]:
    done = TaskComplete.create(
        task_id=task_id, status=TaskStatus.SUCCESS, instance_id=NODE, output=output
    )
    return done, encode(done, now=FakeClock().now)


async def next_message(sock: MemorySocket, timeout: float = 10.0) -> bytes:
    messages = sock.__aiter__()
    try:
        async with asyncio.timeout(timeout):
            return await anext(messages)
    finally:
        await messages.aclose()


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.store = FakeNodeStore()
        self.channels = ControlChannels(self.store, ServerSettings(tmp_path), FakeClock())
        self.completed: list[TaskComplete] = []
        self.gone: list[str] = []
        self.reported: list[frozenset[str]] = []
        self.fail_completions = 0
        self.channels.on_task_complete = self._on_complete
        self.channels.on_node_gone = self._on_gone
        self.channels.on_sessions_reported = self._on_reported
        self.tasks: list[asyncio.Task[None]] = []

    async def _on_complete(self, node_id: str, done: TaskComplete) -> None:
        if self.fail_completions:
            self.fail_completions -= 1
            raise StoreError("database write failed: OperationalError")
        self.completed.append(done)

    async def _on_gone(self, node_id: str) -> None:
        self.gone.append(node_id)

    async def _on_reported(self, node_id: str, ids: frozenset[str]) -> None:
        self.reported.append(ids)

    def connect(self, generation: int = 1) -> MemorySocket:
        server_end, agent_end = socket_pair("server", "agent")
        self.tasks.append(
            asyncio.get_running_loop().create_task(self.channels.run(server_end, NODE, generation))
        )
        return agent_end

    async def beat_written(self) -> None:
        async with asyncio.timeout(10):
            await self.store.nodes.beat_written.wait()
        self.store.nodes.beat_written.clear()

    async def finish(self) -> None:
        async with asyncio.timeout(60):
            await asyncio.gather(*self.tasks)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_heartbeats_are_stored_checked_and_report_sessions(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    agent = h.connect()
    await agent.send(beat("admin-1", hostname="\x1b[2Jweb\n| fake |"))
    await h.beat_written()
    (node, _, facts) = h.store.nodes.beats[-1]
    assert node == NODE and facts["computer_name"] == "\ufffd[2Jweb\ufffd| fake |"
    assert facts["ip_address"] == "10.0.0.5" and facts["agent_version"] == "0.1.0"
    assert h.reported == [frozenset({"admin-1"})]
    assert h.channels.is_connected(NODE)
    await agent.close()
    await h.finish()
    assert h.gone == [NODE] and h.store.nodes.connected[NODE] is False


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_task_complete_is_recorded_then_acknowledged(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    agent = h.connect()
    done, frame = complete_frame("3")
    await agent.send(frame)
    ack = decode(await next_message(agent), sender=Sender.SERVER)
    assert isinstance(ack, TaskAcknowledge) and ack.message_id == done.message_id
    assert [c.exit_code for c in h.completed] == [3]
    await agent.close()
    await h.finish()


@pytest.mark.asyncio
@pytest.mark.looptime
@pytest.mark.parametrize("output", ["²", str(2**70), "-" + "9" * 30])
async def test_a_strange_exit_code_does_not_break_the_channel(tmp_path: Path, output: str) -> None:
    h = Harness(tmp_path)
    agent = h.connect()
    done, frame = complete_frame(output)
    await agent.send(frame)
    ack = decode(await next_message(agent), sender=Sender.SERVER)
    assert isinstance(ack, TaskAcknowledge) and ack.message_id == done.message_id
    assert h.completed[0].exit_code is None
    # The channel still carries the node's heartbeats.
    await agent.send(beat())
    await h.beat_written()
    assert h.channels.is_connected(NODE) and not agent.closed
    await agent.close()
    await h.finish()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_failing_database_delays_but_never_disconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(tmp_path)
    h.store.nodes.fail_heartbeats = 3
    agent = h.connect()
    for _ in range(3):  # each beat's new facts are written at once: the write fails
        await agent.send(beat())
        await asyncio.sleep(1)
    assert h.store.nodes.fail_heartbeats == 0  # three writes failed
    assert h.store.nodes.beats == [] and h.channels.is_connected(NODE)
    await h.beat_written()  # the next write: the beat kept through the failures, once
    assert len(h.store.nodes.beats) == 1

    # A completion that cannot be recorded is not acknowledged; the agent's resend is.
    h.fail_completions = 1
    done, frame = complete_frame("0")
    await agent.send(frame)
    await asyncio.sleep(1)
    assert h.completed == []
    await agent.send(frame)
    ack = decode(await next_message(agent), sender=Sender.SERVER)
    assert isinstance(ack, TaskAcknowledge) and ack.message_id == done.message_id
    assert not agent.closed
    assert "cannot write the presence of 1 node(s) now" in caplog.text
    await agent.close()
    await h.finish()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_flood_of_malformed_messages_is_logged_sparingly_then_disconnected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hatchway.server.control")
    h = Harness(tmp_path)
    agent = h.connect()
    garbage = [b"\xff" * 200, control_frame(MessageType.AGENT_HEARTBEAT, b"[]", now=1.0)]
    sent = 0
    while not agent.closed and sent < 20_000:
        await agent.send(garbage[sent % 2])
        sent += 1
    await h.finish()
    assert BAD_MESSAGE_LIMIT < sent <= BAD_MESSAGE_LIMIT + 1 + 64  # 64: the socket's buffer
    assert agent.close_code == CloseCode.POLICY
    assert "malformed control messages" in agent.close_reason
    bad_lines = [r for r in caplog.records if "bad control message" in r.getMessage()]
    assert len(bad_lines) <= LOG_BURST + 1
    assert any("disconnecting it" in r.getMessage() for r in caplog.records)
    assert h.gone == [NODE]


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_few_bad_messages_spread_out_are_tolerated(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    agent = h.connect()
    for _ in range(3 * BAD_MESSAGE_LIMIT):
        await agent.send(b"\x00" * 130)
        await asyncio.sleep(1)  # 10 per 10 s: a broken agent, not a flood
    await agent.send(beat())
    await h.beat_written()
    assert not agent.closed
    await agent.close()
    await h.finish()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_replaced_channel_is_not_a_departure(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first = h.connect(generation=1)
    await first.send(beat())
    await h.beat_written()
    second = h.connect(generation=1)  # the same agent re-dialled
    async with asyncio.timeout(10):
        await h.tasks[0]
    assert first.close_code == CloseCode.REPLACED
    assert h.gone == [] and h.channels.is_connected(NODE)
    await second.close()
    await h.finish()
    assert h.gone == [NODE]


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_newer_agent_supersedes_and_an_older_one_is_refused(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.channels.admit(NODE, 1)
    old = h.connect(generation=1)
    await old.send(beat())
    await h.beat_written()

    await h.channels.admit(NODE, 2)
    new = h.connect(generation=2)
    async with asyncio.timeout(10):
        await h.tasks[0]
    assert old.close_code == CloseCode.SUPERSEDED and h.gone == []

    # The older agent comes back: refused before the upgrade, and after it too.
    with pytest.raises(Conflict):
        await h.channels.admit(NODE, 1)
    late = h.connect(generation=1)
    async with asyncio.timeout(10):
        await h.tasks[-1]
    assert late.close_code == CloseCode.SUPERSEDED
    assert h.channels.is_connected(NODE) and not new.closed
    assert h.store.nodes.generations[NODE] == 2
    await new.close()
    await h.finish()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_the_database_keeps_the_generation_for_other_replicas(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.store.nodes.generations[NODE] = 5  # another replica let generation 5 in
    with pytest.raises(Conflict):
        await h.channels.admit(NODE, 4)
    await h.channels.admit(NODE, 5)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_sessions_start_and_end_over_the_channel(tmp_path: Path) -> None:
    from hatchway.errors import TargetNotConnected
    from hatchway.protocol.controlchannel import EndSession, StartSession
    from hatchway.protocol.payloads import AgentTaskPayload

    h = Harness(tmp_path)
    task = AgentTaskPayload("admin-1", "doc", {"sessionType": "Standard_Stream"}, {})
    with pytest.raises(TargetNotConnected):
        await h.channels.start_session(NODE, task)
    agent = h.connect()
    await asyncio.sleep(0)
    await h.channels.start_session(NODE, task)
    assert decode(await next_message(agent), sender=Sender.SERVER) == StartSession(task)
    await h.channels.end_session(NODE, "admin-1", "bye")
    assert decode(await next_message(agent), sender=Sender.SERVER) == EndSession(
        "admin-1", NODE, "bye"
    )
    await h.channels.drop(NODE, "node deregistered")
    await h.finish()
    assert agent.close_code == CloseCode.DEREGISTERED and h.gone == []


def test_heartbeat_payload_with_bad_fields_is_dropped() -> None:
    payload = dumps({"Hostname": "h", "AgentVersion": "1.0", "IPAddress": "nope"})
    frame = control_frame(MessageType.AGENT_HEARTBEAT, payload, now=1.0)
    with pytest.raises(Exception, match="IPAddress"):
        decode(frame, sender=Sender.AGENT)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_silent_node_is_closed_and_counts_as_gone(tmp_path: Path) -> None:
    """An agent that vanished without a TCP close (power loss) must not look connected."""
    h = Harness(tmp_path)
    agent = h.connect()
    loop = asyncio.get_running_loop()
    for _ in range(3):  # heartbeats keep it open
        await agent.send(beat())
        await asyncio.sleep(10)
    assert not agent.closed
    silent_from = loop.time()
    await h.finish()
    assert agent.close_code == CloseCode.UNRESPONSIVE
    assert loop.time() - silent_from == pytest.approx(11, abs=1.5)  # 21 s after the last beat
    assert h.gone == [NODE] and not h.channels.is_connected(NODE)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_connection_reports_are_handed_on_and_a_flood_is_dropped(tmp_path: Path) -> None:
    from hatchway.protocol.controlchannel import ConnectionRecord, ConnectionReport

    h = Harness(tmp_path)
    got: list[tuple[str, ConnectionReport]] = []
    release = asyncio.Event()

    async def on_connections(node_id: str, report: ConnectionReport) -> None:
        got.append((node_id, report))
        await release.wait()  # a slow database

    h.channels.on_connections = on_connections
    agent = h.connect()
    record = ConnectionRecord.create(
        destination="db:5432", opened=1.0, closed=2.0, bytes_in=1, bytes_out=2
    )
    report = ConnectionReport.create("admin-1", [record])
    for _ in range(20):
        await agent.send(encode(report, now=1.0))
    await agent.send(beat("admin-1"))
    await h.beat_written()  # the channel still reads while reports wait
    assert len(got) == 8  # MAX_PENDING_REPORTS at once; the rest dropped, not queued
    assert got[0] == (NODE, report)
    release.set()
    await agent.close()
    await h.finish()
    assert h.gone == [NODE]


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_channel_waiting_to_be_marked_connected_is_not_silent(tmp_path: Path) -> None:
    """The one watch over every channel skips a channel whose start waits for a slow database
    (a dial storm), however long, and watches it once it reads."""
    h = Harness(tmp_path)
    release = asyncio.Event()
    marked = h.store.nodes.mark_connected

    async def slow(instance_id: str, connected: bool, now: float, **kw: Any) -> None:
        if connected:
            await release.wait()
        await marked(instance_id, connected, now, **kw)

    h.store.nodes.mark_connected = slow  # type: ignore[method-assign]
    early = h.connect()
    await asyncio.sleep(1)
    h.channels._watch_silence()  # as another node's channel would have started it
    await asyncio.sleep(60)
    assert not early.closed
    release.set()
    await asyncio.sleep(0)
    await early.send(beat())
    await h.beat_written()
    await h.finish()  # silent from then on: closed after the liveness window
    assert early.close_code == CloseCode.UNRESPONSIVE
