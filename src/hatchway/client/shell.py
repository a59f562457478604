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
from typing import TYPE_CHECKING, Any

from hatchway.client.streams import InputPump, write_all
from hatchway.client.terminal import raw_mode, window_size
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions
from hatchway.protocol.payloads import SizePayload

if TYPE_CHECKING:
    from hatchway.client.session import ClientSession

__all__ = ["EOT", "ShellHandler"]

EOT = b"\x04"


class ShellHandler:
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
        self._in = stdin_fd
        self._out = stdout_fd
        self._err = stderr_fd
        self._interactive = os.isatty(stdin_fd)
        self._channel: ClientSession | None = None
        self._pump: InputPump | None = None
        self._eot_sent = False
        self._last_size: tuple[int, int] | None = None

    def bind(self, channel: ClientSession) -> None:
        self._channel = channel

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        """Raw mode and resize notifications for a terminal; stop reading stdin on the way
        out."""
        with contextlib.ExitStack() as stack:
            if self._interactive:
                stack.enter_context(raw_mode(self._in))
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGWINCH, self._send_size)
                stack.callback(loop.remove_signal_handler, signal.SIGWINCH)
            stack.callback(self._stop)
            yield

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        pass

    def start(self) -> None:
        channel = self._require()
        self._pump = InputPump(
            self._in,
            may_read=channel.window_open,
            on_data=self._input,
            on_eof=self._end_of_input,
            spawn=channel.spawn,
        )
        self._send_size()  # before the first input: the agent starts the shell on it
        self._pump.resume()

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.OUTPUT:
            write_all(self._out, payload)
        elif payload_type == PayloadType.STDERR:
            write_all(self._err, payload)

    def on_window(self) -> None:
        if self._pump is not None:
            self._pump.resume()

    def _require(self) -> ClientSession:
        assert self._channel is not None, "bind() first"
        return self._channel

    def _stop(self) -> None:
        if self._pump is not None:
            self._pump.close()

    def _send_size(self) -> None:
        channel = self._require()
        if not channel.started:
            return
        size = window_size(self._in if self._interactive else self._out)
        if size == self._last_size:
            return
        self._last_size = size
        channel.send(PayloadType.SIZE, SizePayload(cols=size[1], rows=size[0]).to_json())

    def _input(self, data: bytes) -> None:
        self._require().send(PayloadType.OUTPUT, data)

    def _end_of_input(self) -> None:
        if not self._eot_sent:  # end of input: one end-of-transmission, then wait
            self._eot_sent = True
            self._require().send(PayloadType.OUTPUT, EOT)
