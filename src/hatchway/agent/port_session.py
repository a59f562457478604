"""``Port`` sessions on the agent: a TCP relay to ``host:portNumber`` (docs/protocol.md §8.2, §8.4).

The destination is the document's ``host`` (default ``localhost``) and ``portNumber``. The name
is resolved by the agent and every address is checked against :data:`DENIED` (the cloud
metadata, DNS and NTP link-local addresses AWS's agent refuses, IPv4-mapped forms included)
before anything is dialled; the addresses are then tried in turn.

The mode comes from :func:`hatchway.protocol.portmode.port_mode_for` with the handshake's
ClientVersion (nothing on the wire announces it):

* **stdio** (no ``type``: AWS-StartSSHSession): one connection, dialled at the start. Its EOF
  ends the session successfully; Hatchway's Flag ``END_OF_INPUT`` (4) half-closes it.
* **basic** (LocalPortForwarding, old client): one connection at a time, dialled on the first
  data; Flag DisconnectToPort (1) closes it and the next data dials again.
* **mux** (LocalPortForwarding): smux v1 (:class:`hatchway.protocol.smux.Mux`, the agent is the
  server) over the Output stream; each stream is one connection. A failed dial sends Flag
  ConnectToPortError (3) and FINs that stream only; the peer's FIN half-closes the connection
  (``SHUT_WR``) and the destination's EOF FINs the stream; a reset FINs that stream only.
  Keepalive NOPs only for clients that expect them (``portmode.agent_keepalive``).

Backpressure and memory bound per connection (docs/protocol.md §8.5). Destination → client:
bytes go through one staging queue into the endpoint as its send window allows; every
destination socket stops being read while the queue holds more than :data:`STAGING_HIGH`
bytes, so each connection adds at most one socket read (asyncio reads ≤ 256 KiB) beyond that,
plus its share of the endpoint's own send buffer (8 MiB per session).

Client → destination, with Hatchway's client (smux v2, ``StreamWindow`` negotiated): per-stream
credit. What the destination socket has taken counts as consumed, and the client never has more
than the window (1 MiB) of a stream unconsumed, so a slow destination holds at most that in its
socket buffer and slows only its own stream; a destination that is not read also stops the
stream's other direction only once the client's credit runs out. A peer that overruns the
window by :data:`WRITE_HIGH` is held like a v1 peer.

With AWS's plugin (smux v1): a connection whose socket buffer passes :data:`WRITE_HIGH`
(asyncio's ``pause_writing``), or that holds more than :data:`WRITE_HIGH` before its dial
finished, makes the agent refuse (not acknowledge) further input until it drains, so a
connection holds at most :data:`WRITE_HIGH` plus the frames delivered with the one that crossed
the mark; a slow destination stalls the whole session's input, as it does in AWS's agent.

Every connection is recorded (destination, opened/closed, bytes each way, error) and logged
when it closes; closed connections are handed to ``report`` (the agent sends
``hatchway_connections``) in batches at most :data:`REPORT_INTERVAL` apart while the session
runs, and whatever is left (connections still open included) when it ends. Only the latest
:data:`KEPT_CONNECTIONS` records stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from hatchway.agent.dialer import SocketDialer
from hatchway.agent.session import (
    DEFAULT_TIMINGS,
    END_OF_INPUT,
    Completion,
    DataChannelSession,
    SessionTimings,
)
from hatchway.errors import HatchwayError, RemoteProtocolError
from hatchway.protocol.controlchannel import ConnectionRecord
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.payloads import AgentTaskPayload, encode_flag
from hatchway.protocol.portmode import (
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    PortMode,
    agent_keepalive,
    port_mode_for,
)
from hatchway.protocol.smux import Mux, StreamData, StreamFinished, StreamOpened, StreamWritable

__all__ = ["DENIED", "STAGING_HIGH", "WRITE_HIGH", "DestinationRefused", "PortSession"]

log = logging.getLogger(__name__)

#: Addresses no port session may reach (docs/protocol.md §8.2; AWS's agent's deny list).
DENIED: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254", "169.254.169.253", "169.254.169.123", "169.254.169.250",
        "169.254.169.251", "fd00:ec2::254", "fd00:ec2::253", "fd00:ec2::123", "fd00:ec2::240",
    )
)  # fmt: skip
STAGING_HIGH: Final = 256 * 1024
WRITE_HIGH: Final = 1024 * 1024
DIAL_TIMEOUT: Final = 10.0
#: Seconds between reports of closed connections while the session runs.
REPORT_INTERVAL: Final = 1.0
#: Connection records a session keeps in memory (the reported ones are in the server's store).
KEPT_CONNECTIONS: Final = 1000

Report = Callable[[str, list[ConnectionRecord]], Awaitable[None]]


class DestinationRefused(HatchwayError):
    """The destination may not or cannot be reached; the message names it."""


async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """The socket addresses of ``host:port``, refused if any is on the deny list.

    Raises:
        DestinationRefused: not resolvable, or a denied address.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DestinationRefused(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip in DENIED or (mapped is not None and mapped in DENIED):
            raise DestinationRefused(f"{host}:{port} is not allowed (a link-local service)")
        addresses.append((family, sockaddr))
    return addresses


@dataclass
class _Conn:
    """One destination connection and what it carried."""

    destination: str
    opened: float
    stream_id: int = 0  # mux only
    transport: asyncio.Transport | None = None
    pending: bytearray | None = None  # client data that came before the dial finished
    bytes_in: int = 0  # destination → client
    bytes_out: int = 0  # client → destination
    error: str = ""
    closed: float | None = None
    peer_finished: bool = False  # the client will send no more (FIN / END_OF_INPUT)
    dest_finished: bool = False  # the destination will send no more (EOF)
    write_blocked: bool = False
    credit_paused: bool = False  # smux v2: not read until the client grants credit
    reported: bool = False

    def record(self) -> ConnectionRecord:
        return ConnectionRecord.create(
            destination=self.destination,
            opened=self.opened,
            closed=self.closed,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            error=self.error,
        )


class _Protocol(asyncio.Protocol):
    def __init__(self, session: PortSession, conn: _Conn) -> None:
        self._session = session
        self._conn = conn

    def data_received(self, data: bytes) -> None:
        self._session._from_destination(self._conn, data)

    def eof_received(self) -> bool:
        self._session._destination_eof(self._conn)
        return True  # keep the socket open for writing (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._destination_lost(self._conn, exc)

    def pause_writing(self) -> None:
        self._conn.write_blocked = True
        self._session._write_paused(self._conn)

    def resume_writing(self) -> None:
        self._conn.write_blocked = False
        self._session._write_resumed(self._conn)


class PortSession(DataChannelSession):
    """Runs one ``Port`` session to its end (see the module docstring)."""

    session_type = SessionType.PORT

    def __init__(
        self,
        task: AgentTaskPayload,
        dialer: SocketDialer,
        complete: Completion,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timings: SessionTimings = DEFAULT_TIMINGS,
        *,
        report: Report | None = None,
    ) -> None:
        super().__init__(task, dialer, complete, clock, monotonic, timings)
        self._report = report
        self.mode: PortMode | None = None
        #: The latest connections, in order of opening.
        self.connections: deque[_Conn] = deque(maxlen=KEPT_CONNECTIONS)
        self._unreported: list[_Conn] = []  # closed, not yet handed to ``report``
        self._reporting: asyncio.Task[None] | None = None
        self._open: dict[int, _Conn] = {}  # by stream id (0 for stdio and basic)
        self._staging: deque[tuple[int, bytes]] = deque()
        self._staged = 0
        self._push_scheduled = False
        self._reading_paused = False
        self._mux: Mux | None = None
        self._ended = asyncio.Event()  # stdio: the destination ended the session
        self._end: tuple[str, str] = ("Success", "")
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_heard = 0.0
        self.host = str(self.properties.get("host") or "localhost")
        self.port = 0

    def _handshake_properties(self) -> Any:
        return self.properties

    # ---- the session -----------------------------------------------------------------------

    async def _work(self) -> tuple[str, str]:
        raw = str(self.properties.get("portNumber", "")).strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise RemoteProtocolError(f"the session document names no valid port ({raw[:16]!r})")
        self.port = int(raw)
        await self._handshake()
        self.mode = port_mode_for(self.properties, self.client_version, client=False)
        log.info(
            "session %s: port %s mode to %s:%d",
            self.session_id,
            self.mode,
            self.host,
            self.port,
        )
        if self.mode is PortMode.STDIO:
            conn = self._new_conn(0)
            try:
                await self._dial(conn)
            except DestinationRefused as exc:
                return "Failed", exc.message
            await self._ended.wait()
            while self._staging:  # what the destination sent before its EOF goes first
                self._heard.clear()
                self._push()
                if self._staging:
                    await self._heard.wait()
            await self._finish(None)
            return self._end
        if self.mode is PortMode.MUX:
            self._mux = Mux(client=False, window=self._extensions.stream_window)
            if agent_keepalive(self.client_version):
                self._last_heard = self._now()
                await self._keepalive()  # returns only when the client went quiet
                return "Failed", "the client stopped answering keepalives"
        await asyncio.Event().wait()  # until the client, the server or the agent ends it
        raise AssertionError("unreachable")

    async def _keepalive(self) -> None:
        while self._now() - self._last_heard < KEEPALIVE_TIMEOUT:
            assert self._mux is not None
            self._mux.nop()
            self._stage_mux()
            await asyncio.sleep(KEEPALIVE_INTERVAL)

    async def _stop_work(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._open.values()):
            if conn.transport is not None:
                conn.transport.abort()
            else:
                self._closed(conn, conn.error or "the session ended")

    async def _work_gone(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        if self._reporting is not None:
            self._reporting.cancel()
        left = [c for c in self.connections if c.closed is None]
        await self._send_reports([*self._unreported, *left])
        self._unreported.clear()

    def _report_soon(self, conn: _Conn) -> None:
        if self._report is None:
            return
        self._unreported.append(conn)
        if self._reporting is None or self._reporting.done():
            self._reporting = asyncio.get_running_loop().create_task(self._report_later())

    async def _report_later(self) -> None:
        await asyncio.sleep(REPORT_INTERVAL)
        batch, self._unreported = self._unreported, []
        await asyncio.shield(self._send_reports(batch))  # the session's end must not lose it

    async def _send_reports(self, conns: list[_Conn]) -> None:
        todo = [c for c in conns if not c.reported]
        for conn in todo:
            conn.reported = True
        if todo and self._report is not None:
            with contextlib.suppress(Exception):  # best effort: the log has every connection
                await self._report(self.session_id, [c.record() for c in todo])

    # ---- connections -----------------------------------------------------------------------

    def _new_conn(self, stream_id: int) -> _Conn:
        conn = _Conn(f"{self.host}:{self.port}", self._clock(), stream_id, pending=bytearray())
        self.connections.append(conn)
        self._open[stream_id] = conn
        return conn

    def _spawn_dial(self, conn: _Conn) -> None:
        task = asyncio.get_running_loop().create_task(self._dial_or_refuse(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial_or_refuse(self, conn: _Conn) -> None:
        try:
            await self._dial(conn)
        except Exception as exc:  # a task boundary: this connection fails, not the session
            if isinstance(exc, DestinationRefused):
                log.info("session %s: %s", self.session_id, exc.message)
            else:
                log.exception("session %s: dialling %s failed", self.session_id, conn.destination)
                self._closed(conn, "the agent could not connect")
            if self._mux is not None:
                self._stage(PayloadType.FLAG, encode_flag(FlagValue.CONNECT_TO_PORT_ERROR))
                self._mux.abandon(conn.stream_id)
                self._stage_mux()
            self._push()

    async def _dial(self, conn: _Conn) -> None:
        """Connect ``conn`` to the destination; on failure it is closed with the reason.

        Raises:
            DestinationRefused: the destination is denied, unknown or refused every address.
        """
        loop = asyncio.get_running_loop()
        try:
            addresses = await resolve(self.host, self.port)
            last: OSError | None = None
            for family, sockaddr in addresses:
                try:
                    async with asyncio.timeout(DIAL_TIMEOUT):
                        transport, _ = await loop.create_connection(
                            lambda: _Protocol(self, conn), sockaddr[0], sockaddr[1], family=family
                        )
                    break
                except (OSError, TimeoutError) as exc:
                    last = exc if isinstance(exc, OSError) else OSError("timed out")
            else:
                # asyncio words a refused connect "Connect call failed (addr)": the errno says it.
                reason = "no address"
                if last is not None:
                    reason = os.strerror(last.errno) if last.errno else str(last)
                raise DestinationRefused(f"cannot connect to {conn.destination}: {reason.lower()}")
        except DestinationRefused as exc:
            self._closed(conn, exc.message)
            raise
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        conn.transport = transport = cast(asyncio.Transport, transport)
        if conn.closed is not None:  # given up while dialling (basic: DisconnectToPort)
            transport.close()
            return
        # With credit, every byte the kernel has not taken is reported (pause_writing at once,
        # resume_writing when drained); without, only a full buffer matters.
        transport.set_write_buffer_limits(high=0 if self._credit else WRITE_HIGH)
        if self._reading_paused or conn.credit_paused:
            transport.pause_reading()
        pending, conn.pending = conn.pending, None
        if pending:
            transport.write(bytes(pending))
        if conn.peer_finished and transport.can_write_eof():
            transport.write_eof()
        if self._credit:
            # What waited for the dial is consumed now: the client may be out of credit and
            # waiting for exactly this update, with nothing else to make us send it.
            self._report_consumed(conn)
            self._stage_mux()
            self._push()
        self._update_accepting()

    def _closed(self, conn: _Conn, error: str = "") -> None:
        if conn.closed is not None:
            return
        conn.closed = self._clock()
        conn.error = conn.error or error
        if self._open.get(conn.stream_id) is conn:
            del self._open[conn.stream_id]
        log.info(
            "session %s: connection to %s closed: %d bytes in, %d out%s",
            self.session_id,
            conn.destination,
            conn.bytes_in,
            conn.bytes_out,
            f" ({conn.error})" if conn.error else "",
        )
        self._report_soon(conn)
        self._update_accepting()

    @property
    def _credit(self) -> bool:
        """smux v2: per-stream credit with Hatchway's client."""
        return self._mux is not None and self._mux.window > 0

    def _from_destination(self, conn: _Conn, data: bytes) -> None:
        conn.bytes_in += len(data)
        if self._mux is not None:
            if self._mux.can_send(conn.stream_id):
                self._mux.send(conn.stream_id, data)
                self._stage_mux()
                if self._mux.backlog(conn.stream_id) and conn.transport is not None:
                    conn.credit_paused = True  # no credit left: read on when it comes
                    conn.transport.pause_reading()
        else:
            self._stage(PayloadType.OUTPUT, data)
        self._push_soon()

    def _push_soon(self) -> None:
        """Push once this turn of the event loop is over: reads from several destinations
        (or several reads of one) that arrive together leave as one frame, not one each."""
        if not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_push)

    def _scheduled_push(self) -> None:
        self._push_scheduled = False
        self._push()

    def _destination_eof(self, conn: _Conn) -> None:
        conn.dest_finished = True
        if self.mode is PortMode.STDIO:
            self._ended.set()  # the destination's EOF ends the session successfully
        elif self._mux is not None:
            self._mux_finish(conn)
            if conn.peer_finished and conn.transport is not None:
                conn.transport.close()
        elif conn.transport is not None:  # basic: close, re-dial on the next data
            conn.transport.close()
        self._push()

    def _destination_lost(self, conn: _Conn, exc: Exception | None) -> None:
        error = ""
        if exc is not None:
            error = f"connection to {conn.destination} lost: {exc}"
        self._closed(conn, error)
        if self.mode is PortMode.STDIO:
            if exc is not None:
                self._end = ("Failed", error)
            self._ended.set()
        elif self._mux is not None:
            self._mux.abandon(conn.stream_id)  # what the client still sends is dropped
            self._stage_mux()
        self._push()

    def _mux_finish(self, conn: _Conn) -> None:
        assert self._mux is not None
        if self._mux.can_send(conn.stream_id):
            self._mux.finish(conn.stream_id)
            self._stage_mux()

    # ---- client → destination --------------------------------------------------------------

    def _on_heard(self) -> None:
        self._last_heard = self._now()
        self._push()

    def _on_payload(self, kind: int, payload: bytes) -> None:
        if kind != PayloadType.OUTPUT or self.mode is None:
            return
        if self._mux is None:
            conn = self._open.get(0)
            if conn is None:
                if self.mode is not PortMode.BASIC:
                    return  # stdio: the connection is gone, the session ending
                conn = self._new_conn(0)
                self._spawn_dial(conn)
            self._write(conn, payload)
            return
        try:
            events = self._mux.receive(payload)
        except RemoteProtocolError as exc:
            log.warning("session %s: bad smux stream: %s", self.session_id, exc.message)
            self.cancel("the client's multiplexed stream was malformed")
            return
        for event in events:
            if isinstance(event, StreamOpened):
                self._spawn_dial(self._new_conn(event.stream_id))
            elif isinstance(event, StreamData):
                conn = self._open.get(event.stream_id)
                if conn is not None:
                    self._write(conn, event.data)
            elif isinstance(event, StreamFinished):
                conn = self._open.get(event.stream_id)
                if conn is not None:
                    self._peer_finished(conn)
            elif isinstance(event, StreamWritable):
                conn = self._open.get(event.stream_id)
                if conn is not None and conn.credit_paused:
                    conn.credit_paused = False
                    transport = conn.transport
                    if not self._reading_paused and transport and not transport.is_closing():
                        transport.resume_reading()
        self._stage_mux()
        self._push()

    def _write(self, conn: _Conn, data: bytes) -> None:
        if conn.peer_finished:
            return
        conn.bytes_out += len(data)
        if conn.transport is not None:
            if not conn.transport.is_closing():
                conn.transport.write(data)
            self._report_consumed(conn)
        elif conn.pending is not None:
            conn.pending += data
            self._update_accepting()

    def _buffered(self, conn: _Conn) -> int:
        """Client data the destination has not taken yet (socket buffer, or before the dial)."""
        if conn.transport is not None:
            return 0 if conn.transport.is_closing() else conn.transport.get_write_buffer_size()
        return len(conn.pending) if conn.pending is not None else 0

    def _report_consumed(self, conn: _Conn) -> None:
        """smux v2: tell the mux how much of the stream the destination took (it grants the
        client credit in UPD frames, staged with the next push)."""
        if self._credit:
            assert self._mux is not None
            self._mux.consumed(conn.stream_id, conn.bytes_out - self._buffered(conn))

    def _write_paused(self, conn: _Conn) -> None:
        if not self._credit:
            self._update_accepting()
        elif self._buffered(conn) > self._hold_limit():
            self._update_accepting()  # the client overran its credit

    def _write_resumed(self, conn: _Conn) -> None:
        if self._credit:
            self._report_consumed(conn)
            self._stage_mux()
            self._push()
        self._update_accepting()

    def _peer_finished(self, conn: _Conn) -> None:
        conn.peer_finished = True
        transport = conn.transport
        if transport is None or transport.is_closing():
            return  # the dial sends the EOF when it is done
        if conn.dest_finished:
            transport.close()
        elif transport.can_write_eof():
            transport.write_eof()  # shutdown(SHUT_WR); keep reading until the destination's EOF

    def _on_flag(self, value: int) -> None:
        conn = self._open.get(0)
        if conn is None or self._mux is not None:
            return
        if value == FlagValue.DISCONNECT_TO_PORT and self.mode is PortMode.BASIC:
            if conn.transport is not None:
                conn.transport.close()
            # Closed now, not when the transport says so: data right behind the flag belongs
            # to the next connection and dials it (AWS's plugin sends it at once).
            self._closed(conn)
        elif value == END_OF_INPUT and self.hatchway_peer:
            self._peer_finished(conn)

    def _hold_limit(self) -> int:
        """Bytes a connection may hold unwritten before the session refuses input."""
        return WRITE_HIGH + (self._mux.window if self._mux is not None else 0)

    def _update_accepting(self) -> None:
        limit = self._hold_limit()
        credit = self._credit
        self._set_accepting(
            not any(
                (c.write_blocked and not credit) or self._buffered(c) > limit
                for c in self._open.values()
            )
        )

    # ---- destination → client --------------------------------------------------------------

    def _stage_mux(self) -> None:
        assert self._mux is not None
        data = self._mux.data_to_send()
        if data:
            self._stage(PayloadType.OUTPUT, data)

    def _stage(self, kind: int, data: bytes) -> None:
        self._staging.append((kind, data))
        self._staged += len(data)

    def _push(self) -> None:
        """Move staged bytes into the endpoint as its window allows; pause or resume reading
        the destinations."""
        endpoint = self.endpoint
        size = endpoint.max_payload_size
        while self._staging:
            window = endpoint.send_window()
            if window <= 0:
                break
            kind, data = self._staging[0]
            if kind != PayloadType.OUTPUT:
                endpoint.send(kind, data, now=self._now())
                self._staging.popleft()
                self._staged -= len(data)
                continue
            # Consecutive Output pieces leave together, in full-size frames.
            limit = window * size
            if len(data) < limit and len(self._staging) > 1:
                parts = [data]
                total = len(data)
                for later_kind, later in itertools.islice(self._staging, 1, None):
                    if later_kind != PayloadType.OUTPUT or total >= limit:
                        break
                    parts.append(later)
                    total += len(later)
                for _ in range(len(parts) - 1):
                    self._staging.popleft()
                data = b"".join(parts)
                self._staging[0] = (kind, data)
            take = min(len(data), limit)
            endpoint.send(kind, data[:take], now=self._now())
            self._staged -= take
            if take == len(data):
                self._staging.popleft()
            else:
                self._staging[0] = (kind, data[take:])
        self._driver.flush_soon()
        pause = self._staged > STAGING_HIGH or endpoint.send_window() <= 0
        if pause != self._reading_paused:
            self._reading_paused = pause
            for conn in self._open.values():
                if conn.transport is not None and not conn.transport.is_closing():
                    if pause:
                        conn.transport.pause_reading()
                    elif not conn.credit_paused:
                        conn.transport.resume_reading()
