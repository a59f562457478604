"""Local standard streams during a session: reading stdin with backpressure, writing output.

:class:`InputPump` reads a file descriptor while the session's send window has room and stops
when it is full (the agent's acknowledgements start it again), so a fast local producer never
makes the client buffer more than the window; it reads terminals, pipes and sockets through the
event loop and regular files (which epoll cannot watch) from a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hatchway.protocol.frames import PayloadType

if TYPE_CHECKING:
    from hatchway.client.session import ClientSession

__all__ = ["InputPump", "StreamHandler", "write_all"]

READ_CHUNK = 65536


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, waiting for a non-blocking one to take it.

    A slow reader of ``fd`` thus holds up the session's event loop, which then stops reading
    the data channel: the server's and in the end the agent's sends wait (backpressure).
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class InputPump:
    """Reads ``fd`` in chunks of up to ``chunk`` bytes and hands them to ``on_data``; calls
    ``on_eof`` once at end of input (or a read error).

    Args:
        fd: what to read (not closed here).
        may_read: whether a chunk may be read now (the send window has room).
        on_data: takes each chunk read.
        on_eof: called once when the input ends.
        spawn: runs the reading task for a file that cannot be polled.
    """

    def __init__(
        self,
        fd: int,
        *,
        may_read: Callable[[], bool],
        on_data: Callable[[bytes], None],
        on_eof: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        chunk: int = READ_CHUNK,
    ) -> None:
        self._fd = fd
        self._may_read = may_read
        self._on_data = on_data
        self._on_eof = on_eof
        self._spawn = spawn
        self._chunk = chunk
        self._open = True
        self._reading = False
        self._file_reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def open(self) -> bool:
        """True until end of input (or :meth:`close`)."""
        return self._open

    def resume(self) -> None:
        """Read (again) if the input is open and :attr:`may_read` allows it; idempotent."""
        if self._reading or not self._open or not self._may_read():
            return
        self._reading = True
        if self._file_reader is not None:
            self._wake.set()
            return
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(self._fd, self._on_readable)
        except PermissionError:  # a regular file (or /dev/null): epoll cannot watch it
            self._wake.set()
            self._file_reader = self._spawn(self._read_file())

    def pause(self) -> None:
        if self._reading and self._file_reader is None:
            with contextlib.suppress(ValueError, OSError):  # the loop may be closing
                asyncio.get_running_loop().remove_reader(self._fd)
        self._reading = False
        self._wake.clear()

    def close(self) -> None:
        """Stop reading for good (no :attr:`on_eof`)."""
        self.pause()
        self._open = False
        if self._file_reader is not None:
            self._file_reader.cancel()

    def _on_readable(self) -> None:
        if not self._may_read():
            self.pause()  # backpressure until acknowledgements open the window
            return
        try:
            data = os.read(self._fd, self._chunk)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._deliver(data)

    async def _read_file(self) -> None:
        """Read an input that cannot be polled; such a file never blocks a read for long."""
        while self._open:
            await self._wake.wait()
            if not self._may_read():
                self.pause()
                continue
            try:
                data = os.read(self._fd, self._chunk)
            except OSError:
                data = b""
            self._deliver(data)
            await asyncio.sleep(0)  # let received frames (acknowledgements) in

    def _deliver(self, data: bytes) -> None:
        if data:
            self._on_data(data)
            return
        self.pause()
        if self._open:
            self._open = False
            self._on_eof()


class StreamHandler:
    """What the handlers that relay local streams share: the session they are bound to, the
    stdin pump (read while the send window has room, resumed when it opens) and the output
    written to local file descriptors. A subclass says what the end of input means.

    Args:
        stdin_fd: read and sent as Output.
        stdout_fd: where Output goes.
        stderr_fd: where StdErr goes; None drops StdErr.
    """

    def __init__(self, *, stdin_fd: int | None, stdout_fd: int, stderr_fd: int | None) -> None:
        self._in = stdin_fd
        self._out = stdout_fd
        self._err = stderr_fd
        self._channel: ClientSession | None = None
        self._pump: InputPump | None = None

    def bind(self, channel: ClientSession) -> None:
        self._channel = channel

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        pass

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.OUTPUT:
            write_all(self._out, payload)
        elif payload_type == PayloadType.STDERR and self._err is not None:
            write_all(self._err, payload)

    def on_window(self) -> None:
        if self._pump is not None:
            self._pump.resume()

    def _require(self) -> ClientSession:
        assert self._channel is not None, "bind() first"
        return self._channel

    def _start_pump(self) -> None:
        """Start reading stdin (``stdin_fd`` must not be None)."""
        assert self._in is not None
        channel = self._require()
        self._pump = InputPump(
            self._in,
            may_read=channel.window_open,
            on_data=self._input,
            on_eof=self._end_of_input,
            spawn=channel.spawn,
        )
        self._pump.resume()

    def _stop(self) -> None:
        if self._pump is not None:
            self._pump.close()

    def _input(self, data: bytes) -> None:
        self._require().send(PayloadType.OUTPUT, data)

    def _end_of_input(self) -> None:
        raise NotImplementedError
