"""``hatchway port-forward``'s handler: real TCP connections to its local listener, and a
scripted agent at the far end speaking smux v1 (``Mux(client=False)``) over a real agent
``Endpoint``. Real time (the sockets are real), bounded by time-outs."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.portforward import PortForwardHandler
from hatchway.client.session import ClientSession, StartedSession
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.payloads import decode_flag, encode_flag
from hatchway.protocol.smux import Mux, StreamData, StreamFinished, StreamOpened
from tests.client.farend import SESSION, URL, Agent, FakeApi, Pipes, Server, connected, read_until

FORWARDING = {"portNumber": "5432", "type": "LocalPortForwarding", "localPortNumber": "0"}


class MuxAgent:
    """The agent's smux server over :class:`Agent`: echoes each stream upper-cased, and
    finishes a stream when the client has (after echoing everything)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.mux = Mux(client=False)
        self.opened: list[int] = []
        self.finished: list[int] = []
        self.flags: list[int] = []
        self.refuse_next = False

    async def run(self) -> None:
        while True:
            frame = await self.agent.receive()
            if frame.payload_type == PayloadType.FLAG:
                self.flags.append(decode_flag(frame.payload))
                continue
            assert frame.payload_type == PayloadType.OUTPUT
            for event in self.mux.receive(frame.payload):
                if isinstance(event, StreamOpened):
                    self.opened.append(event.stream_id)
                    if self.refuse_next:  # the dial fails: flag, then FIN
                        self.refuse_next = False
                        await self.agent.send(
                            PayloadType.FLAG, encode_flag(FlagValue.CONNECT_TO_PORT_ERROR)
                        )
                        self.mux.finish(event.stream_id)
                elif isinstance(event, StreamData):
                    self.mux.send(event.stream_id, event.data.upper())
                elif isinstance(event, StreamFinished):
                    self.finished.append(event.stream_id)
                    if self.mux.can_send(event.stream_id):
                        self.mux.send(event.stream_id, b"[bye]")
                        self.mux.finish(event.stream_id)
            out = self.mux.data_to_send()
            if out:
                await self.agent.send(PayloadType.OUTPUT, out)


def forwarder(pipes: Pipes) -> PortForwardHandler:
    return PortForwardHandler(destination="db:5432", stdout_fd=pipes.stdout, stderr_fd=pipes.stderr)


async def start(
    pipes: Pipes, handler: PortForwardHandler
) -> tuple[ClientSession, asyncio.Task[int], MuxAgent, int]:
    server, agent = Server(), Agent()
    session = ClientSession(
        StartedSession(SESSION, "token-1", URL),
        handler,
        api=FakeApi(),
        dial=server.dial,
        stderr_fd=pipes.stderr,
    )
    run = asyncio.get_running_loop().create_task(session.run())
    await connected(server, agent)
    await agent.handshake("Port", FORWARDING)
    line = await read_until(pipes.screen, b"\n")
    match = re.fullmatch(rb"Listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, line
    return session, run, MuxAgent(agent), int(match.group(1))


@pytest.mark.asyncio
async def test_concurrent_connections_each_half_closed_both_ways(pipes: Pipes) -> None:
    session, run, far, port = await start(pipes, forwarder(pipes))
    serving = asyncio.get_running_loop().create_task(far.run())

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = f"hello {i} ".encode() * (1000 + i * 5000)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()  # our direction ends; the answer still comes
        got = await reader.read()  # until the agent's FIN
        writer.close()
        await writer.wait_closed()
        assert got == payload.upper() + b"[bye]"
        return got

    async with asyncio.timeout(30):
        await asyncio.gather(*(one(i) for i in range(8)))
        assert sorted(far.opened) == list(range(3, 3 + 2 * 8, 2))  # odd ids from 3
        assert sorted(far.finished) == sorted(far.opened)
        while session.handler._connections:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        await far.agent.end_session()
        assert await run == ExitStatus.OK
    serving.cancel()


@pytest.mark.asyncio
async def test_a_failed_dial_closes_that_connection_and_names_the_destination(
    pipes: Pipes,
) -> None:
    _session, run, far, port = await start(pipes, forwarder(pipes))
    serving = asyncio.get_running_loop().create_task(far.run())
    async with asyncio.timeout(30):
        far.refuse_next = True
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(ConnectionResetError):
            await reader.read()
            await reader.read()  # an EOF first is also allowed, then the reset
            raise ConnectionResetError
        writer.close()
        line = await read_until(pipes.errors, b"\n")
        assert line == b"hatchway: the node could not connect to db:5432\n"
        # The session goes on: the next connection works.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"PING"
        writer.close()
        await far.agent.end_session()
        assert await run == ExitStatus.OK
    serving.cancel()


@pytest.mark.asyncio
async def test_a_local_port_in_use_is_one_line_and_terminates_the_session(pipes: Pipes) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        server, agent = Server(), Agent()
        session = ClientSession(
            StartedSession(SESSION, "token-1", URL),
            PortForwardHandler(local_port=port, stdout_fd=pipes.stdout, stderr_fd=pipes.stderr),
            api=FakeApi(),
            dial=server.dial,
            stderr_fd=pipes.stderr,
        )
        run = asyncio.get_running_loop().create_task(session.run())
        async with asyncio.timeout(30):
            await connected(server, agent)
            await agent.handshake("Port", FORWARDING)
            line = await read_until(pipes.errors, b"\n")
            assert line.startswith(f"hatchway: cannot listen on 127.0.0.1:{port}: ".encode())
            assert b"in use" in line
            flag = await agent.receive()
            assert (flag.payload_type, decode_flag(flag.payload)) == (
                PayloadType.FLAG,
                FlagValue.TERMINATE_SESSION,
            )
            await agent.end_session(output="terminated")
            assert await run == ExitStatus.ERROR
    finally:
        taken.close()
