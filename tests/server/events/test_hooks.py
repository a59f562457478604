"""The events the services hand to the store with their changes (the hook points): sessions
over the gateway harness, nodes over the control-channel harness, in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.protocol.controlchannel import TaskComplete, TaskStatus
from hatchway.protocol.frames import MessageType
from hatchway.store.events import Event
from hatchway.store.records import SessionStatus
from tests.server.test_control import Harness as ControlHarness
from tests.server.test_control import beat
from tests.server.test_gateway import (
    ALICE,
    NODE,
    Harness,
    input_frame,
    output_frame,
    until,
)

SID = "alice-0123456789abcdef0"


def types(events: list[Event]) -> list[str]:
    return [e.type.value for e in events]


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_terminate_reports_who_and_the_bytes_relayed_so_far() -> None:
    async with Harness() as h:
        client, agent = await h.joined()
        assert await client.peer.send(input_frame(0, b"hello"))
        assert await agent.peer.send(output_frame(0, b"x" * 40))
        await agent.frame_of(MessageType.INPUT_STREAM_DATA)
        await client.frame_of(MessageType.OUTPUT_STREAM_DATA)
        h.clock.advance(12.5)
        await h.service.terminate(ALICE, {"SessionId": SID})
        terminated, ended = h.store.sessions.events
        assert types(h.store.sessions.events) == ["session.terminated", "session.ended"]
        assert terminated.detail == {
            "sessionId": SID,
            "nodeId": NODE,
            "principal": "arn:aws:iam::123456789012:user/alice",
            "terminatedBy": ALICE.arn,
            "reason": "terminated by alice",
        }
        d = ended.detail
        assert (d["status"], d["exitCode"], d["durationSeconds"]) == ("Terminated", None, 12.5)
        # Counted by the gateway and not yet written to the row: still in the event.
        assert (d["bytesIn"], d["bytesOut"]) == (5, 40)
        assert ended.time == terminated.time == h.clock()
        # A second terminate changes nothing: no more events.
        await h.service.terminate(ALICE, {"SessionId": SID})
        assert len(h.store.sessions.events) == 2


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_session_that_ends_by_itself_is_ended_not_terminated() -> None:
    async with Harness() as h:
        await h.joined()
        done = TaskComplete(SID, TaskStatus.SUCCESS, NODE, output="7")
        await h.service.task_complete(NODE, done)
        [ended] = h.store.sessions.events
        assert ended.type == "session.ended"
        assert ended.detail["status"] == "Terminated" and ended.detail["exitCode"] == 7
        assert ended.detail["document"] == "SSM-SessionManagerRunShell"


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_timers_terminate_as_the_server_and_a_failure_is_only_an_end() -> None:
    async with Harness() as h:
        await h.new_session(SID)
        await h.agent(SID)  # the client never comes: the server ends the session
        await until(lambda: h.status() == SessionStatus.TERMINATED, timeout=200)
        assert types(h.store.sessions.events) == ["session.terminated", "session.ended"]
        assert h.store.sessions.events[0].detail["terminatedBy"] == "hatchway"

        h.store.sessions.events.clear()
        other = "alice-11111111111111111"
        await h.new_session(other)  # the agent never comes: Failed, not a termination
        await until(lambda: h.status(other) == SessionStatus.FAILED, timeout=200)
        [ended] = h.store.sessions.events
        assert ended.type == "session.ended" and ended.detail["status"] == "Failed"


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_node_is_online_once_per_channel_and_offline_when_it_closes(
    tmp_path: Path,
) -> None:
    h = ControlHarness(tmp_path)
    first = h.connect()
    await first.send(beat())
    await h.beat_written()
    second = h.connect()  # replaces the first: not a new online, not an offline
    await second.send(beat())
    await h.beat_written()
    await first.close()
    await second.close()
    await h.finish()
    events = h.store.nodes.events
    assert types(events) == ["node.online", "node.offline"]
    assert events[0].detail == {"nodeId": NODE}
    assert events[1].detail["nodeId"] == NODE and events[1].detail["reason"]
