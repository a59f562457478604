"""Local port forwarding over a Port session (``hatchway port-forward``,
``AWS-StartPortForwardingSession[ToRemoteHost]``; docs/protocol.md §8.2-§8.5).

Listens on a local address and carries each accepted TCP connection to the agent, which dials
the destination. The mode is chosen from the document's ``type`` and the AgentVersion as AWS's
plugin chooses it (:func:`hatchway.protocol.portmode.port_mode_for`):

* **mux**: every connection is an smux v1 stream (:class:`hatchway.protocol.smux.Mux`, the
  client end) inside the Output payload stream; any number at once. A local end-of-file sends
  FIN (the agent half-closes its destination connection) and the agent's FIN half-closes the
  local connection, so each direction ends on its own.
* **basic**: one connection at a time as raw Output; when it ends, Flag DisconnectToPort, and
  the next connection is accepted.

Backpressure both ways: a local socket is read only while the session's send window has room.
With Hatchway's agent (smux v2, ``StreamWindow`` negotiated, docs/protocol.md §8.5) each stream
also has its own credit: a connection is read only while the agent has granted room for it, and
what a local connection's socket has taken is reported to the agent as consumed, so a slow
local reader holds at most one window (1 MiB) and slows only its own stream. With AWS's agent
(smux v1), while a local connection cannot take what the agent sends (more than
:data:`WRITE_HIGH_WATER` bytes wait in its socket buffer) the agent's new frames are refused
until it drains. Flag ConnectToPortError (the agent could not dial) prints one line naming the
destination; the agent's FIN then closes that connection. Ctrl-C sends Flag TerminateSession
and exits 0, as AWS's plugin does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hatchway.client.exitstatus import ExitStatus
from hatchway.client.output import escape_controls
from hatchway.client.streams import write_all
from hatchway.errors import HatchwayError, RemoteProtocolError
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import HATCHWAY_MAX_PAYLOAD, HATCHWAY_STREAM_WINDOW, Extensions
from hatchway.protocol.payloads import decode_flag
from hatchway.protocol.portmode import (
    KEEPALIVE_INTERVAL,
    PortMode,
    client_keepalive,
    port_mode_for,
)
from hatchway.protocol.smux import (
    MAX_FRAME_DATA,
    Mux,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamWritable,
)

if TYPE_CHECKING:
    from hatchway.client.session import ClientSession

__all__ = ["WRITE_HIGH_WATER", "ListenError", "PortForwardHandler"]

#: Bytes waiting for a slow local connection before the agent's frames are refused.
WRITE_HIGH_WATER = 1024 * 1024


#: Largest read from a local connection: the mux splits it into smux frames (≤ 32 KiB) and
#: what one turn of the event loop read leaves in data-channel frames of up to the
#: negotiated payload size.
LOCAL_READ = 256 * 1024


class ListenError(HatchwayError):
    """The local address cannot be listened on (e.g. the port is in use)."""


@dataclass(eq=False)
class _Connection:
    """One accepted local connection (a stream in mux mode)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stream_id: int = 0
    local_eof: bool = False  # we finished our direction
    remote_eof: bool = False  # the agent finished its direction
    received: bool = False  # the agent sent data on it
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    written: int = 0  # bytes of the agent's data handed to the local socket (or dropped)
    draining: bool = False  # smux v2: waiting for the socket buffer to empty
    #: smux v2: set while the agent has granted credit (the stream's backlog is empty).
    credit: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.credit.set()


class PortForwardHandler:
    """Listens on ``local_address:local_port`` (0: any free port) and forwards each connection
    to what the session's document names.

    Args:
        destination: how the destination is named in messages (``host:port``).
        stdout_fd: where ``Listening on ADDRESS:PORT`` is printed once listening.
        stderr_fd: the handler's messages.
    """

    extensions = Extensions(
        max_payload_size=HATCHWAY_MAX_PAYLOAD,
        exit_code=False,
        no_payload_digest=True,
        stream_window=HATCHWAY_STREAM_WINDOW,
    )
    ended_status: int | None = ExitStatus.OK

    def __init__(
        self,
        *,
        local_address: str = "127.0.0.1",
        local_port: int = 0,
        destination: str = "the destination",
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self._address = local_address
        self._port = local_port
        self.destination = destination
        self._out = stdout_fd
        self._err = stderr_fd
        self._channel: ClientSession | None = None
        self.mode = PortMode.MUX
        self._keepalive = False
        self._mux = Mux(client=True)
        self._connections: dict[int, _Connection] = {}
        self._current: _Connection | None = None  # basic mode
        self._basic_turn = asyncio.Lock()
        self._window = asyncio.Event()
        #: Mux bytes the send window could not take yet (see ``_flush``).
        self._waiting = bytearray()
        self._flush_scheduled = False
        self._held: set[int] = set()
        self._dial_failed = False  # ConnectToPortError: the next FIN of a silent stream resets
        self._server: asyncio.Server | None = None
        self.listening: tuple[str, int] | None = None

    @classmethod
    def from_properties(
        cls, properties: Mapping[str, Any], *, stdout_fd: int = 1, stderr_fd: int = 2
    ) -> PortForwardHandler:
        """The handler a Port document's properties describe (``localPortNumber``, ``host``,
        ``portNumber``)."""
        local = str(properties.get("localPortNumber") or "0")
        try:
            port = int(local)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ListenError(f"localPortNumber {local!r} is not a port number")
        host = str(properties.get("host") or "localhost")
        destination = f"{host}:{properties.get('portNumber', '?')}"
        return cls(
            local_port=port, destination=destination, stdout_fd=stdout_fd, stderr_fd=stderr_fd
        )

    # ---- Handler --------------------------------------------------------------------------

    def bind(self, channel: ClientSession) -> None:
        self._channel = channel

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        channel = self._require()
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signal.SIGINT, channel.terminate, ExitStatus.OK)
                stack.callback(loop.remove_signal_handler, signal.SIGINT)
            stack.callback(self._close_all)
            yield

    def on_handshake(self, session_type: str, properties: Any, agent_version: str) -> None:
        props = properties if isinstance(properties, dict) else {}
        self.mode = port_mode_for(props, agent_version, client=True)
        if self.mode is PortMode.STDIO:  # not a forwarding document: one connection anyway
            self.mode = PortMode.BASIC
        self._keepalive = self.mode is PortMode.MUX and client_keepalive(agent_version)
        if self.mode is PortMode.MUX:  # no stream is open before the handshake
            self._mux = Mux(client=True, window=self._require().negotiated.stream_window)

    def start(self) -> None:
        channel = self._require()
        try:
            sock = self._listen()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            channel.print(f"hatchway: cannot listen on {self._address}:{self._port}: {reason}\n")
            channel.terminate(ExitStatus.ERROR)
            return
        host, port = sock.getsockname()[:2]
        self.listening = (host, port)
        channel.spawn(self._serve(sock))
        if self._keepalive:
            channel.spawn(self._send_nops())
        write_all(self._out, f"Listening on {host}:{port}\n".encode())
        self.on_window()

    def on_stream(self, payload_type: int, payload: bytes) -> None:
        if payload_type == PayloadType.FLAG:
            with contextlib.suppress(RemoteProtocolError):
                if decode_flag(payload) == FlagValue.CONNECT_TO_PORT_ERROR:
                    self._dial_failed = True
                    self._print(f"hatchway: the node could not connect to {self.destination}\n")
            return
        if payload_type != PayloadType.OUTPUT:
            return
        if self.mode is PortMode.BASIC:
            if self._current is not None and not self._current.closed.is_set():
                self._write(self._current, payload)
            return
        try:
            events = self._mux.receive(payload)
        except RemoteProtocolError as exc:
            self._print(f"hatchway: port forwarding failed: {exc.message}\n")
            self._require().terminate(ExitStatus.ERROR)
            return
        for event in events:
            if isinstance(event, StreamData):
                conn = self._connections.get(event.stream_id)
                if conn is not None:
                    conn.received = True
                    self._write(conn, event.data)
            elif isinstance(event, StreamFinished):
                conn = self._connections.get(event.stream_id)
                if conn is not None:
                    conn.remote_eof = True
                    if self._dial_failed and not conn.received:
                        self._dial_failed = False
                        conn.writer.transport.abort()  # nothing behind it: reset
                        conn.closed.set()
                    self._half_close(conn)
            elif isinstance(event, StreamWritable):
                conn = self._connections.get(event.stream_id)
                if conn is not None:
                    conn.credit.set()
            elif isinstance(event, StreamOpened):  # the agent never opens streams
                self._mux.abandon(event.stream_id)
        self._flush()

    def on_window(self) -> None:
        """The send window moved: send what waits, then let the local readers go on only
        while nothing waits and another full read fits."""
        self._flush()
        channel = self._require()
        if not self._waiting and channel.window_open(MAX_FRAME_DATA):
            self._window.set()
        else:
            self._window.clear()

    # ---- listening ------------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._address, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._accepted, sock=sock)
        async with self._server:
            await asyncio.Future()  # until the session ends and cancels us

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        try:
            if self.mode is PortMode.MUX:
                await self._run_stream(conn)
            else:
                async with self._basic_turn:
                    await self._run_basic(conn)
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _run_stream(self, conn: _Connection) -> None:
        conn.stream_id = self._mux.open_stream()
        self._connections[conn.stream_id] = conn
        if self._mux.window:  # report every byte the socket has not taken (see ``_write``)
            conn.writer.transport.set_write_buffer_limits(high=0)
        self._flush()
        try:
            await self._pump(conn, lambda data: self._mux.send(conn.stream_id, data))
            conn.local_eof = True
            if self._mux.can_send(conn.stream_id):
                self._mux.finish(conn.stream_id)
                self._flush()
            self._half_close(conn)
            await conn.closed.wait()  # until the agent has finished its direction too
        finally:
            self._connections.pop(conn.stream_id, None)
            self._held.discard(conn.stream_id)
            self._release_if_drained()
            # Done, or cancelled: FIN if not sent yet, and drop (and credit) what still comes.
            self._mux.abandon(conn.stream_id)
            self._flush()

    async def _run_basic(self, conn: _Connection) -> None:
        channel = self._require()
        self._current = conn
        try:
            await self._pump(conn, lambda data: channel.send(PayloadType.OUTPUT, data))
        finally:
            self._current = None
            conn.closed.set()
            if not channel.done:
                channel.send_flag(FlagValue.DISCONNECT_TO_PORT)

    async def _pump(self, conn: _Connection, send: Any) -> None:
        """Local bytes to the agent while the send window has room, until end of file."""
        while True:
            await self._window.wait()
            await conn.credit.wait()
            try:
                data = await conn.reader.read(LOCAL_READ)
            except OSError:  # reset by the local peer
                data = b""
            if not data or conn.closed.is_set():
                return
            send(data)
            if self.mode is PortMode.MUX:
                if self._mux.backlog(conn.stream_id):
                    conn.credit.clear()  # read on once the agent grants credit
                self._flush_soon()  # reads of several connections leave as one frame
            else:
                self.on_window()

    # ---- towards local connections --------------------------------------------------------

    def _write(self, conn: _Connection, data: bytes) -> None:
        if self.mode is PortMode.MUX and self._mux.window:
            self._write_with_credit(conn, data)
            return
        if conn.writer.is_closing():
            return
        conn.writer.write(data)
        if conn.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            self._held.add(conn.stream_id)
            self._require().hold(True)
            self._require().spawn(self._drain(conn))

    def _write_with_credit(self, conn: _Connection, data: bytes) -> None:
        """smux v2: write, and report as consumed what the socket took; a reader that lags
        keeps the rest in its buffer and the agent's credit for the stream runs out."""
        conn.written += len(data)
        if not conn.writer.is_closing():
            conn.writer.write(data)
        buffered = self._report_consumed(conn)
        if buffered and not conn.draining:
            conn.draining = True
            self._require().spawn(self._drain_credit(conn))
        if buffered > self._mux.window + WRITE_HIGH_WATER:  # the agent overran its credit
            self._held.add(conn.stream_id)
            self._require().hold(True)

    def _report_consumed(self, conn: _Connection) -> int:
        """Tell the mux what the local socket took; return what it still buffers."""
        transport = conn.writer.transport
        buffered = 0 if transport.is_closing() else transport.get_write_buffer_size()
        self._mux.consumed(conn.stream_id, conn.written - buffered)
        return buffered

    async def _drain_credit(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError):
            await conn.writer.drain()
        conn.draining = False
        self._report_consumed(conn)
        self._flush()
        self._held.discard(conn.stream_id)
        self._release_if_drained()

    async def _drain(self, conn: _Connection) -> None:
        with contextlib.suppress(OSError):
            await conn.writer.drain()
        self._held.discard(conn.stream_id)
        self._release_if_drained()

    def _release_if_drained(self) -> None:
        if not self._held and self._channel is not None:
            self._channel.hold(False)

    def _half_close(self, conn: _Connection) -> None:
        """Pass the agent's end of file on; once both directions ended, close."""
        if conn.remote_eof and not conn.writer.is_closing():
            with contextlib.suppress(OSError):
                if conn.writer.can_write_eof():
                    conn.writer.write_eof()
        if conn.remote_eof and (conn.local_eof or conn.writer.is_closing()):
            conn.closed.set()

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if self._channel is not None:
            self.on_window()  # flushes, then opens or closes the readers' window

    def _flush(self) -> None:
        """Hand the mux's bytes to the data channel as far as its send window takes them;
        the rest waits in ``_waiting`` (at most one read per connection beyond the window, since
        readers wait while anything waits) until :meth:`on_window`."""
        self._waiting += self._mux.data_to_send()
        channel = self._channel
        if channel is None or channel.done:
            return
        piece_size = channel.endpoint.max_payload_size
        while self._waiting:
            piece = bytes(self._waiting[:piece_size])
            if not channel.window_open(len(piece)):
                self._window.clear()
                return
            del self._waiting[: len(piece)]
            channel.send(PayloadType.OUTPUT, piece)

    async def _send_nops(self) -> None:
        """smux keepalive for an agent that expects it (docs/protocol.md §8.5)."""
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            self._mux.nop()
            self._flush()

    def _close_all(self) -> None:
        for conn in list(self._connections.values()):
            conn.writer.close()
            conn.closed.set()
        if self._server is not None:
            self._server.close()

    def _require(self) -> ClientSession:
        assert self._channel is not None, "bind() first"
        return self._channel

    def _print(self, text: str) -> None:
        write_all(self._err, escape_controls(text.rstrip("\n")).encode() + b"\n")
