"""``hatchway exec``'s handler in-process: a real agent ``Endpoint`` runs the far end of a
NonInteractiveCommands session over in-memory sockets; the loop's clock is fast-forwarded."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from hatchway.client.command import TIMED_OUT, CommandHandler
from hatchway.client.session import END_OF_INPUT, ClientSession, StartedSession
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.payloads import decode_flag, encode_exit_code
from tests.client.farend import (
    SESSION,
    URL,
    Agent,
    FakeApi,
    Pipes,
    Server,
    connected,
    drain,
    read_until,
)

NON_INTERACTIVE = "NonInteractiveCommands"


def start(
    pipes: Pipes, server: Server, *, stdout_fd: int | None = None, timeout: float | None = None
) -> tuple[ClientSession, asyncio.Task[int]]:
    handler = CommandHandler(
        stdin_fd=pipes.stdin,
        stdout_fd=pipes.stdout if stdout_fd is None else stdout_fd,
        stderr_fd=pipes.stderr,
        timeout=timeout,
    )
    session = ClientSession(
        StartedSession(SESSION, "token-1", URL),
        handler,
        api=FakeApi(),
        dial=server.dial,
        stderr_fd=pipes.stderr,
    )
    return session, asyncio.get_running_loop().create_task(session.run())


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_stdout_and_stderr_apart_stdin_with_its_end_and_the_exit_code(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    _session, run = start(pipes, server)
    await connected(server, agent)
    await agent.handshake(NON_INTERACTIVE)
    pipes.type(b"line one\n\x03binary\x00")
    pipes.end_input()
    got = b""
    while len(got) < 17:
        frame = await agent.receive()
        assert frame.payload_type == PayloadType.OUTPUT  # no Size frame: no terminal
        got += frame.payload
    assert got == b"line one\n\x03binary\x00"  # forwarded as is: no Ctrl-C mapping here
    end = await agent.receive()
    assert (end.payload_type, decode_flag(end.payload)) == (PayloadType.FLAG, END_OF_INPUT)

    await agent.send(PayloadType.OUTPUT, b"to stdout\n")
    await agent.send(PayloadType.STDERR, b"to stderr\n")
    await agent.send(PayloadType.OUTPUT, b"more stdout")
    assert await read_until(pipes.screen, b"more stdout") == b"to stdout\nmore stdout"
    assert await read_until(pipes.errors, b"to stderr\n") == b"to stderr\n"
    await agent.end_session(exit_code=42)
    assert await asyncio.wait_for(run, 30) == 42
    assert drain(pipes.errors) == b""


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_aws_agent_gets_no_hatchway_flag_at_the_end_of_input(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    session, run = start(pipes, server)
    await connected(server, agent)
    await agent.handshake(NON_INTERACTIVE, offer=None)  # AWS's agent: no extensions
    assert not session.hatchway_agent
    assert session.endpoint.max_payload_size == 1024
    pipes.type(b"x" * 3000)
    pipes.end_input()
    got = b""
    while len(got) < 3000:
        frame = await agent.receive()
        assert frame.payload_type == PayloadType.OUTPUT and len(frame.payload) <= 1024
        got += frame.payload
    await agent.send(PayloadType.EXIT_CODE, encode_exit_code(0))
    await agent.end_session()
    assert await asyncio.wait_for(run, 30) == 0
    assert not agent._received  # nothing after the input: no flag


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_large_binary_output_arrives_intact(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    with tempfile.TemporaryFile() as out:
        _session, run = start(pipes, server, stdout_fd=out.fileno())
        await connected(server, agent)
        await agent.handshake(NON_INTERACTIVE)
        data = os.urandom(6 * 1024 * 1024 + 123)
        for i in range(0, len(data), 1024 * 1024):
            await agent.send(PayloadType.OUTPUT, data[i : i + 1024 * 1024])
            while agent.endpoint.unacked_count > 32:  # read the client's acknowledgements
                agent.endpoint.receive(await agent.next_message(), now=agent.now())
        await agent.end_session(exit_code=0)
        assert await asyncio.wait_for(run, 30) == 0
        out.seek(0)
        assert out.read() == data


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_timeout_terminates_the_session_and_exits_124(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    _session, run = start(pipes, server, timeout=30)
    await connected(server, agent)
    await agent.handshake(NON_INTERACTIVE)
    await agent.send(PayloadType.OUTPUT, b"working...\n")
    loop = asyncio.get_running_loop()
    began = loop.time()
    flag = await agent.receive()  # the command never ends; the time-out does
    assert loop.time() - began == pytest.approx(30, abs=1)
    assert (flag.payload_type, decode_flag(flag.payload)) == (
        PayloadType.FLAG,
        FlagValue.TERMINATE_SESSION,
    )
    await agent.end_session(output="terminated")  # the agent obeys: no exit code
    assert await asyncio.wait_for(run, 30) == TIMED_OUT
    assert b"working...\n" in drain(pipes.screen)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_timeout_ends_even_if_the_agent_never_answers(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    _session, run = start(pipes, server, timeout=5)
    await connected(server, agent)
    await agent.handshake(NON_INTERACTIVE)
    assert await asyncio.wait_for(run, 60) == TIMED_OUT
