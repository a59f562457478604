"""One WebSocket abstraction for every end of every channel (no I/O library imported here).

:class:`Socket` is what the gateway, the control channels, the agent's sessions and the client
session program against; tests provide in-memory sockets with the same shape
(``tests/fakes.py``). The adapters: ``transport/aiohttp_socket.py`` (aiohttp, for the server)
and ``transport/sansio_socket.py`` (websockets' sans-I/O layer, for the CLI, which must not pay
for importing aiohttp, and the agent).

Every socket has one writer, a bounded send (a peer that does not read within
:data:`SEND_TIMEOUT` is aborted, so it cannot hold up anybody else) and a bounded, idempotent
close (:data:`CLOSE_TIMEOUT`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from hatchway.protocol.closecodes import CloseCode

__all__ = ["CLOSE_TIMEOUT", "SEND_TIMEOUT", "Socket", "TextSocket"]

#: Seconds a peer may take to take one message off our hands before it counts as stalled.
SEND_TIMEOUT = 10.0
#: Seconds a close handshake may take before the connection is simply dropped.
CLOSE_TIMEOUT = 2.0


class Socket(Protocol):
    """An open WebSocket carrying binary frames.

    ``send`` never raises for a connection that is gone: it returns False, and the reader
    (iteration) notices the close. Iteration yields binary messages until the connection
    closes; ``close_code``/``close_reason`` then say why.
    """

    label: str

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    async def send(self, data: bytes) -> bool:
        """Send one binary message; False if the connection is gone or stalled (aborted)."""
        ...

    def send_now(self, frames: Sequence[bytes]) -> bool:
        """Send without yielding to the event loop if the socket can; False: use ``send``."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        """Hand every binary message to ``handler``, in order, until the connection closes
        (as iterating would end).

        A socket that can calls ``handler`` from the callback that parsed the message, with
        no task switch per message (the keystroke path: benchmarks/README.md, "Keystroke
        echo: what was measured"); others iterate. ``handler`` must not block. An exception
        it raises drops the connection and is raised here.
        """
        ...

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close once (later calls do nothing), within a bounded time."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        ...


class TextSocket(Socket, Protocol):
    """A server's end of a client's data channel, whose first message is text: the
    ``OpenDataChannelInput`` (docs/protocol.md §3.1)."""

    async def receive_text(self) -> str:
        """The next message, which must be text; the caller bounds the wait.

        Raises:
            RemoteProtocolError: the message is binary.
            ChannelClosed: the connection closed first.
        """
        ...
