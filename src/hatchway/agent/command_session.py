"""``NonInteractiveCommands`` on the agent: a command without a terminal (docs/protocol.md §8.2).

The command is ``sh -c <properties.linux.commands>`` as the run-as user, in a session of its
own (so ending it reaches its children), with no PTY. AWS's agent shlex-splits the text and execs
it; ``sh -c`` keeps shell syntax (``a; b``, ``exit 42``, pipes, quotes) working, and for a
simple command the two are the same (``hatchway exec -- ARGS`` sends ``shlex.join(ARGS)``).

Output: stdout as Output (1) frames; stderr as StdErr (11) frames when the streams are kept
apart (the document's ``separateOutputStream``, or a Hatchway client, which writes them to its
own stdout and stderr), else merged into stdout (one pipe, so the order is kept), as AWS's
agent does. Each read is at most :data:`READ_CHUNK` bytes and happens only while the send
window has room for it: a slow client slows the command (its pipe fills and its writes block).
After the command exits, the pipes are read to their end; a pipe that a left-over background
process holds open is given up after ``drain_after_exit`` seconds without output.

Exit code: an ExitCode (12) frame ``EXIT_CODE: <n>`` (128 + signal number for a signal) when
the streams are separate (AWS's agent does the same) or the client negotiated it (§7.8), and
the code as the completion's output.

Input, which depends on the client (docs/protocol.md §8.2):

* AWS's plugin: the command's stdin is /dev/null; the bytes 0x03 and 0x1c in Output frames
  send SIGINT and SIGQUIT to the command's process group, anything else is ignored (as AWS's
  agent does).
* Hatchway's client (HatchwayExtensions negotiated): Output payloads are the command's stdin,
  byte for byte; Flag :data:`~hatchway.agent.session.END_OF_INPUT` (4) closes it after what
  came before. More than :data:`INPUT_BUFFER` bytes waiting for the pipe makes the agent
  refuse (not acknowledge) further input until the command has read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from hatchway.agent.dialer import SocketDialer
from hatchway.agent.runas import RunAsUser, login_environment
from hatchway.agent.session import (
    DEFAULT_TIMINGS,
    END_OF_INPUT,
    INPUT_BUFFER,
    READ_CHUNK,
    Completion,
    DataChannelSession,
    SessionTimings,
    commands_of,
)
from hatchway.agent.terminal import EXEC_HELPER, PtyShell
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.payloads import AgentTaskPayload

__all__ = ["CommandSession", "spawn_command"]

log = logging.getLogger(__name__)

#: Input bytes AWS's plugin sends for Ctrl-C and Ctrl-\ (docs/protocol.md §8.1).
_SIGNAL_BYTES: Final = {0x03: signal.SIGINT, 0x1C: signal.SIGQUIT}
KILL_AFTER: Final = 2.0  # seconds from SIGTERM to SIGKILL when a session ends the command


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's protocol for a subprocess's pipes, telling when the process itself exited
    (``Process.wait()`` also waits for every pipe to close, which a left-over background
    process holding stdout would delay for ever)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def spawn_command(
    user: RunAsUser, command: str, *, stdin: int, stderr: int
) -> tuple[asyncio.subprocess.Process, asyncio.Event]:
    """Start ``sh -c command`` as ``user`` without a terminal, in a new session, with stdout a
    pipe and ``stdin``/``stderr`` as given (``asyncio.subprocess`` constants); returns the
    process and an event set when it has exited."""
    loop = asyncio.get_running_loop()
    protocol = _Protocol(READ_CHUNK, loop)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        sys.executable, "-I", "-S", str(EXEC_HELPER), "--no-ctty",
        str(user.uid), str(user.gid), ",".join(str(g) for g in user.groups),
        user.home, "/bin/sh", "sh", "-c", command,
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        start_new_session=True,
        cwd="/",
        env=login_environment(user, term="dumb"),
    )  # fmt: skip
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited


def _truthy(value: Any) -> bool:
    """A document boolean: true or "true" (docs/protocol.md §10.2)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class CommandSession(DataChannelSession):
    """Runs one ``NonInteractiveCommands`` session to its end (see the module docstring)."""

    session_type = SessionType.NON_INTERACTIVE_COMMANDS

    def __init__(
        self,
        task: AgentTaskPayload,
        dialer: SocketDialer,
        user: RunAsUser,
        complete: Completion,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timings: SessionTimings = DEFAULT_TIMINGS,
    ) -> None:
        super().__init__(task, dialer, complete, clock, monotonic, timings)
        self._user = user
        self.process: asyncio.subprocess.Process | None = None
        self._exited = False
        self._early_input = bytearray()  # stdin that came before the command started
        self._input_ended = False
        self._draining: asyncio.Task[None] | None = None
        self._window_open = asyncio.Event()
        self._read_bytes = 0
        self._exited_event = asyncio.Event()

    def _handshake_properties(self) -> Any:
        return self.properties

    @property
    def _forward_stdin(self) -> bool:
        return self.hatchway_peer

    async def _work(self) -> tuple[str, str]:
        command = commands_of(self.properties)
        await self._handshake()
        platform = self.properties.get("linux")
        separate = self.hatchway_peer or (
            isinstance(platform, dict) and _truthy(platform.get("separateOutputStream"))
        )
        pipe = asyncio.subprocess.PIPE
        process, self._exited_event = await spawn_command(
            self._user,
            command,
            stdin=pipe if self._forward_stdin else asyncio.subprocess.DEVNULL,
            stderr=pipe if separate else asyncio.subprocess.STDOUT,
        )
        self.process = process
        log.info("session %s: command pid %d as %s", self.session_id, process.pid, self._user.name)
        data, self._early_input = bytes(self._early_input), bytearray()
        self._write_stdin(data)  # also accepts input again if the early input was too much
        if self._input_ended:
            self._close_stdin()
        self._update_window()
        assert process.stdout is not None
        readers = [asyncio.create_task(self._pump(process.stdout, PayloadType.OUTPUT))]
        if process.stderr is not None:
            readers.append(asyncio.create_task(self._pump(process.stderr, PayloadType.STDERR)))
        try:
            await self._exited_event.wait()
            returncode = process.returncode
            assert returncode is not None
            self._exited = True
            self._stop_input()
            await self._drain(readers)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        for reader in readers:
            if not reader.cancelled() and (exc := reader.exception()) is not None:
                raise exc
        code = PtyShell.exit_status(returncode)
        await self._finish(code, exit_frame=separate)
        return "Success", str(code)

    # ---- output ----------------------------------------------------------------------------

    def _room(self) -> bool:
        return self.endpoint.send_window() * self.endpoint.max_payload_size >= READ_CHUNK

    def _update_window(self) -> None:
        if self._room():
            self._window_open.set()
        else:
            self._window_open.clear()

    def _on_heard(self) -> None:
        self._update_window()

    async def _pump(self, stream: asyncio.StreamReader, kind: PayloadType) -> None:
        """Move one pipe's output into the endpoint while the send window has room."""
        while True:
            await self._window_open.wait()
            data = await stream.read(READ_CHUNK)
            if not data:
                return
            self._read_bytes += len(data)
            self.endpoint.send(kind, data, now=self._now())
            self._driver.flush_soon()
            self._update_window()

    async def _drain(self, readers: list[asyncio.Task[None]]) -> None:
        """Read the pipes to their end after the command exited; give up on pipes that stay
        quiet (while they may be read) for ``drain_after_exit`` seconds."""
        while True:
            pending = [reader for reader in readers if not reader.done()]
            if not pending:
                return
            before = self._read_bytes
            await asyncio.wait(pending, timeout=self._timings.drain_after_exit)
            if any(not reader.done() for reader in readers) and (
                self._read_bytes == before and self._window_open.is_set()
            ):
                log.info(
                    "session %s: the command exited; its output stays open (a background "
                    "process?) and is not read further",
                    self.session_id,
                )
                return

    # ---- input -----------------------------------------------------------------------------

    def _on_payload(self, kind: int, payload: bytes) -> None:
        if kind != PayloadType.OUTPUT or self._exited:
            return  # Size is ignored without a terminal
        if not self._forward_stdin:
            for byte in payload:
                sig = _SIGNAL_BYTES.get(byte)
                if sig is not None:
                    self._signal(sig)
            return
        if self.process is None:
            self._early_input += payload
            self._set_accepting(len(self._early_input) <= INPUT_BUFFER)
            return
        self._write_stdin(payload)

    def _on_flag(self, value: int) -> None:
        if value == END_OF_INPUT and self._forward_stdin:
            self._input_ended = True
            if self.process is not None:
                self._close_stdin()

    def _stdin(self) -> asyncio.StreamWriter | None:
        process = self.process
        if process is None or process.stdin is None or process.stdin.transport.is_closing():
            return None
        return process.stdin

    def _write_stdin(self, data: bytes) -> None:
        stdin = self._stdin()
        if stdin is None:
            self._set_accepting(True)  # nobody reads it: take it and drop it
            return
        try:
            stdin.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return
        if self._draining is not None:
            return  # input is refused until the pipe has drained
        if stdin.transport.get_write_buffer_size() > INPUT_BUFFER:
            # Backpressure: refuse (don't ack) more input until the command has read this;
            # refused frames come back by retransmission (docs/protocol.md §6.3).
            self._set_accepting(False)
            self._draining = asyncio.create_task(self._drain_stdin(stdin))
        else:
            self._set_accepting(True)

    async def _drain_stdin(self, stdin: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await stdin.drain()
        finally:
            self._draining = None
            self._set_accepting(True)

    def _close_stdin(self) -> None:
        stdin = self._stdin()
        if stdin is not None:
            stdin.close()  # after what is buffered

    def _stop_input(self) -> None:
        """The command is gone: nobody reads its input any more."""
        self._early_input.clear()
        draining, self._draining = self._draining, None
        if draining is not None:
            draining.cancel()
        self._set_accepting(True)
        process = self.process
        if process is not None and process.stdin is not None:
            process.stdin.close()

    def _signal(self, sig: int) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)

    # ---- ending ----------------------------------------------------------------------------

    async def _stop_work(self) -> None:
        """End the command's processes (SIGTERM, SIGKILL later) and its input."""
        self._exited = True
        self._stop_input()
        process = self.process
        if process is not None and process.returncode is None:
            self._signal(signal.SIGTERM)
            asyncio.get_running_loop().call_later(KILL_AFTER, self._signal, signal.SIGKILL)

    async def _work_gone(self) -> None:
        if self.process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timings.hangup_wait):
                    await self._exited_event.wait()

    def _release(self) -> None:
        # The subprocess transport owns the pipes; closing it closes pipes a left-over
        # background process still holds (asyncio has no public way to do this).
        transport = getattr(self.process, "_transport", None)
        if transport is not None:
            transport.close()
