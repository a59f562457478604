"""Data-channel ends piped between two replicas (``server.cluster.pipes``), in process: an
in-memory NATS (``tests.fakes.MemoryNats``) between the edge's and the relay's buses, and an
in-memory WebSocket for the end that reached the edge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hatchway.errors import ChannelClosed, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.server.cluster.envelope import PipeFrame, pack_pipe, unpack_pipe
from hatchway.server.cluster.pipes import (
    ABNORMAL,
    MAX_QUEUED,
    EdgePipe,
    PipeSender,
    RemoteEnd,
    close_payload,
)
from tests.fakes import MemoryBus, MemoryNats, MemorySocket, socket_pair

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

RELAY, EDGE, PIPE = "relay0000", "edge00000", "0123456789abcdef01234567"
MIB = 1024 * 1024


@dataclass
class Pipe:
    """One piped end: ``client`` is the end's own side of its WebSocket, ``server`` the
    edge's; ``remote`` is that end as the relay's gateway sees it."""

    nats: MemoryNats
    relay_bus: MemoryBus
    edge_bus: MemoryBus
    edge: EdgePipe
    remote: RemoteEnd
    client: MemorySocket
    server: MemorySocket
    running: asyncio.Task[None] | None = None

    @property
    def to_relay(self) -> str:
        return self.edge_bus.subject("r", RELAY, "p", PIPE)

    @property
    def to_edge(self) -> str:
        return self.relay_bus.subject("r", EDGE, "p", PIPE)

    def run(self) -> None:
        self.running = asyncio.get_running_loop().create_task(self.edge.run(self.server))

    async def finished(self) -> None:
        assert self.running is not None
        async with asyncio.timeout(10):
            await self.running


@contextlib.asynccontextmanager
async def piped(first_text: str | None = None, *, run: bool = True) -> AsyncIterator[Pipe]:
    """An edge and a relay joined by a pipe, routed as ``Cluster._pipe_message`` does."""
    nats = MemoryNats()
    relay_bus, edge_bus = MemoryBus(nats), MemoryBus(nats)
    edge = EdgePipe(PipeSender(edge_bus, edge_bus.subject("r", RELAY, "p", PIPE)), RELAY)
    remote = RemoteEnd(
        PipeSender(relay_bus, relay_bus.subject("r", EDGE, "p", PIPE)),
        f"client:s@{EDGE}", EDGE, first_text=first_text,
    )  # fmt: skip

    async def at_relay(subject: str, body: bytes, _reply: str | None) -> None:
        assert subject.rsplit(".", 1)[-1] == PIPE
        remote.incoming(*unpack_pipe(body))

    async def at_edge(subject: str, body: bytes, _reply: str | None) -> None:
        assert subject.rsplit(".", 1)[-1] == PIPE
        edge.incoming(*unpack_pipe(body))

    await relay_bus.subscribe(relay_bus.subject("r", RELAY, "p", "*"), at_relay)
    await edge_bus.subscribe(edge_bus.subject("r", EDGE, "p", "*"), at_edge)
    client, server = socket_pair("client", "edge")
    pipe = Pipe(nats, relay_bus, edge_bus, edge, remote, client, server)
    if run:
        pipe.run()
    try:
        yield pipe
    finally:
        if pipe.running is not None and not pipe.running.done():
            await client.close()
            await pipe.finished()
        await relay_bus.close()
        await edge_bus.close()
        assert not relay_bus.failures and not edge_bus.failures


async def received(sock: MemorySocket | RemoteEnd, count: int | None = None) -> list[bytes]:
    """Messages ``sock`` receives: ``count`` of them, or all until it closes."""
    got: list[bytes] = []
    async with asyncio.timeout(10):
        async for data in sock:
            got.append(data)
            if count is not None and len(got) == count:
                break
    return got


async def test_data_flows_both_ways_in_order() -> None:
    async with piped() as p:
        up = [b"up %d" % i for i in range(200)]
        down = [b"down %d" % i for i in range(200)]
        for data in up:
            assert await p.client.send(data)
        for data in down:
            assert await p.remote.send(data)
        assert await received(p.remote, len(up)) == up
        assert await received(p.client, len(down)) == down


async def test_the_first_text_message_comes_first() -> None:
    async with piped(first_text='{"TokenValue": "t"}') as p:
        await p.client.send(b"frame")
        assert await p.remote.receive_text() == '{"TokenValue": "t"}'
        assert await received(p.remote, 1) == [b"frame"]


async def test_receive_text_refuses_binary_and_a_closed_end() -> None:
    async with piped() as p:
        await p.client.send(b"binary first")
        with pytest.raises(RemoteProtocolError):
            await p.remote.receive_text()
    async with piped() as p:
        await p.client.close()
        with pytest.raises(ChannelClosed):
            await p.remote.receive_text()


async def test_a_local_close_ends_the_remote_end_with_its_code() -> None:
    async with piped() as p:
        await p.client.send(b"last words")
        await p.client.close(CloseCode.ENDED, "bye")
        assert await received(p.remote) == [b"last words"]
        assert p.remote.closed
        assert (p.remote.close_code, p.remote.close_reason) == (CloseCode.ENDED, "bye")
        await p.finished()
        assert not await p.remote.send(b"too late")


async def test_closing_the_remote_end_closes_the_local_socket() -> None:
    async with piped() as p:
        await p.remote.send(b"last words")
        await p.remote.close(CloseCode.ENDED, "the session ended")
        assert await received(p.client) == [b"last words"]
        assert (p.client.close_code, p.client.close_reason) == (
            CloseCode.ENDED,
            "the session ended",
        )
        await p.finished()
        assert not await p.remote.send(b"too late")
        await p.remote.close(CloseCode.NORMAL)  # idempotent: nothing more is sent
        assert p.remote.close_code == CloseCode.ENDED


async def test_what_the_relay_sends_before_the_edge_runs_waits_for_it() -> None:
    async with piped(run=False) as p:
        await p.remote.send(b"pause_publication")
        await asyncio.sleep(0)  # delivered to the edge, which is not running yet
        p.run()
        assert await received(p.client, 1) == [b"pause_publication"]


async def test_a_gone_relay_sends_the_end_elsewhere() -> None:
    async with piped() as p:
        await p.remote.send(b"before")
        assert await received(p.client, 1) == [b"before"]
        p.edge.relay_gone()
        assert await received(p.client) == []
        assert p.client.close_code == CloseCode.GOING_AWAY
        assert "reconnect" in p.client.close_reason
        await p.finished()


async def test_a_relay_gone_before_the_edge_runs_closes_at_once() -> None:
    async with piped(run=False) as p:
        p.edge.relay_gone()
        p.run()
        await p.finished()
        assert p.client.close_code == CloseCode.GOING_AWAY


async def test_a_gone_edge_ends_the_remote_end() -> None:
    async with piped() as p:
        await p.client.send(b"before")
        assert await received(p.remote, 1) == [b"before"]
        p.remote.edge_gone()
        assert await received(p.remote) == []
        assert p.remote.closed and p.remote.close_code == ABNORMAL
        assert not await p.remote.send(b"nobody there")
        p.remote.edge_gone()  # once only
        assert p.remote.close_code == ABNORMAL


async def test_losing_nats_sends_the_end_elsewhere() -> None:
    async with piped() as p:
        p.edge_bus.disconnect()
        await p.client.send(b"cannot go anywhere")
        await p.finished()
        assert p.client.close_code == CloseCode.GOING_AWAY
        assert "reconnect" in p.client.close_reason


async def test_a_relay_without_nats_cannot_send() -> None:
    async with piped() as p:
        p.relay_bus.disconnect()
        assert not await p.remote.send(b"x")
        await p.remote.close(CloseCode.ENDED)  # no error: the edge hears of it otherwise
        assert p.remote.closed


async def test_replayed_and_old_sequence_numbers_are_dropped() -> None:
    async with piped() as p:
        for i in range(3):
            await p.client.send(b"up %d" % i)
            await p.remote.send(b"down %d" % i)
        assert await received(p.remote, 3) == [b"up 0", b"up 1", b"up 2"]
        assert await received(p.client, 3) == [b"down 0", b"down 1", b"down 2"]
        # Somebody with the key replays what was sent already (a replica's NATS traffic
        # recorded): every sequence number at or below the last is dropped, both ways.
        sealed_up = [data for subject, data in p.nats.published if subject == p.to_relay]
        sealed_down = [data for subject, data in p.nats.published if subject == p.to_edge]
        for data in sealed_up:
            p.nats.inject(p.to_relay, data)
        for data in sealed_down:
            p.nats.inject(p.to_edge, data)
        await p.edge_bus.publish(p.to_relay, pack_pipe(2, PipeFrame.DATA, b"old"))
        await p.relay_bus.publish(p.to_edge, pack_pipe(1, PipeFrame.CLOSE, close_payload(1000, "")))
        await p.client.send(b"up 3")
        await p.remote.send(b"down 3")
        assert await received(p.remote, 1) == [b"up 3"]
        assert await received(p.client, 1) == [b"down 3"]
        # a jump forward is fine (messages lost on the way are resent end to end) ...
        await p.edge_bus.publish(p.to_relay, pack_pipe(100, PipeFrame.DATA, b"up 100"))
        assert await received(p.remote, 1) == [b"up 100"]
        # ... but what comes after it must be numbered after it
        await p.client.send(b"up 5")
        await p.edge_bus.publish(p.to_relay, pack_pipe(101, PipeFrame.DATA, b"up 101"))
        assert await received(p.remote, 1) == [b"up 101"]


async def test_messages_sealed_under_another_key_are_dropped() -> None:
    async with piped() as p:
        forger = MemoryBus(p.nats, key=b"x" * 32)
        await forger.publish(p.to_relay, pack_pipe(1, PipeFrame.DATA, b"forged"))
        await forger.publish(p.to_edge, pack_pipe(1, PipeFrame.CLOSE, close_payload(1000, "")))
        # and a genuine message moved from another subject
        await p.edge_bus.publish("hatchway.elsewhere", pack_pipe(1, PipeFrame.DATA, b"moved"))
        p.nats.inject(p.to_relay, p.nats.published[-1][1])
        await p.client.send(b"genuine")
        await p.remote.send(b"genuine too")
        assert await received(p.remote, 1) == [b"genuine"]
        assert await received(p.client, 1) == [b"genuine too"]
        assert len(p.relay_bus.dropped) == 2 and len(p.edge_bus.dropped) == 1
        await forger.close()


async def test_a_malformed_close_still_closes() -> None:
    async with piped() as p:
        await p.edge_bus.publish(p.to_relay, pack_pipe(1, PipeFrame.CLOSE, b"not json"))
        assert await received(p.remote) == []
        assert p.remote.close_code == ABNORMAL
    async with piped() as p:
        await p.relay_bus.publish(p.to_edge, pack_pipe(1, PipeFrame.CLOSE, b"{}"))
        await p.finished()
        assert p.client.close_code == CloseCode.GOING_AWAY


async def test_the_relay_side_drops_beyond_its_byte_bound_and_never_blocks() -> None:
    remote = RemoteEnd(PipeSender(MemoryBus(MemoryNats()), "unused"), "agent:s@e", "e")
    chunk = b"x" * MIB
    count = MAX_QUEUED // MIB
    for seq in range(1, count + 3):
        remote.incoming(seq, PipeFrame.DATA, chunk)  # synchronous: cannot block
    remote.incoming(count + 3, PipeFrame.CLOSE, close_payload(CloseCode.NORMAL, ""))
    assert await received(remote) == [chunk] * count
    assert remote.close_code == CloseCode.NORMAL


async def test_the_relay_side_takes_more_once_it_is_read() -> None:
    remote = RemoteEnd(PipeSender(MemoryBus(MemoryNats()), "unused"), "agent:s@e", "e")
    chunk = b"x" * MIB
    count = MAX_QUEUED // MIB
    for seq in range(1, count + 2):
        remote.incoming(seq, PipeFrame.DATA, chunk)
    assert len(await received(remote, 1)) == 1  # one read: room for one more
    remote.incoming(count + 2, PipeFrame.DATA, b"small")
    remote.incoming(count + 3, PipeFrame.CLOSE, close_payload(CloseCode.NORMAL, ""))
    rest = await received(remote)
    assert len(rest) == count and rest[-1] == b"small"


async def test_the_edge_side_drops_beyond_its_byte_bound_and_never_blocks() -> None:
    async with piped(run=False) as p:
        chunk = b"y" * MIB
        count = MAX_QUEUED // MIB
        for seq in range(1, count + 3):
            p.edge.incoming(seq, PipeFrame.DATA, chunk)  # synchronous: cannot block
        p.edge.relay_gone()  # a close is never dropped
        p.run()
        assert await received(p.client) == [chunk] * count
        assert p.client.close_code == CloseCode.GOING_AWAY
        await p.finished()
