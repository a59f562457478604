"""``ssh-proxy``'s stdio handler and ``start-session --document``'s dispatch, in-process with
a real agent ``Endpoint`` at the far end; ``--parameters`` parsing table-driven."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.client.command import CommandHandler
from hatchway.client.documents import DocumentHandler, parse_parameters
from hatchway.client.exitstatus import ExitStatus
from hatchway.client.portforward import PortForwardHandler
from hatchway.client.session import END_OF_INPUT, ClientSession, Handler, StartedSession
from hatchway.client.shell import ShellHandler
from hatchway.client.stdio import StdioHandler
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.payloads import SizePayload, decode_flag
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


def start(
    pipes: Pipes, server: Server, handler: Handler
) -> tuple[ClientSession, asyncio.Task[int]]:
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
@pytest.mark.parametrize("hatchway_agent", [True, False])
async def test_stdio_relays_raw_bytes_and_ends_its_input(
    pipes: Pipes, hatchway_agent: bool
) -> None:
    server, agent = Server(), Agent()
    handler = StdioHandler(stdin_fd=pipes.stdin, stdout_fd=pipes.stdout)
    _session, run = start(pipes, server, handler)
    await connected(server, agent)
    ssh = {"portNumber": "22"}
    await agent.handshake("Port", ssh, **({} if hatchway_agent else {"offer": None}))
    hello = b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\xff\n"
    pipes.type(hello)
    got = await agent.receive()
    assert (got.payload_type, got.payload) == (PayloadType.OUTPUT, hello)  # no LF→CR, no size
    await agent.send(PayloadType.OUTPUT, b"SSH-2.0-server\r\n\xfe")
    assert await read_until(pipes.screen, b"\xfe") == b"SSH-2.0-server\r\n\xfe"
    pipes.end_input()
    end = await agent.receive()
    assert end.payload_type == PayloadType.FLAG
    expected = END_OF_INPUT if hatchway_agent else FlagValue.TERMINATE_SESSION
    assert decode_flag(end.payload) == expected
    await agent.end_session()
    assert await asyncio.wait_for(run, 30) == ExitStatus.OK
    assert drain(pipes.errors) == b""


@pytest.mark.asyncio
@pytest.mark.looptime
@pytest.mark.parametrize(
    ("session_type", "properties", "chosen"),
    [
        ("Standard_Stream", None, ShellHandler),
        ("InteractiveCommands", {"linux": {"commands": "top"}}, ShellHandler),
        ("NonInteractiveCommands", {"linux": {"commands": "ls"}}, CommandHandler),
        ("Port", {"portNumber": "22"}, StdioHandler),
        ("Port", {"portNumber": "80", "type": "LocalPortForwarding"}, PortForwardHandler),
    ],
)
async def test_the_document_s_session_type_picks_the_handler(
    pipes: Pipes, session_type: str, properties: object, chosen: type
) -> None:
    server, agent = Server(), Agent()
    handler = DocumentHandler(stdin_fd=pipes.stdin, stdout_fd=pipes.stdout, stderr_fd=pipes.stderr)
    _session, run = start(pipes, server, handler)
    await connected(server, agent)
    await agent.handshake(session_type, properties)
    assert isinstance(handler.chosen, chosen)
    if chosen is ShellHandler:  # the terminal starts: its size first
        size = await agent.receive()
        assert SizePayload.from_json(size.payload) == SizePayload(cols=100, rows=30)
    if chosen is PortForwardHandler:
        assert (await read_until(pipes.screen, b"\n")).startswith(b"Listening on 127.0.0.1:")
    await agent.end_session(exit_code=None if chosen in (StdioHandler, PortForwardHandler) else 5)
    status = await asyncio.wait_for(run, 30)
    assert status == (0 if chosen in (StdioHandler, PortForwardHandler) else 5)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_without_a_handshake_the_document_handler_runs_a_shell(pipes: Pipes) -> None:
    server, agent = Server(), Agent()
    handler = DocumentHandler(stdin_fd=pipes.stdin, stdout_fd=pipes.stdout, stderr_fd=pipes.stderr)
    _session, run = start(pipes, server, handler)
    await connected(server, agent)
    await agent.send(PayloadType.OUTPUT, b"$ ")  # AWS's agent: a shell without a handshake
    assert await read_until(pipes.screen, b"$ ") == b"$ "
    assert isinstance(handler.chosen, ShellHandler)
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("portNumber=80", {"portNumber": ["80"]}),
        ("portNumber=80,localPortNumber=0", {"portNumber": ["80"], "localPortNumber": ["0"]}),
        ("command=ls -l", {"command": ["ls -l"]}),
        ("a=1,a=2", {"a": ["1", "2"]}),
        ("k=", {"k": [""]}),
        ('{"command":["echo a,b"]}', {"command": ["echo a,b"]}),
        ('{"portNumber":"22"}', {"portNumber": ["22"]}),
    ],
)
def test_parameters(text: str, parsed: dict[str, list[str]]) -> None:
    assert parse_parameters(text) == parsed


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("portNumber", "is not key=value"),
        ("=80", "is not key=value"),
        ('{"a":', "not valid JSON"),
        ('{"a":[1]}', "must be a string or a list of strings"),
        ("[1]", "is not key=value"),
    ],
)
def test_bad_parameters(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_parameters(text)
