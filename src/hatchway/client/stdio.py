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

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.session import END_OF_INPUT
from hatchway.client.streams import StreamHandler
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, Extensions

__all__ = ["StdioHandler"]


class StdioHandler(StreamHandler):
    """Relays stdin and stdout to the agent's TCP connection, byte for byte."""

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=False, no_payload_digest=True
    )
    ended_status: int | None = ExitStatus.OK

    def __init__(self, *, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
        super().__init__(stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=None)

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._stop()

    def start(self) -> None:
        self._start_pump()

    def _end_of_input(self) -> None:
        channel = self._require()
        if channel.hatchway_agent:
            channel.send_flag(END_OF_INPUT)
        else:
            channel.terminate()
