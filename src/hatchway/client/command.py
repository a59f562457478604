"""A command's run over a session: ``NonInteractiveCommands`` (``hatchway exec``).

Output (1) payloads go to stdout and StdErr (11) payloads to stderr, byte for byte; the
session's exit code (the ExitCode payload, docs/protocol.md §7.8) becomes the exit status.
Stdin is forwarded as Output frames while the send window has room; at its end a Hatchway
agent gets Flag :data:`~hatchway.client.session.END_OF_INPUT` and closes the command's stdin
(AWS's agent reads input only for Ctrl-C and Ctrl-\\, so it gets nothing).

A time-out terminates the session (Flag TerminateSession) and exits 124, as ``timeout(1)``
does; Ctrl-C (SIGINT) terminates it and exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.session import END_OF_INPUT
from hatchway.client.streams import StreamHandler
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions, SessionType

__all__ = ["TIMED_OUT", "CommandHandler"]

#: The exit status after ``--timeout``, as ``timeout(1)``'s.
TIMED_OUT = 124


class CommandHandler(StreamHandler):
    """Runs a remote command with local stdin, stdout and stderr.

    Args:
        stdin_fd: forwarded to the command; None forwards nothing (and sends the end at once).
        stdout_fd, stderr_fd: the command's output streams.
        timeout: seconds from the start after which the session is terminated.
    """

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True, no_payload_digest=True
    )
    ended_status: int | None = None

    def __init__(
        self,
        *,
        stdin_fd: int | None = 0,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
        timeout: float | None = None,
    ) -> None:
        super().__init__(stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd)
        self._timeout = timeout
        self.session_type = ""

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        channel = self._require()
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            if self._timeout is not None:
                timer = loop.call_later(self._timeout, channel.terminate, TIMED_OUT)
                stack.callback(timer.cancel)
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signal.SIGINT, channel.terminate, ExitStatus.INTERRUPTED)
                stack.callback(loop.remove_signal_handler, signal.SIGINT)
            stack.callback(self._stop)
            yield

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        self.session_type = session_type

    def start(self) -> None:
        channel = self._require()
        if self.session_type and self.session_type != SessionType.NON_INTERACTIVE_COMMANDS:
            channel.print(f"hatchway: the agent runs a {self.session_type} session\n")
        if self._in is None:
            self._end_of_input()
            return
        self._start_pump()

    def _end_of_input(self) -> None:
        channel = self._require()
        if channel.hatchway_agent:
            channel.send_flag(END_OF_INPUT)


def stdin_or_none(fd: int = 0) -> int | None:
    """``fd`` if it is open, else None (a command started with stdin closed)."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd
