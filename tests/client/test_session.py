"""``ClientSession`` in-process: in-memory sockets from an injected dialer, a real agent
``Endpoint`` at the far end, pipes (or a pseudo-terminal) as the terminal, and the loop's clock
fast-forwarded by looptime, so reconnect back-off and the 120 s give-up take no real time."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import struct
import termios
from collections import deque

import pytest

from hatchway.client.session import RECONNECT_FOR, ClientSession, StartedSession
from hatchway.client.shell import ShellHandler
from hatchway.errors import AuthError, ChannelClosed, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.frames import MessageType, PayloadType
from hatchway.protocol.handshake import peer_is_hatchway
from hatchway.protocol.payloads import NoticePayload, SizePayload
from hatchway.transport.apiclient import ApiError
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


def start(pipes: Pipes, server: Server, api: FakeApi) -> tuple[ClientSession, asyncio.Task[int]]:
    session = ClientSession(
        StartedSession(SESSION, "token-1", URL),
        ShellHandler(stdin_fd=pipes.stdin, stdout_fd=pipes.stdout, stderr_fd=pipes.stderr),
        api=api,
        dial=server.dial,
        stderr_fd=pipes.stderr,
    )
    return session, asyncio.get_running_loop().create_task(session.run())


# ---- tests ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_handshake_size_before_input_then_a_shell_and_its_exit_status(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    session, run = start(pipes, server, api)
    pipes.type(b"typed ahead\r")  # before the session opened: kept, sent after the size
    opened = await connected(server, agent)
    assert opened.token_value == "token-1"
    assert opened.client_version and opened.client_id

    response = await agent.handshake()
    assert peer_is_hatchway(response)
    size = await agent.receive()
    assert size.payload_type == PayloadType.SIZE
    assert SizePayload.from_json(size.payload) == SizePayload(cols=100, rows=30)
    typed = await agent.receive()
    assert (typed.payload_type, typed.payload) == (PayloadType.OUTPUT, b"typed ahead\r")

    pipes.type(b"ls\r")
    assert (await agent.receive()).payload == b"ls\r"
    await agent.send(PayloadType.OUTPUT, b"file-a  file-b\r\n")
    await agent.send(PayloadType.STDERR, b"a warning\n")
    assert await read_until(pipes.screen, b"file-b\r\n") == b"file-a  file-b\r\n"
    assert await read_until(pipes.errors, b"a warning\n") == b"a warning\n"

    await agent.end_session(exit_code=3)
    assert await asyncio.wait_for(run, 30) == 3
    assert session.exit_code == 3
    assert drain(pipes.errors) == b""  # nothing more to say


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_end_of_piped_input_sends_one_eot(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    assert (await agent.receive()).payload_type == PayloadType.SIZE
    pipes.type(b"echo hi\n")
    pipes.end_input()
    assert (await agent.receive()).payload == b"echo hi\n"
    assert (await agent.receive()).payload == b"\x04"
    await agent.send(PayloadType.OUTPUT, b"hi\r\n")
    await read_until(pipes.screen, b"hi\r\n")
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0
    assert len(agent._received) == 0  # no second EOT


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_channel_closed_without_an_exit_code_is_255_with_the_reason(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    await agent.end_session(output="terminated by \x1b[2Jadmin")
    assert await asyncio.wait_for(run, 30) == 255
    assert drain(pipes.errors) == (
        f"\r\nSession {SESSION} ended: terminated by \\x1b[2Jadmin\r\n".encode()
    )


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_closed_with_ended_is_255_and_does_not_reconnect(pipes: Pipes) -> None:
    server, api = Server(), FakeApi()
    _session, run = start(pipes, server, api)
    end, _ = await server.accept()
    await end.close(CloseCode.ENDED, "session has ended")
    assert await asyncio.wait_for(run, 30) == 255
    assert drain(pipes.errors) == f"\r\nSession {SESSION} ended: session has ended\r\n".encode()
    assert (server.dialled, api.calls) == (1, 0)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_notice_from_the_gateway_is_one_line_on_stderr(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    message = "the node went away; waiting up to 120 s for it to come back"
    notice = NoticePayload(kind="NodeAway", message=message, grace=120)
    await agent.control(MessageType.HATCHWAY_NOTICE, notice.to_json())
    line = await read_until(pipes.errors, b"back\r\n")
    assert line == f"\r\nhatchway: {message}\r\n".encode()
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_after_a_drop_it_resumes_resends_what_was_lost_and_doubles_nothing(
    pipes: Pipes,
) -> None:
    server, api, agent = Server(), FakeApi(deque(["token-2"])), Agent()
    session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    assert (await agent.receive()).payload_type == PayloadType.SIZE

    pipes.type(b"one")
    assert (await agent.receive()).payload == b"one"  # delivered and acknowledged
    await agent.send(PayloadType.OUTPUT, b"out-1 ")
    await read_until(pipes.screen, b"out-1 ")
    pipes.type(b"two")
    await agent.next_message()  # "two" is lost with the connection: never reaches the agent
    agent.endpoint.send(PayloadType.OUTPUT, b"out-2", now=agent.now())  # lost as well
    agent.endpoint.data_to_send()
    old = agent.end
    assert old is not None
    old.abort()  # the connection drops (1006)

    opened = await connected(server, agent)
    assert opened.token_value == "token-2"  # from ResumeSession
    assert api.calls == 1
    # The gateway tells both ends the path is back; each resends what is unacknowledged.
    agent.endpoint.retransmit_all(agent.now())
    await agent.flush()
    await agent.control(MessageType.START_PUBLICATION, b"{}")
    again = await agent.receive()
    assert (again.payload_type, again.payload) == (PayloadType.OUTPUT, b"two")
    assert await read_until(pipes.screen, b"out-2") == b"out-2"

    pipes.type(b"three")
    assert (await agent.receive()).payload == b"three"  # and "two" did not come twice
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0
    assert drain(pipes.screen) == b""
    assert session.endpoint.send_window() > 0


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_long_resend_keeps_reading_what_the_agent_sends_meanwhile(pipes: Pipes) -> None:
    """After a re-dial the client resends ~100 frames while the agent answers each one (an
    ack and some output). With small windows both ways, a client that finished writing
    before it read again would wait on the agent while the agent waits on it, until the
    send time-out dropped the connection."""
    tokens: deque[str | Exception] = deque(f"token-{i}" for i in range(2, 100))
    server, api, agent = Server(capacity=4), FakeApi(tokens), Agent()
    session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.send(PayloadType.OUTPUT, b"$ ")  # no handshake: AWS's 1 KiB payloads
    await read_until(pipes.screen, b"$ ")
    assert (await agent.receive()).payload_type == PayloadType.SIZE

    server.unreachable = True
    old = agent.end
    assert old is not None
    old.abort()
    typed = bytes(range(256)) * 400  # 100 KiB: ~100 frames wait, unacknowledged
    for i in range(0, len(typed), 16384):
        pipes.type(typed[i : i + 16384])
        await asyncio.sleep(0.01)
    async with asyncio.timeout(30):
        while session.endpoint.unacked_count < len(typed) // 1024:
            await asyncio.sleep(0.01)
    server.unreachable = False

    await connected(server, agent)
    got = b""
    while len(got) < len(typed):
        frame = await agent.receive()  # acknowledged as it arrives
        if frame.payload_type == PayloadType.OUTPUT:
            got += frame.payload
            await agent.send(PayloadType.OUTPUT, b".")  # the shell echoes something
    assert got == typed
    assert await read_until(pipes.screen, b"." * 50)
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0
    assert server.dialled >= 2 and agent.end is not None and agent.end.close_code != 4002


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_first_dial_that_fails_is_retried_with_the_start_token(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    server.unreachable = True
    _session, run = start(pipes, server, api)
    await asyncio.sleep(1)
    assert server.dialled >= 2
    server.unreachable = False
    opened = await connected(server, agent)
    assert opened.token_value == "token-1"
    assert api.calls == 0
    await agent.handshake()
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_gives_up_after_reconnect_for_without_a_connection(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(deque(f"token-{i}" for i in range(2, 1000))), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    server.unreachable = True
    loop = asyncio.get_running_loop()
    dropped_at = loop.time()
    assert agent.end is not None
    agent.end.abort()
    with pytest.raises(ChannelClosed, match="lost the connection to the server: cannot reach"):
        await asyncio.wait_for(run, RECONNECT_FOR + 60)
    assert loop.time() - dropped_at == pytest.approx(RECONNECT_FOR, abs=1)
    assert api.calls > 10  # ResumeSession before each re-dial, with back-off


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_resume_without_a_token_means_the_session_has_ended(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    assert agent.end is not None
    agent.end.abort()
    assert await asyncio.wait_for(run, 30) == 255
    assert b"ended: the session has ended" in drain(pipes.errors)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_refused_resume_is_final_and_a_failing_server_is_retried(pipes: Pipes) -> None:
    api = FakeApi(
        deque(
            [
                ApiError("InternalServerError", "boom", 500),
                Unavailable("cannot reach the server"),
                ApiError("DoesNotExistException", "no such session", 400),
            ]
        )
    )
    server, agent = Server(), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    assert agent.end is not None
    agent.end.abort()
    with pytest.raises(ApiError, match="no such session"):
        await asyncio.wait_for(run, 60)
    assert api.calls == 3


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_replaced_is_final(pipes: Pipes) -> None:
    server, api = Server(), FakeApi(deque(["token-2"]))
    _session, run = start(pipes, server, api)
    end, _ = await server.accept()
    await end.close(CloseCode.REPLACED, "replaced by a newer connection")
    with pytest.raises(ChannelClosed, match="another connection took over"):
        await asyncio.wait_for(run, 30)
    assert (server.dialled, api.calls) == (1, 0)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_policy_refuses_a_first_connection(pipes: Pipes) -> None:
    server, api = Server(), FakeApi()
    _session, run = start(pipes, server, api)
    end, _ = await server.accept()
    await end.close(CloseCode.POLICY, "invalid token for this session")
    with pytest.raises(AuthError, match="refused the session: invalid token"):
        await asyncio.wait_for(run, 30)
    assert (server.dialled, api.calls) == (1, 0)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_policy_after_a_connection_was_up_resumes(pipes: Pipes) -> None:
    server, api, agent = Server(), FakeApi(deque(["token-2"])), Agent()
    _session, run = start(pipes, server, api)
    await connected(server, agent)
    await agent.handshake()
    assert agent.end is not None
    # E.g. after a server restart the old token is unknown: ResumeSession, then re-dial.
    await agent.end.close(CloseCode.POLICY, "invalid token for this session")
    opened = await connected(server, agent)
    assert opened.token_value == "token-2"
    await agent.end_session(exit_code=0)
    assert await asyncio.wait_for(run, 30) == 0


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_terminal_is_raw_follows_resizes_and_is_restored(
    pipes: Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        before = termios.tcgetattr(slave)
        server, api, agent = Server(), FakeApi(), Agent()
        session = ClientSession(
            StartedSession(SESSION, "token-1", URL),
            ShellHandler(stdin_fd=slave, stdout_fd=pipes.stdout, stderr_fd=pipes.stderr),
            api=api,
            dial=server.dial,
            stderr_fd=pipes.stderr,
        )
        run = asyncio.get_running_loop().create_task(session.run())
        await connected(server, agent)
        await agent.handshake()
        size = await agent.receive()
        assert SizePayload.from_json(size.payload) == SizePayload(cols=120, rows=40)
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)  # raw

        os.write(master, b"\x03")  # Ctrl-C goes to the remote shell, not to us
        # The line discipline passes it on asynchronously: wait (really) until it has, or the
        # fast-forwarded clock would run the test's time-out first.
        assert select.select([slave], [], [], 10)[0]
        assert (await agent.receive()).payload == b"\x03"

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        os.kill(os.getpid(), signal.SIGWINCH)
        resized = await agent.receive()
        assert resized.payload_type == PayloadType.SIZE
        assert SizePayload.from_json(resized.payload) == SizePayload(cols=132, rows=50)

        assert agent.end is not None
        await agent.end.close(CloseCode.REPLACED, "replaced")  # the session fails...
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(run, 30)
        assert termios.tcgetattr(slave) == before  # ...and the terminal is restored
    finally:
        os.close(master)
        os.close(slave)
