"""How long the agent waits at a session's end for the client's last acknowledgements."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.agent.shell_session import STALLED_WAIT, ShellSession
from hatchway.protocol.control import ack_for
from hatchway.protocol.frames import PayloadType, decode_frame
from hatchway.protocol.payloads import AgentTaskPayload
from tests.fakes import FakeClock

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]


async def _complete(session_id: str, status: str, output: str) -> None:
    pass


def _session() -> ShellSession:
    task = AgentTaskPayload("alice-0123456789abcdef0", "SSM-SessionManagerRunShell", {}, {})
    loop = asyncio.get_running_loop()
    return ShellSession(
        task,
        None,  # type: ignore[arg-type]  # no data channel: the endpoint is driven by hand
        None,  # type: ignore[arg-type]
        _complete,
        clock=FakeClock(),
        monotonic=loop.time,
    )


async def _last_frame_dropped_as_a_duplicate(session: ShellSession) -> None:
    """Two frames sent, the connection replaced (both sent again), and the peer acknowledges
    only the first sending of the second: the other one it already had (AWS's plugin drops a
    duplicate without an ack)."""
    loop = asyncio.get_running_loop()
    endpoint = session.endpoint
    endpoint.send(PayloadType.OUTPUT, b"a", now=loop.time())
    endpoint.send(PayloadType.OUTPUT, b"b", now=loop.time())
    first = [decode_frame(wire) for wire in endpoint.data_to_send()]
    endpoint.retransmit_all(loop.time())  # a reconnect
    endpoint.data_to_send()
    session._receive(ack_for(first[1], now=1.0))


async def test_exit_waits_a_few_seconds_at_most_for_a_peer_that_acks_later_frames() -> None:
    session = _session()
    session.endpoint.cumulative_acks = True  # the peer is AWS's plugin
    await _last_frame_dropped_as_a_duplicate(session)
    assert not session.endpoint.all_acked and session.endpoint.stalled_on_duplicates
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(60):
        await session._wait_acked()
    assert loop.time() - start <= STALLED_WAIT * 1.5


async def test_exit_waits_for_a_hatchway_client_that_has_not_acknowledged_yet() -> None:
    session = _session()  # our own client re-acknowledges duplicates: its acks will come
    await _last_frame_dropped_as_a_duplicate(session)
    assert not session.endpoint.stalled_on_duplicates
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(60):
            await session._wait_acked()
