"""``CommandSession`` in process: real ``sh -c`` commands without a terminal, as the current
user, their data channel over in-memory sockets to a :class:`FakeClient` (Hatchway's client, or
AWS's plugin), on the real clock (the processes answer in real time; see
tests/agent/test_shell_session.py for the rig's rules)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hatchway.agent.command_session import CommandSession
from hatchway.agent.session import END_OF_INPUT
from hatchway.protocol.events import SessionStateChanged
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.payloads import AgentTaskPayload, encode_flag
from tests.agent.test_shell_session import (
    SESSION,
    SHELL_TIMEOUT,
    TIMINGS,
    Completions,
    alive,
    eventually,
    shell_user,
)
from tests.fakes import FakeClient, FakeClock, FakeDialer

pytestmark = pytest.mark.asyncio


def document(command: str, **linux: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "1.0",
        "sessionType": "NonInteractiveCommands",
        "properties": {"linux": {"commands": command, "runAsElevated": False, **linux}},
    }


@dataclass
class Rig:
    session: CommandSession
    client: FakeClient
    completions: Completions

    def stdout(self) -> bytes:
        return b"".join(self.client.payloads(PayloadType.OUTPUT))

    def stderr(self) -> bytes:
        return b"".join(self.client.payloads(PayloadType.STDERR))


@asynccontextmanager
async def command(
    text: str, *, aws_plugin: bool = False, handshake: bool = True, **linux: Any
) -> AsyncIterator[Rig]:
    dialer = FakeDialer()
    task = AgentTaskPayload(SESSION, "AWS-StartNonInteractiveCommand", document(text, **linux), {})
    completions = Completions()
    loop = asyncio.get_running_loop()
    session = CommandSession(
        task,
        dialer,
        shell_user(),
        completions,
        clock=FakeClock(),
        monotonic=loop.time,
        timings=TIMINGS,
    )
    completions.endpoint = session.endpoint
    run = loop.create_task(session.run())
    client = FakeClient(dialer, aws_plugin=aws_plugin)
    try:
        await client.accept()
        if handshake:
            await client.handshake()
        yield Rig(session, client, completions)
    finally:
        run.cancel()
        await asyncio.wait({run})
        await client.close()


async def ended(rig: Rig) -> None:
    """Wait until the client has seen the session's end (Terminating)."""
    await rig.client.until(
        lambda: any(isinstance(e, SessionStateChanged) for e in rig.client.events)
    )


@pytest.mark.parametrize(
    ("text", "code"), [("true", 0), ("false", 1), ("exit 42", 42), ("kill -TERM $$", 143)]
)
async def test_the_exit_code_travels_as_an_exit_code_frame_and_the_completion(
    text: str, code: int
) -> None:
    async with command(text) as rig:
        assert await rig.completions.wait() == ("Success", str(code))
        await ended(rig)
        assert rig.client.exit_code == code
        assert rig.client.stream[-1].payload_type == PayloadType.EXIT_CODE


async def test_the_handshake_names_the_type_and_its_properties() -> None:
    async with command("true", handshake=False) as rig:
        request = await rig.client.handshake()
        session_type = request.requested_client_actions[0].action_parameters
        assert session_type["SessionType"] == "NonInteractiveCommands"
        assert session_type["Properties"]["linux"]["commands"] == "true"
        assert await rig.completions.wait() == ("Success", "0")


async def test_stdout_and_stderr_stay_apart_without_a_terminal() -> None:
    async with command("echo out; echo err >&2; tty || echo no-tty") as rig:
        assert await rig.completions.wait() == ("Success", "0")
        await ended(rig)
        assert rig.stdout() == b"out\nnot a tty\nno-tty\n"
        assert rig.stderr() == b"err\n"


async def test_stdin_is_forwarded_and_its_end_closes_it() -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    async with command("sha256sum -b; echo done >&2") as rig:
        for offset in range(0, len(data), 65536):
            await rig.client.send(PayloadType.OUTPUT, data[offset : offset + 65536])
        await rig.client.send(PayloadType.FLAG, encode_flag(END_OF_INPUT))  # type: ignore[arg-type]
        assert await rig.completions.wait() == ("Success", "0")
        await ended(rig)
        assert rig.stdout().split()[0].decode() == hashlib.sha256(data).hexdigest()
        assert rig.stderr() == b"done\n"


async def test_without_the_end_of_input_the_command_waits_for_more() -> None:
    async with command("cat") as rig:
        await rig.client.send(PayloadType.OUTPUT, b"first\n")
        await rig.client.until(lambda: rig.stdout() == b"first\n")
        assert rig.session.process is not None and rig.session.process.returncode is None
        await rig.client.send(PayloadType.FLAG, encode_flag(END_OF_INPUT))  # type: ignore[arg-type]
        assert await rig.completions.wait() == ("Success", "0")


async def test_large_output_arrives_intact(tmp_path: Path) -> None:
    data = os.urandom(50 * 1024 * 1024 + 3)
    source = tmp_path / "data"
    source.write_bytes(data)
    async with command(f"cat {source}; head -c 100000 {source} >&2") as rig:
        assert await rig.completions.wait(120) == ("Success", "0")
        await ended(rig)
        assert hashlib.sha256(rig.stdout()).digest() == hashlib.sha256(data).digest()
        assert rig.stderr() == data[:100000]
        assert max(len(p) for p in rig.client.payloads(PayloadType.OUTPUT)) <= 65536


async def test_a_client_that_stops_acknowledging_stops_the_command_s_output() -> None:
    async with command("head -c 30000000 /dev/zero") as rig:
        rig.client.hold()
        endpoint = rig.session.endpoint
        await eventually(lambda: not rig.session._window_open.is_set())
        unacked = endpoint.unacked_count
        await asyncio.sleep(0.3)  # nothing more is read meanwhile (the pipe fills)
        assert endpoint.unacked_count == unacked
        assert rig.session.process is not None and rig.session.process.returncode is None
        await rig.client.release()
        assert await rig.completions.wait() == ("Success", "0")
        await ended(rig)
        assert rig.stdout() == bytes(30_000_000)


async def test_a_background_process_holding_stdout_does_not_hold_the_session() -> None:
    async with command("sleep 1000 & echo started") as rig:
        assert await rig.completions.wait() == ("Success", "0")
        await ended(rig)
        assert rig.stdout() == b"started\n"


async def test_terminate_ends_the_command_and_its_children() -> None:
    async with command("sleep 1000 & echo $!; wait") as rig:
        await rig.client.until(lambda: rig.stdout().endswith(b"\n"))
        child = int(rig.stdout())
        await rig.client.send(PayloadType.FLAG, encode_flag(FlagValue.TERMINATE_SESSION))
        assert await rig.completions.wait() == ("Cancelled", "terminated by the client")
        await eventually(lambda: not alive(child))
        assert rig.session.process is not None
        await asyncio.wait_for(rig.session.process.wait(), SHELL_TIMEOUT)


async def test_a_missing_command_fails_the_session() -> None:
    task = AgentTaskPayload(SESSION, "AWS-StartNonInteractiveCommand", document(""), {})
    completions = Completions()
    session = CommandSession(task, FakeDialer(), shell_user(), completions, clock=FakeClock())
    await asyncio.wait_for(session.run(), SHELL_TIMEOUT)
    assert await completions.wait() == ("Failed", "the session document names no command")
    assert session.process is None


def commands_in_group(group: int) -> list[str]:
    """The command names of the processes in process group ``group``."""
    names = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if int(stat.rsplit(")", 1)[1].split()[2]) == group:
                names.append(name)
    return names


# ---- AWS's plugin --------------------------------------------------------------------------


async def test_for_aws_s_plugin_ctrl_c_interrupts_and_other_input_is_ignored() -> None:
    async with command("echo ready; read line; sleep 1000", aws_plugin=True) as rig:
        await rig.client.until(lambda: b"ready" in rig.stdout())
        await rig.client.send(PayloadType.OUTPUT, b"x\n")  # stdin is /dev/null: read fails
        assert rig.session.process is not None
        group = rig.session.process.pid
        # Ctrl-C while sleep runs (not in the instant the shell forks it).
        await eventually(lambda: "sleep" in commands_in_group(group))
        await rig.client.send(PayloadType.OUTPUT, b"\x03")
        assert await rig.completions.wait() == ("Success", "130")
        await ended(rig)
        assert rig.client.exit_code is None  # no separateOutputStream: no ExitCode frame


async def test_for_aws_s_plugin_stderr_is_merged_unless_separate_streams_are_asked() -> None:
    async with command("echo out; echo err >&2; exit 3", aws_plugin=True) as rig:
        assert await rig.completions.wait() == ("Success", "3")
        await ended(rig)
        assert rig.stdout() == b"out\nerr\n" and rig.stderr() == b""
    async with command(
        "echo out; echo err >&2; exit 3", aws_plugin=True, separateOutputStream="true"
    ) as rig:
        assert await rig.completions.wait() == ("Success", "3")
        await ended(rig)
        assert rig.stdout() == b"out\n" and rig.stderr() == b"err\n"
        assert rig.client.exit_code == 3
        assert max(len(p) for p in rig.client.payloads(PayloadType.OUTPUT)) <= 1024
