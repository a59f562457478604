"""``ShellSession`` in process: a real login shell in a real PTY, its data channel over in-memory
sockets from a :class:`FakeDialer`, and a :class:`FakeClient` (a real client ``Endpoint``) at the
other end, with no gateway in between.

The shell runs as the current user with a private, empty home (:func:`shell_user`): no test
creates a system user, and the shells never read the machine user's own dotfiles (a login
shell killed by a test must not leave, say, a half-done ``pyenv rehash`` lock in ~root).

Clocks: the session's monotonic clock is the event loop's, and its wall clock a
:class:`FakeClock` that never moves (so a timer on the wall clock would never fire: the tests
notice, by a time-out).

A test with a shell in it runs on the real clock: the shell answers in real time, and a loop
clock fast-forwarded while the shell starts (looptime) would run out the session's timers and
the test's own time-outs early, by how busy the machine is. The session's waits that a test
would otherwise sit out are made short for it (:class:`SessionTimings`), and a wait that must
end by something other than its timer is made longer than the test (``NEVER``): what ended it
is then known without measuring time. Every wait of the test itself is for a condition, with a
generous real-time budget, and no test asserts how long anything took.

Only tests with no process in them (the session ends before a shell starts) run on looptime's
fast-forwarded clock, with the production timings, and measure those on the loop's clock.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from hatchway.agent.runas import RunAsUser, current_user
from hatchway.agent.shell_session import (
    HANDSHAKE_TIMEOUT,
    INPUT_BUFFER,
    READ_CHUNK,
    RECONNECT_FOR,
    SessionTimings,
    ShellSession,
)
from hatchway.agent.terminal import PtyShell
from hatchway.errors import NotFound, Unavailable
from hatchway.protocol.control import ack_for
from hatchway.protocol.events import SessionStateChanged
from hatchway.protocol.frames import FlagValue, MessageType, PayloadType, decode_frame
from hatchway.protocol.handshake import (
    HATCHWAY_MAX_PAYLOAD,
    ActionStatus,
    Extensions,
    HandshakeResponse,
    ProcessedClientAction,
)
from hatchway.protocol.payloads import AcknowledgeContent, AgentTaskPayload, encode_flag
from hatchway.protocol.reliability import Endpoint
from tests.fakes import FakeClient, FakeClock, FakeDialer

pytestmark = pytest.mark.asyncio

SESSION = "alice-0123456789abcdef0"
#: Real seconds allowed for anything the shell does: generous, CI has two busy cores.
SHELL_TIMEOUT = 30.0
#: A session wait longer than any test: whatever ends it, its timer did not.
NEVER = 3600.0
#: A session wait the test means to run out, short on the real clock.
SHORT = 0.3
#: The production timings, except that the first input waits for a starting shell's line
#: editor (or its quiet prompt) however long a loaded machine takes to get there.
TIMINGS = SessionTimings(input_ready_max=SHELL_TIMEOUT / 2)
COULD_NOT_RUN = "the agent could not run the session"


# ---- the rig -------------------------------------------------------------------------------


@dataclass
class Completions:
    """The session's completion callback: what it reported, once."""

    reports: list[tuple[str, str, str]] = field(default_factory=list)
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    #: The session's endpoint (set by the rig), to see what was acknowledged at the report.
    endpoint: Endpoint | None = None
    #: Whether the client had acknowledged all the agent sent when the session reported:
    #: tells an end on the last acknowledgement from an end on a time-out, with no clock.
    acked_when_reported: bool | None = None

    async def __call__(self, session_id: str, status: str, output: str) -> None:
        self.reports.append((session_id, status, output))
        if self.endpoint is not None:
            self.acked_when_reported = self.endpoint.all_acked
        self.reported.set()

    async def wait(self, timeout: float = SHELL_TIMEOUT) -> tuple[str, str]:
        """The (status, output) the session reported."""
        async with asyncio.timeout(timeout):
            await self.reported.wait()
        [(session_id, status, output)] = self.reports
        assert session_id == SESSION
        return status, output


@dataclass
class Rig:
    session: ShellSession
    client: FakeClient
    dialer: FakeDialer
    completions: Completions
    run: asyncio.Task[None]

    @property
    def shell(self) -> PtyShell:
        assert self.session.shell is not None
        return self.session.shell

    async def shell_started(self) -> PtyShell:
        await eventually(lambda: self.session.shell is not None)
        return self.shell


def shell_user(shell: str | None = None) -> RunAsUser:
    """The current user (with another login shell), with a fresh empty home of its own
    (removed at exit)."""
    home = tempfile.mkdtemp(prefix="hatchway-shell-home-")
    atexit.register(shutil.rmtree, home, True)
    user = replace(current_user(), home=home)
    return user if shell is None else replace(user, shell=shell)


@asynccontextmanager
async def session(
    *,
    aws_plugin: bool = False,
    user: RunAsUser | None = None,
    timings: SessionTimings = TIMINGS,
    document: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    """A running session whose data channel the client has accepted (nothing else yet).

    On the way out, whatever a failed test left running is cancelled and the shell reaped.
    """
    dialer = FakeDialer()
    task = AgentTaskPayload(
        SESSION, "SSM-SessionManagerRunShell", document or {"sessionType": "Standard_Stream"}, {}
    )
    completions = Completions()
    loop = asyncio.get_running_loop()
    shell_session = ShellSession(
        task,
        dialer,
        user or shell_user(),
        completions,
        clock=FakeClock(),
        monotonic=loop.time,
        timings=timings,
    )
    completions.endpoint = shell_session.endpoint
    run = loop.create_task(shell_session.run())
    client = FakeClient(dialer, aws_plugin=aws_plugin)
    rig = Rig(shell_session, client, dialer, completions, run)
    try:
        path = await client.accept()
        assert path == f"/v1/data-channel/{SESSION}?role=publish_subscribe"
        yield rig
    finally:
        run.cancel()
        await asyncio.wait({run})
        await client.close()
        if shell_session.shell is not None:
            await asyncio.wait_for(shell_session.shell.process.wait(), SHELL_TIMEOUT)


async def start_shell(rig: Rig, rows: int = 24, cols: int = 80) -> PtyShell:
    """Handshake and size: the shell starts."""
    await rig.client.handshake()
    await rig.client.size(rows, cols)
    return await rig.shell_started()


async def eventually(predicate: Callable[[], bool], timeout: float = SHELL_TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, checking every 10 ms."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def record_spawns(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The window size (rows, cols) every shell is started with, from now on."""
    sizes: list[tuple[int, int]] = []
    spawn = PtyShell.spawn

    async def recording(user: RunAsUser, *, rows: int, cols: int, **kwargs: Any) -> PtyShell:
        sizes.append((rows, cols))
        return await spawn(user, rows=rows, cols=cols, **kwargs)

    monkeypatch.setattr(PtyShell, "spawn", staticmethod(recording))
    return sizes


def awaiting(task: asyncio.Task[None]) -> list[str]:
    """The names of the coroutines ``task`` is suspended in, outermost first (where a session
    waits, from the outside, without timing it)."""
    names: list[str] = []
    coro: object = task.get_coro()
    while (code := getattr(coro, "cr_code", None)) is not None:
        names.append(code.co_name)
        coro = getattr(coro, "cr_await", None)
    return names


def process_state(pid: int) -> str:
    """The state letter in ``/proc/<pid>/stat`` ("T" stopped, "Z" zombie), "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return process_state(pid) not in ("", "Z")  # a reparented zombie waits for init


def is_pty_master(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "/dev/ptmx"
    except FileNotFoundError:
        return False


def foreground_job(shell: PtyShell) -> int | None:
    """The process group of the command the shell runs in the foreground, if any."""
    group = os.tcgetpgrp(shell.master_fd)
    return None if group == shell.process.pid else group


def session_tasks() -> list[asyncio.Task[object]]:
    """Tasks running code of ``ShellSession`` (or of the session code it inherits) that have
    not finished."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done()
        and getattr(task.get_coro(), "__qualname__", "").startswith(
            ("ShellSession.", "DataChannelSession.")
        )
    ]


def numbers(output: bytes) -> list[int]:
    """The lines of ``output`` that are a number, in order."""
    return [int(line) for line in re.split(rb"[\r\n]+", output) if line.isdigit()]


# ---- handshake -----------------------------------------------------------------------------


async def test_hatchway_extensions_negotiated_give_64_kib_payloads_and_an_exit_code() -> None:
    async with session() as rig:
        request = await rig.client.handshake()
        session_type, offer = request.requested_client_actions
        assert session_type.action_type == "SessionType"
        assert session_type.action_parameters == {
            "SessionType": "Standard_Stream",
            "Properties": None,
        }
        assert offer.action_type == "HatchwayExtensions"
        assert Extensions.from_dict(offer.action_parameters) == Extensions(
            HATCHWAY_MAX_PAYLOAD, True, no_payload_digest=True, stream_window=1 << 20
        )
        # Request, then (after the client's response) Complete: nothing else before.
        assert [data.payload_type for data in rig.client.stream] == [
            PayloadType.HANDSHAKE_REQUEST,
            PayloadType.HANDSHAKE_COMPLETE,
        ]
        endpoint = rig.session.endpoint
        assert endpoint.max_payload_size == 65536
        assert not endpoint.cumulative_acks  # our client re-acknowledges duplicates

        await rig.client.size(24, 80)
        await rig.client.type(b"head -c 200000 /dev/zero | tr '\\0' y; exit 3\r")
        assert await rig.completions.wait() == ("Success", "3")
        await rig.client.until(
            lambda: any(isinstance(e, SessionStateChanged) for e in rig.client.events)
        )
        assert b"y" * 200_000 in rig.client.output
        sizes = [len(p) for p in rig.client.payloads(PayloadType.OUTPUT)]
        assert 1024 < max(sizes) <= 65536
        assert rig.client.stream[-1].payload_type == PayloadType.EXIT_CODE  # after all output
        assert rig.client.exit_code == 3
        assert rig.client.events == [SessionStateChanged("Terminating")]


async def test_aws_plugin_answer_keeps_the_defaults_and_reads_acks_cumulatively() -> None:
    async with session(aws_plugin=True) as rig:
        await rig.client.handshake()  # HatchwayExtensions answered with status 0, result 3
        endpoint = rig.session.endpoint
        assert endpoint.max_payload_size == 1024
        assert endpoint.cumulative_acks
        await rig.client.size(24, 80)
        await rig.client.type(b"head -c 5000 /dev/zero | tr '\\0' y; exit 3\r")
        assert await rig.completions.wait() == ("Success", "3")
        assert b"y" * 5000 in rig.client.output
        assert max(len(p) for p in rig.client.payloads(PayloadType.OUTPUT)) <= 1024
        assert rig.client.exit_code is None  # AWS's plugin would print it (docs/protocol.md §7.8)


@pytest.mark.looptime  # no shell: the production time-out, on the fast-forwarded loop clock
async def test_a_client_that_never_answers_the_handshake_fails_the_session() -> None:
    async with session() as rig:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = await rig.completions.wait(HANDSHAKE_TIMEOUT + 60)
        assert status == ("Failed", "the client did not complete the handshake")
        assert loop.time() - started == pytest.approx(HANDSHAKE_TIMEOUT, abs=0.1)
        assert rig.session.shell is None


@pytest.mark.looptime  # no shell
async def test_a_failed_session_type_ends_the_session_without_a_shell() -> None:
    async with session() as rig:
        await rig.client.until(lambda: bool(rig.client.payloads(PayloadType.HANDSHAKE_REQUEST)))
        refused = HandshakeResponse(
            "1.2.700.0",
            (ProcessedClientAction("SessionType", ActionStatus.FAILED, None, "not today"),),
            ("not today",),
        )
        await rig.client.send(PayloadType.HANDSHAKE_RESPONSE, refused.to_json())
        assert await rig.completions.wait() == ("Cancelled", "handshake failed: not today")
        assert rig.session.shell is None


async def test_interactive_commands_run_the_document_s_command_in_a_pty() -> None:
    document = {
        "sessionType": "InteractiveCommands",
        "properties": {"linux": {"commands": "tty; echo doc-$((40+2)); exit 7"}},
    }
    async with session(document=document) as rig:
        request = await rig.client.handshake()
        session_type = request.requested_client_actions[0].action_parameters
        assert session_type["SessionType"] == "InteractiveCommands"
        await rig.client.size(24, 80)
        assert await rig.completions.wait() == ("Success", "7")
        await rig.client.until(lambda: rig.client.exit_code == 7)
        assert b"doc-42" in rig.client.output and b"/dev/pts/" in rig.client.output


# ---- shell start, input and output ---------------------------------------------------------


async def test_the_shell_starts_at_the_first_size_with_that_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned = record_spawns(monkeypatch)
    # The size wait outlasts the test: only the size can start the shell.
    async with session(timings=replace(TIMINGS, size_wait=NEVER)) as rig:
        await rig.client.handshake()
        assert rig.session.shell is None
        await rig.client.size(30, 100)
        await rig.shell_started()
        assert spawned == [(30, 100)]  # not at 24x80 before the size came, then resized
        await rig.client.type(b"stty size; exit\r")
        await rig.client.output_contains(b"30 100")
        assert await rig.completions.wait() == ("Success", "0")


async def test_without_a_size_the_shell_starts_after_the_size_wait_at_24_by_80(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned = record_spawns(monkeypatch)
    async with session(timings=replace(TIMINGS, size_wait=SHORT)) as rig:
        await rig.client.handshake()
        await rig.shell_started()  # the size wait ran out (on the monotonic clock)
        assert spawned == [(24, 80)]
        await rig.client.type(b"stty size; exit\r")
        await rig.client.output_contains(b"24 80")
        assert await rig.completions.wait() == ("Success", "0")


async def test_input_reaches_the_shell_and_its_output_comes_back() -> None:
    async with session() as rig:
        shell = await start_shell(rig)
        await rig.client.type(b"echo answer-$((6*7))\r")
        await rig.client.output_contains(b"answer-42")  # the echo shows "$((6*7))"
        await rig.client.type(b"cat\r")
        # Typed before cat has the terminal, the line would meet the line editor's raw mode.
        await eventually(lambda: foreground_job(shell) is not None)
        await rig.client.type(b"line one\r")
        await rig.client.until(lambda: rig.client.output.count(b"line one") == 2)  # echo, cat
        await rig.client.type(b"\x04exit 0\r")  # end cat's input, then the shell's
        assert await rig.completions.wait() == ("Success", "0")
        assert rig.client.exit_code == 0


async def test_an_echo_leaves_alone_and_the_acknowledgement_of_its_keystroke_follows() -> None:
    """docs/protocol.md §6.3: riding along, the ack would be parsed by every hop before the
    echo is passed on."""
    async with session() as rig:
        await start_shell(rig)
        await rig.client.type(b"echo ready-$((6*7))\r")
        await rig.client.output_contains(b"ready-42")
        assert rig.client.socket is not None
        agent_end = rig.client.socket.peer
        assert agent_end is not None
        before = len(agent_end.writes)
        await rig.client.type(b"7319")  # the line editor echoes it
        await rig.client.output_contains(b"7319")
        keystroke = rig.client.endpoint.next_sequence_number - 1
        await eventually(lambda: not rig.client.endpoint.unacked_count)
        writes = [[decode_frame(f) for f in write] for write in agent_end.writes[before:]]
        echo = next(i for i, w in enumerate(writes) if any(b"7" in f.payload for f in w))
        ack = next(
            i
            for i, w in enumerate(writes)
            for f in w
            if f.message_type == MessageType.ACKNOWLEDGE
            and AcknowledgeContent.from_json(f.payload).acknowledged_sequence_number == keystroke
        )
        assert all(f.message_type != MessageType.ACKNOWLEDGE for f in writes[echo])
        assert ack > echo
        await rig.client.type(b"\x15exit 0\r")
        assert await rig.completions.wait() == ("Success", "0")


async def test_a_shell_killed_by_a_signal_reports_128_plus_its_number() -> None:
    async with session() as rig:
        await start_shell(rig)
        await rig.client.type(b"kill -KILL $$\r")
        assert await rig.completions.wait() == ("Success", "137")
        assert rig.client.exit_code == 137


async def test_a_shell_that_stays_in_canonical_mode_gets_its_input_once_quiet() -> None:
    # dash has no line editor: its terminal stays in canonical mode, so the first input waits
    # for the output to be quiet, timed on the monotonic clock (the wall clock here stands
    # still). The longest wait for a starting shell outlasts the test: only quiet delivers it.
    timings = replace(TIMINGS, input_ready_max=NEVER)
    async with session(user=shell_user(shell="/bin/sh"), timings=timings) as rig:
        await start_shell(rig)
        await rig.client.type(b"echo canonical-$((1+1)); exit 6\r")
        await rig.client.output_contains(b"canonical-2")
        assert await rig.completions.wait() == ("Success", "6")


# ---- backpressure --------------------------------------------------------------------------


async def test_output_stops_while_the_client_acknowledges_nothing_and_resumes_with_acks() -> None:
    total = 12_000_000  # more than the 8 MiB the agent may keep unacknowledged
    async with session() as rig:
        await start_shell(rig)
        endpoint = rig.session.endpoint
        rig.client.hold()
        await rig.client.type(b"head -c %d /dev/zero | tr '\\0' x; exit\r" % total)

        def window_full() -> bool:
            return endpoint.send_window() * endpoint.max_payload_size < READ_CHUNK

        # The window fills, and the PTY is not read any more (the shell's writes block in
        # the kernel) ...
        await eventually(lambda: window_full() and not rig.session._reading)
        frames = [decode_frame(m) for m in rig.client.held]
        unacked = {f.sequence_number: len(f.payload) for f in frames if f.payload}
        assert sum(unacked.values()) <= 8 * 1024 * 1024  # the agent's send buffer
        assert rig.shell.process.returncode is None
        # ... until acknowledgements open the window again.
        await rig.client.release()
        assert await rig.completions.wait() == ("Success", "0")
        assert b"x" * total in rig.client.output  # all of it, once
        assert b"x" * (total + 1) not in rig.client.output


async def test_input_beyond_the_buffer_is_refused_for_a_stopped_shell_then_delivered() -> None:
    count = INPUT_BUFFER + 500_000
    async with session() as rig:
        shell = await start_shell(rig)
        # Raw mode (a canonical-mode line ends at 4095 bytes), then a shell that stops
        # itself before it reads.
        await rig.client.type(
            b"stty raw -echo; "
            b"exec sh -c 'kill -STOP $$; head -c %d | wc -c | sed s/^/count=/'\r" % count
        )
        await eventually(lambda: process_state(shell.process.pid) == "T")
        await rig.client.type(b"y" * count)
        # More than INPUT_BUFFER waits for the PTY: the agent refuses (no ack) the rest.
        await eventually(lambda: not rig.session.endpoint.accepting)
        assert not rig.client.endpoint.all_acked
        os.kill(shell.process.pid, signal.SIGCONT)
        await rig.client.output_contains(b"count=%d" % count)
        assert await rig.completions.wait() == ("Success", "0")
        assert rig.session.endpoint.accepting
        assert rig.client.endpoint.retransmissions > 0  # the refused frames came again


# ---- a dropped data channel ----------------------------------------------------------------


async def test_after_a_drop_the_agent_redials_resends_and_nothing_is_lost_or_doubled() -> None:
    async with session() as rig:
        await start_shell(rig)
        rig.client.hold()
        # No echo: the terminal would echo what is typed while seq runs into its output.
        await rig.client.type(b'stty -echo; seq 1 200000; echo DO""NE\r')
        await eventually(lambda: rig.session.endpoint.unacked_count >= 10)
        on_the_way = await rig.client.drop()
        # What arrived before the cut was delivered, but its acks were lost with it; the
        # rest was lost in flight. Both come again: the first half as duplicates.
        for message in on_the_way[: len(on_the_way) // 2]:
            await rig.client.take(message, acknowledge=False)
        await rig.client.release()
        await rig.client.type(b"echo after-$((1+1))\r")  # sent once reconnected
        assert await rig.client.accept() == f"/v1/data-channel/{SESSION}?role=publish_subscribe"
        await rig.client.output_contains(b"after-2")
        await rig.client.type(b"exit\r")
        assert await rig.completions.wait() == ("Success", "0")
        assert numbers(bytes(rig.client.output)) == list(range(1, 200_001))
        assert rig.client.output.count(b"DONE") == 1
        assert rig.client.output.count(b"after-2") == 1
        assert len(rig.dialer.dials) == 2


@pytest.mark.looptime  # no shell
async def test_the_data_channel_refused_at_the_first_dial_ends_the_session() -> None:
    dialer = FakeDialer()
    dialer.refusals.append(NotFound("/v1/data-channel: no such session"))
    completions = Completions()
    task = AgentTaskPayload(SESSION, "SSM-SessionManagerRunShell", {}, {})
    loop = asyncio.get_running_loop()
    shell_session = ShellSession(
        task, dialer, shell_user(), completions, clock=FakeClock(), monotonic=loop.time
    )
    await asyncio.wait_for(shell_session.run(), 10)
    assert await completions.wait() == (
        "Cancelled",
        "the server refused the session's data channel",
    )
    assert shell_session.shell is None


@pytest.mark.looptime  # no shell: the production RECONNECT_FOR, on the fast-forwarded clock
async def test_a_data_channel_that_stays_away_ends_the_session_after_reconnect_for() -> None:
    # The channel drops before the handshake, whose wait outlasts the test: no shell starts.
    async with session(timings=replace(TIMINGS, handshake_timeout=NEVER)) as rig:
        rig.dialer.refusals.extend(Unavailable("cannot reach the server") for _ in range(1000))
        loop = asyncio.get_running_loop()
        dropped = loop.time()
        await rig.client.drop()
        status = await rig.completions.wait(RECONNECT_FOR + 60)
        assert status == ("Cancelled", "the agent lost the session's data channel")
        assert loop.time() - dropped == pytest.approx(RECONNECT_FOR, abs=6)  # back-off: 5 s
        assert rig.session.shell is None


async def test_a_data_channel_that_stays_away_hangs_up_the_shell() -> None:
    async with session(timings=replace(TIMINGS, reconnect_for=SHORT)) as rig:
        shell = await start_shell(rig)
        rig.dialer.refusals.extend(Unavailable("cannot reach the server") for _ in range(1000))
        await rig.client.drop()
        status = await rig.completions.wait()  # RECONNECT_FOR on the monotonic clock
        assert status == ("Cancelled", "the agent lost the session's data channel")
        assert len(rig.dialer.dials) >= 2  # it re-dialled before it gave up
        assert not is_pty_master(shell.master_fd)
        await asyncio.wait_for(shell.process.wait(), SHELL_TIMEOUT)  # hung up


async def test_a_crash_in_the_data_channel_fails_the_session_and_ends_the_shell() -> None:
    async with session() as rig:
        shell = await start_shell(rig)
        rig.dialer.refusals.append(RuntimeError("a bug"))  # not an error the dialer may raise
        await rig.client.drop()
        assert await rig.completions.wait() == ("Failed", COULD_NOT_RUN)
        assert not is_pty_master(shell.master_fd)
        await asyncio.wait_for(shell.process.wait(), SHELL_TIMEOUT)  # hung up


# ---- ending it -----------------------------------------------------------------------------


async def hung_up_with(rig: Rig, end: Callable[[], object]) -> tuple[str, str]:
    """Start ``sleep`` in the shell, end the session with ``end()``; checks that the shell
    and its job are gone and the PTY is closed; returns what the session reported."""
    shell = await start_shell(rig)
    await rig.client.type(b"sleep 1000\r")
    await eventually(lambda: foreground_job(shell) is not None)
    job = foreground_job(shell)
    assert job is not None
    result = end()
    if asyncio.iscoroutine(result):
        await result
    reported = await rig.completions.wait()
    await eventually(lambda: not alive(job))
    assert shell.process.returncode is not None
    assert not is_pty_master(shell.master_fd)
    return reported


async def test_channel_closed_hangs_up_the_shell() -> None:
    async with session() as rig:
        reported = await hung_up_with(
            rig, lambda: rig.client.channel_closed(SESSION, "terminated by an administrator")
        )
        assert reported == ("Cancelled", "terminated by an administrator")


async def test_cancel_hangs_up_the_shell() -> None:
    async with session() as rig:
        reported = await hung_up_with(rig, lambda: rig.session.cancel("the agent is stopping"))
        assert reported == ("Cancelled", "the agent is stopping")


async def test_the_client_s_terminate_flag_hangs_up_the_shell() -> None:
    async with session() as rig:
        flag = encode_flag(FlagValue.TERMINATE_SESSION)
        reported = await hung_up_with(rig, lambda: rig.client.send(PayloadType.FLAG, flag))
        assert reported == ("Cancelled", "terminated by the client")


async def test_cancelling_the_task_ends_the_shell_and_stays_cancelled() -> None:
    async with session() as rig:
        shell = await start_shell(rig)
        rig.run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rig.run
        await asyncio.wait_for(shell.process.wait(), SHELL_TIMEOUT)
        assert not is_pty_master(shell.master_fd)
        assert rig.completions.reports == []  # a cancelled task reports nothing
        assert not session_tasks()  # and leaves no task of its own behind


async def test_cancelled_again_while_ending_the_pty_is_still_closed() -> None:
    async with session() as rig:
        shell = await start_shell(rig)
        # The shell ignores the hangup: ending it waits for the SIGKILL 2 s later.
        await rig.client.type(b"trap '' HUP; echo ignoring-$((1+1))\r")
        await rig.client.output_contains(b"ignoring-2")
        # The session's task is running, waiting for the shell, so the next call to the
        # process's wait() is the ended session's wait for the shell to go.
        waiting_for_the_shell = asyncio.Event()
        process_wait = shell.process.wait

        async def wait() -> int:
            waiting_for_the_shell.set()
            return await process_wait()

        shell.process.wait = wait  # type: ignore[method-assign]
        rig.run.cancel()
        async with asyncio.timeout(SHELL_TIMEOUT):
            await waiting_for_the_shell.wait()
        assert is_pty_master(shell.master_fd)
        rig.run.cancel()  # e.g. the agent gives up on a session that takes too long to end
        await asyncio.wait({rig.run})
        assert rig.run.cancelled()
        assert not is_pty_master(shell.master_fd)


async def test_input_left_for_a_shell_that_exited_leaves_nothing_registered() -> None:
    async with session() as rig:
        shell = await start_shell(rig)
        await rig.client.type(b"stty raw -echo; exec sh -c 'kill -STOP $$; exit 5'\r")
        await eventually(lambda: process_state(shell.process.pid) == "T")
        await rig.client.type(b"y" * 100_000)  # more than the PTY takes: the rest waits
        await eventually(
            lambda: (
                rig.session.endpoint.expected_sequence_number
                == rig.client.endpoint.next_sequence_number
            )
        )
        os.kill(shell.process.pid, signal.SIGCONT)  # it exits without reading any
        assert await rig.completions.wait() == ("Success", "5")
        loop = asyncio.get_running_loop()
        # No writer kept spinning on the PTY of a shell that had exited (its master is always
        # "writable" then), and nothing stale for the next PTY to get the same number.
        assert not loop.remove_writer(shell.master_fd)
        assert not loop.remove_reader(shell.master_fd)


# ---- the wait for the last acknowledgements ------------------------------------------------


async def test_while_the_client_is_away_the_exit_waits_up_to_ack_wait() -> None:
    # A short ack_wait, which ends the session without the client's acknowledgements (on the
    # monotonic clock: the frozen wall clock would never end it).
    async with session(timings=replace(TIMINGS, ack_wait=SHORT)) as rig:
        await start_shell(rig)
        rig.client.hold()
        await rig.client.control(MessageType.PAUSE_PUBLICATION)  # the gateway: client away
        await rig.client.type(b"echo bye; exit 4\r")
        assert await rig.completions.wait() == ("Success", "4")
        assert rig.completions.acked_when_reported is False


async def test_a_client_back_within_the_wait_gets_everything_and_the_session_ends() -> None:
    # ack_wait outlasts the test: only the client's acknowledgements can end the wait.
    async with session(timings=replace(TIMINGS, ack_wait=NEVER)) as rig:
        shell = await start_shell(rig)
        rig.client.hold()
        await rig.client.control(MessageType.PAUSE_PUBLICATION)
        await rig.client.type(b"echo bye-$((1+1)); exit 4\r")
        await asyncio.wait_for(shell.process.wait(), SHELL_TIMEOUT)
        await eventually(lambda: "_wait_acked" in awaiting(rig.run))  # the client is away
        assert not rig.completions.reports
        await rig.client.control(MessageType.START_PUBLICATION)
        await rig.client.release()
        assert await rig.completions.wait() == ("Success", "4")
        assert rig.completions.acked_when_reported is True
        assert b"bye-2" in rig.client.output
        assert rig.client.exit_code == 4


async def test_an_aws_plugin_that_drops_the_resent_frames_is_waited_for_a_few_seconds() -> None:
    # A short stalled_wait, and an ack_wait that outlasts the test: the session can only end
    # on the first.
    timings = replace(TIMINGS, ack_wait=NEVER, stalled_wait=SHORT)
    async with session(aws_plugin=True, timings=timings) as rig:
        shell = await start_shell(rig)
        endpoint = rig.session.endpoint
        rig.client.hold()
        await rig.client.type(b"exec sh -c 'echo last-$((1+1))'\r")

        def held_output() -> bytes:
            frames = [decode_frame(m, verify_digest=False) for m in rig.client.held]
            return b"".join(f.payload for f in frames if f.payload_type == PayloadType.OUTPUT)

        await eventually(lambda: b"last-2" in held_output())
        await asyncio.wait_for(shell.process.wait(), SHELL_TIMEOUT)
        # The output reached the plugin, but the connection was cut before its acks left.
        arrived = await rig.client.drop()
        for message in arrived:
            await rig.client.take(message, acknowledge=False)
        last = max(
            (decode_frame(m) for m in arrived),
            key=lambda f: (f.message_type == MessageType.OUTPUT_STREAM_DATA, f.sequence_number),
        )
        # The agent re-dials and resends all of it: the plugin drops every frame as a duplicate
        # without an ack. Only its (late) ack of the last frame's first sending comes through.
        await rig.client.accept()
        assert rig.client.socket is not None
        await rig.client.socket.send(ack_for(last, now=1_700_000_000.0))
        assert await rig.completions.wait() == ("Success", "0")
        assert rig.completions.acked_when_reported is False
        assert not endpoint.all_acked  # it gave up on the frames the plugin already had


# ---- digests -------------------------------------------------------------------------------


async def test_a_frame_with_a_bad_digest_is_dropped_and_the_stream_goes_on() -> None:
    async with session() as rig:
        await start_shell(rig)
        damaged = await rig.client.send_corrupted(PayloadType.OUTPUT, b"echo digest-$((1+1))\r")
        # The agent neither delivers nor acknowledges it; the client's timer resends it.
        await rig.client.output_contains(b"digest-2")
        await rig.client.type(b"echo next-$((2+2)); exit\r")
        await rig.client.output_contains(b"next-4")
        assert await rig.completions.wait() == ("Success", "0")
        assert str(damaged) not in {ack.acknowledged_message_id for ack in rig.client.acks}
        assert rig.client.output.count(b"digest-2") == 1
