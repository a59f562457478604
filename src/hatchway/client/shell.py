"""The terminal over a session: ``Standard_Stream`` and ``InteractiveCommands``
(docs/protocol.md §8.1).

Raw mode for the whole session, the window size before the first input and on every resize,
stdin as Output frames, Output to stdout and StdErr to stderr. Piped input ends with one
end-of-transmission (0x04), after which the client waits for the session to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

from hatchway.client.streams import StreamHandler
from hatchway.client.terminal import raw_mode, window_size
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions
from hatchway.protocol.payloads import SizePayload

__all__ = ["EOT", "ShellHandler"]

EOT = b"\x04"


class ShellHandler(StreamHandler):
    """Relays a terminal (or piped stdin) to a remote shell.

    Args:
        stdin_fd, stdout_fd, stderr_fd: the terminal. With a terminal on ``stdin_fd`` the
            session runs it in raw mode and follows its size; otherwise stdin is piped input,
            ended with one end-of-transmission.
    """

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True, no_payload_digest=True
    )
    ended_status: int | None = None

    def __init__(self, *, stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2) -> None:
        super().__init__(stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd)
        self._tty = stdin_fd
        self._interactive = os.isatty(stdin_fd)
        self._eot_sent = False
        self._last_size: tuple[int, int] | None = None

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        """Raw mode and resize notifications for a terminal; stop reading stdin on the way
        out."""
        with contextlib.ExitStack() as stack:
            if self._interactive:
                stack.enter_context(raw_mode(self._tty))
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGWINCH, self._send_size)
                stack.callback(loop.remove_signal_handler, signal.SIGWINCH)
            stack.callback(self._stop)
            yield

    def start(self) -> None:
        self._send_size()  # before the first input: the agent starts the shell on it
        self._start_pump()

    def _send_size(self) -> None:
        channel = self._require()
        if not channel.started:
            return
        size = window_size(self._tty if self._interactive else self._out)
        if size == self._last_size:
            return
        self._last_size = size
        channel.send(PayloadType.SIZE, SizePayload(cols=size[1], rows=size[0]).to_json())

    def _end_of_input(self) -> None:
        if not self._eot_sent:  # end of input: one end-of-transmission, then wait
            self._eot_sent = True
            self._require().send(PayloadType.OUTPUT, EOT)
