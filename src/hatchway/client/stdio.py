"""A Port session in stdio mode (``hatchway ssh-proxy``, ``AWS-StartSSHSession``).

docs/protocol.md §8.2: a Port session whose properties have no ``type`` carries one TCP
connection as raw bytes: stdin → Output frames, Output → stdout, no terminal handling. At the
end of stdin the agent is told the client's direction is over: a Hatchway agent gets Flag
:data:`~hatchway.client.session.END_OF_INPUT` (it half-closes the destination connection and
the session ends when the destination closes its side); AWS's agent gets Flag
TerminateSession, as AWS's plugin ends the session then. A session the server ends normally
exits 0, as AWS's plugin does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.session import END_OF_INPUT
from hatchway.client.streams import InputPump, write_all
from hatchway.protocol.frames import PayloadType
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions

if TYPE_CHECKING:
    from hatchway.client.session import ClientSession

__all__ = ["StdioHandler"]


class StdioHandler:
    """Relays stdin and stdout to the agent's TCP connection, byte for byte."""

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=False, no_payload_digest=True
    )
    ended_status: int | None = ExitStatus.OK

    def __init__(self, *, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
        self._in = stdin_fd
        self._out = stdout_fd
        self._channel: ClientSession | None = None
        self._pump: InputPump | None = None

    def bind(self, channel: ClientSession) -> None:
        self._channel = channel

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self._pump is not None:
                self._pump.close()

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        pass

    def start(self) -> None:
        channel = self._require()
        self._pump = InputPump(
            self._in,
            may_read=channel.window_open,
            on_data=lambda data: channel.send(PayloadType.OUTPUT, data),
            on_eof=self._end_of_input,
            spawn=channel.spawn,
        )
        self._pump.resume()

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.OUTPUT:
            write_all(self._out, payload)

    def on_window(self) -> None:
        if self._pump is not None:
            self._pump.resume()

    def _require(self) -> ClientSession:
        assert self._channel is not None, "bind() first"
        return self._channel

    def _end_of_input(self) -> None:
        channel = self._require()
        if channel.hatchway_agent:
            channel.send_flag(END_OF_INPUT)
        else:
            channel.terminate()
