"""Test doubles, all in one place. Only what cannot exist here is faked.

* :class:`FakeClock` — a wall clock the test advances by hand (timestamps, CreatedDate).
  Timers run on the event loop's clock, which ``looptime`` fast-forwards in async tests
  (``@pytest.mark.looptime``).
* :class:`MemorySocket` — an in-memory :class:`hatchway.transport.socket.Socket`; two of
  them joined by :func:`socket_pair` are the two ends of one WebSocket connection. A socket
  can be made to stop reading (``stall``) to model a peer that keeps TCP open but never reads.
* :class:`MemorySessions` / :class:`MemoryStore` — the session records of
  :class:`hatchway.store.store.Store` in memory, for in-process tests of the gateway and the
  session service on a fast-forwarded loop clock (the real store answers from a thread, which
  the fast-forwarding cannot see). Same semantics as ``SessionRepository`` for what they have.
* :class:`FakeNodeStore` — the node status the control channels write, in memory (and able
  to fail like a locked database).
* :class:`FakeDialer` — the agent's dialer over in-memory sockets.
* :class:`FakeClient` — the client end of an agent's data channel: a real client ``Endpoint``
  over the sockets a :class:`FakeDialer` hands out, with no gateway in between.
* :class:`FakePoster` — a webhook receiver in memory, with scripted failures.
* :class:`MemoryNats` / :class:`MemoryBus` — a NATS server in memory and the replicas' buses
  on it (``server.cluster``): the real sealing, in-order delivery per subscription,
  request/reply and "no responders", and outages on demand.
* :func:`real_time` — lets the loop's clock follow the real one while a real process (a shell
  in a PTY) works, in a test whose clock looptime otherwise fast-forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hatchway.audit.events import AuditEvent
from hatchway.errors import ChannelClosed, RemoteProtocolError, StoreError, Unavailable
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.events import Event, StreamData
from hatchway.protocol.frames import MessageType, PayloadType, decode_frame
from hatchway.protocol.handshake import (
    ActionStatus,
    ActionType,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    ProcessedClientAction,
    answer_request,
)
from hatchway.protocol.payloads import (
    AcknowledgeContent,
    ChannelClosedPayload,
    SizePayload,
    decode_exit_code,
)
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.server.cluster.bus import Bus, BusOptions, Handler, NoResponder
from hatchway.server.cluster.envelope import Sealer
from hatchway.store.records import Session, SessionStatus, SessionToken
from hatchway.transport.channel import ChannelDriver


@dataclass
class FakeClock:
    """A clock the test advances by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_CLOSED = object()


class MemorySocket:
    """One end of an in-memory WebSocket (see :func:`socket_pair`).

    ``send`` delivers to the peer's receive queue, bounded by ``capacity`` messages: when the
    peer does not read (``stall()`` on the peer, or a slow reader), ``send`` blocks like a full
    TCP window, and gives up after ``send_timeout`` (returning False and aborting), as
    :class:`~hatchway.transport.aiohttp_socket.AiohttpSocket` does.
    """

    def __init__(self, label: str, *, capacity: int = 64, send_timeout: float = 10.0) -> None:
        self.label = label
        self.peer: MemorySocket | None = None
        self.sent: list[bytes] = []  # everything this end sent, for assertions
        #: The same, one entry per send()/send_now() call: what left in one write.
        self.writes: list[list[bytes]] = []
        self.text_sent: list[str] = []
        self._inbox: asyncio.Queue[object] = asyncio.Queue(capacity)
        self._send_timeout = send_timeout
        self._close_code: int | None = None
        self._close_reason = ""
        self._closed = False
        self._reading = asyncio.Event()
        self._reading.set()

    # -- Socket ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    async def send(self, data: bytes) -> bool:
        peer = self.peer
        if self._closed or peer is None or peer._closed:
            return False
        try:
            async with asyncio.timeout(self._send_timeout):
                await peer._inbox.put(bytes(data))
        except TimeoutError:
            self._close_code = CloseCode.STALLED
            self.abort()
            return False
        self.sent.append(bytes(data))
        self.writes.append([bytes(data)])
        return True

    def send_now(self, frames: Sequence[bytes]) -> bool:
        peer = self.peer
        if self._closed or peer is None or peer._closed:
            return False
        if peer._inbox.maxsize and peer._inbox.qsize() + len(frames) > peer._inbox.maxsize:
            return False
        for frame in frames:
            peer._inbox.put_nowait(bytes(frame))
            self.sent.append(bytes(frame))
        self.writes.append([bytes(frame) for frame in frames])
        return True

    async def deliver(self, handler: Callable[[bytes], None]) -> None:
        try:
            async for message in self:
                handler(message)
        except Exception:
            self.abort()
            raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            await self._reading.wait()
            item = await self._inbox.get()
            if item is _CLOSED:
                return
            if isinstance(item, str):
                continue  # text frames carry nothing the binary reader uses
            assert isinstance(item, bytes)
            yield item

    async def receive_text(self, timeout: float = 10.0) -> str:
        """The next message, which must be text (the client's OpenDataChannelInput), as
        :class:`~hatchway.transport.socket.TextSocket` says."""
        async with asyncio.timeout(timeout):
            await self._reading.wait()
            item = await self._inbox.get()
        if item is _CLOSED:
            raise ChannelClosed(f"{self.label} closed before its first message")
        if not isinstance(item, str):
            raise RemoteProtocolError(f"expected a text message, got {item!r:.80}")
        return item

    async def send_text(self, text: str) -> None:
        assert self.peer is not None
        self.text_sent.append(text)
        await self.peer._inbox.put(text)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._close_code = code if self._close_code is None else self._close_code
        self._close_reason = reason
        self._wake(self)
        peer = self.peer
        if peer is not None and not peer._closed:
            peer._closed = True
            peer._close_code = code
            peer._close_reason = reason
            self._wake(peer)

    def abort(self) -> None:
        """Drop the connection: both ends see it closed (code 1006, as a TCP reset shows)."""
        if self._closed:
            return
        self._closed = True
        self._wake(self)
        peer = self.peer
        if peer is not None and not peer._closed:
            peer._closed = True
            peer._close_code = 1006
            self._wake(peer)

    # -- test controls ---------------------------------------------------------------------

    def stall(self) -> None:
        """Stop reading (the process was stopped, TCP stays open): the peer's sends block."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    @staticmethod
    def _wake(sock: MemorySocket) -> None:
        # Unblock the reader even if the queue is full; order after queued data is kept.
        with_room = sock._inbox.maxsize == 0 or sock._inbox.qsize() < sock._inbox.maxsize
        if with_room:
            sock._inbox.put_nowait(_CLOSED)
        else:
            asyncio.get_running_loop().create_task(sock._inbox.put(_CLOSED))
        sock._reading.set()


def socket_pair(
    left: str = "client", right: str = "server", *, capacity: int = 64, send_timeout: float = 10.0
) -> tuple[MemorySocket, MemorySocket]:
    """Two connected in-memory sockets: what one sends, the other receives."""
    a = MemorySocket(left, capacity=capacity, send_timeout=send_timeout)
    b = MemorySocket(right, capacity=capacity, send_timeout=send_timeout)
    a.peer, b.peer = b, a
    return a, b


# ---- control channels --------------------------------------------------------------------


@dataclass
class FakeNodeStatus:
    """What ``server.control.ControlChannels`` writes about nodes, kept in memory.

    ``fail_heartbeats`` makes the next that many heartbeat (or presence batch) writes raise
    ``StoreError``, as a locked SQLite database does.
    """

    connected: dict[str, bool] = field(default_factory=dict)
    beats: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)
    fail_heartbeats: int = 0
    beat_written: asyncio.Event = field(default_factory=asyncio.Event)

    events: list[Any] = field(default_factory=list)
    """Events written with the changes (``events=``), in order."""

    replicas: dict[str, str] = field(default_factory=dict)
    """Which replica holds each node's channel (``replica=``; "" on a single server)."""

    async def mark_connected(
        self,
        instance_id: str,
        connected: bool,
        now: float,
        *,
        events: Sequence[Any] = (),
        replica: str = "",
    ) -> bool:
        if not connected and self.replicas.get(instance_id, "") != replica:
            return False  # another replica holds it now (NodeRepository.mark_connected)
        self.connected[instance_id] = connected
        self.replicas[instance_id] = replica if connected else ""
        self.events.extend(events)
        return True

    async def heartbeat(self, instance_id: str, now: float, **facts: str) -> None:
        if self.fail_heartbeats:
            self.fail_heartbeats -= 1
            raise StoreError("database write failed: OperationalError")
        self.beats.append((instance_id, now, facts))
        self.connected[instance_id] = True
        self.beat_written.set()

    async def record_presence(
        self,
        changed: Sequence[Any],
        pings: Sequence[tuple[str, float]],
        *,
        replica: str = "",
    ) -> None:
        """A batch of ``server.presence``: each node's beat is recorded as :meth:`heartbeat`
        records it (pings without facts)."""
        if self.fail_heartbeats:
            self.fail_heartbeats -= 1
            raise StoreError("database write failed: OperationalError")
        for beat in changed:
            facts = {name: getattr(beat, name) for name in beat.__slots__[2:]}
            self.beats.append((beat.instance_id, beat.at, facts))
            self.connected[beat.instance_id] = True
        for instance_id, at in pings:
            self.beats.append((instance_id, at, {}))
            self.connected[instance_id] = True
        self.beat_written.set()

    async def claim_generation(self, instance_id: str, generation: int) -> bool:
        if generation < self.generations.get(instance_id, 0):
            return False
        self.generations[instance_id] = generation
        return True


@dataclass
class FakeNodeStore:
    """A ``store.Store`` stand-in with just the nodes the control channels need."""

    nodes: FakeNodeStatus = field(default_factory=FakeNodeStatus)


class FakeDialer:
    """The agent's dialer over in-memory sockets: every ``connect`` hands the agent one end
    of a new :func:`socket_pair` and queues the other end (the server's) for the test.

    Put an exception in ``refusals`` to make the next dial fail with it.
    """

    def __init__(self) -> None:
        self.server_ends: asyncio.Queue[tuple[str, dict[str, str], MemorySocket]] = asyncio.Queue()
        self.refusals: list[BaseException] = []
        self.dials: list[str] = []
        self.closed = False

    async def connect(
        self, path_and_query: str, headers: Mapping[str, str] | None = None, *, max_size: int = 0
    ) -> MemorySocket:
        self.dials.append(path_and_query)
        if self.refusals:
            raise self.refusals.pop(0)
        agent_end, server_end = socket_pair("agent", "server")
        await self.server_ends.put((path_and_query, dict(headers or {}), server_end))
        return agent_end

    async def next_server_end(
        self, timeout: float = 30.0
    ) -> tuple[str, dict[str, str], MemorySocket]:
        async with asyncio.timeout(timeout):
            return await self.server_ends.get()

    async def close(self) -> None:
        self.closed = True


# ---- the client end of an agent's data channel --------------------------------------------

#: What a client that knows Hatchway's extensions supports (docs/protocol.md §7.6).
CLIENT_EXTENSIONS = Extensions(max_payload_size=65536, exit_code=True)
#: What AWS's session-manager-plugin announces (docs/protocol.md §7.7).
AWS_PLUGIN_VERSION = "1.2.677.0"


def aws_plugin_response(
    request: HandshakeRequest, version: str = AWS_PLUGIN_VERSION
) -> HandshakeResponse:
    """The HandshakeResponse of AWS's plugin: SessionType done, any action it does not know
    answered with ActionStatus 0 and ActionResult 3 (docs/protocol.md §7.4)."""
    actions = tuple(
        ProcessedClientAction(action.action_type, ActionStatus.SUCCESS, None)
        if action.action_type == ActionType.SESSION_TYPE
        else ProcessedClientAction(action.action_type, 0, 3)
        for action in request.requested_client_actions
    )
    return HandshakeResponse(version, actions, None)


class FakeClient:
    """The client end of an agent's data channel, for in-process tests of the agent's sessions.

    A real client :class:`Endpoint`, driven by a :class:`ChannelDriver` (its timers on the
    loop's clock), over the server ends a :class:`FakeDialer` hands out. There is no gateway in
    between: what the agent sends arrives here and the other way round, and control messages
    the gateway would send (``channel_closed``, ``pause_publication``…) are sent by the test
    (:meth:`control`). It delivers and acknowledges as Hatchway's client does, or, with
    ``aws_plugin``, answers the handshake as AWS's plugin does and drops a duplicate frame
    without acknowledging it (docs/protocol.md §6.3, §12).

    Test controls: :meth:`hold` stops taking in what arrives (nothing is delivered or
    acknowledged, as with a terminal that does not keep up) until :meth:`release`;
    :meth:`drop` cuts the connection, and whatever was on its way is lost; :meth:`accept`
    takes the agent's next connection.
    """

    def __init__(
        self,
        dialer: FakeDialer,
        *,
        aws_plugin: bool = False,
        plugin_version: str = AWS_PLUGIN_VERSION,
        extensions: Extensions = CLIENT_EXTENSIONS,
    ) -> None:
        self.plugin_version = plugin_version
        self.endpoint = Endpoint(Role.CLIENT, wall_clock=time.time)
        self.aws_plugin = aws_plugin
        self.extensions = extensions
        #: What the handshake negotiated (AWS's defaults with ``aws_plugin``).
        self.negotiated = Extensions()
        self.stream: list[StreamData] = []  # every stream payload delivered, in order
        self.output = bytearray()  # the Output payloads, joined
        self.events: list[Event] = []  # everything else the endpoint reported
        self.acks: list[AcknowledgeContent] = []  # the agent's acknowledgements
        self.socket: MemorySocket | None = None
        self._dialer = dialer
        self._driver = ChannelDriver(self.endpoint)
        self._reader: asyncio.Task[None] | None = None
        self._held: list[bytes] | None = None
        self._changed = asyncio.Event()

    # -- the connection ----------------------------------------------------------------------

    async def accept(self, timeout: float = 30.0) -> str:
        """Take the agent's next connection and resend what the agent has not acknowledged
        (the gateway's ``start_publication`` would do that); returns the dialled path."""
        path, _headers, sock = await self._dialer.next_server_end(timeout)
        self.socket = sock
        self._driver.attach(sock)
        self.endpoint.retransmit_all(self._driver.now())
        await self._driver.flush()
        self._reader = asyncio.get_running_loop().create_task(self._read(sock))
        return path

    async def drop(self) -> list[bytes]:
        """Cut the connection as a TCP reset does; returns what was held, which is lost too."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})
        sock, self.socket = self.socket, None
        if sock is not None:
            self._driver.detach(sock)
            sock.abort()
        held = self._held or []
        if self._held is not None:
            self._held = []
        return held

    async def close(self) -> None:
        await self.drop()
        await self._driver.close()

    async def _read(self, sock: MemorySocket) -> None:
        async for message in sock:
            if self._held is not None:
                self._held.append(message)
            else:
                await self.take(message)
            self._changed.set()
        self._changed.set()

    async def take(self, message: bytes, *, acknowledge: bool = True) -> None:
        """Take in one message from the agent (as if it had just arrived); with
        ``acknowledge=False`` the acknowledgements it causes are lost."""
        frame = decode_frame(message, verify_digest=False)
        if frame.message_type == MessageType.ACKNOWLEDGE:
            self.acks.append(AcknowledgeContent.from_json(frame.payload))
        elif (
            self.aws_plugin
            and frame.message_type == MessageType.OUTPUT_STREAM_DATA
            and frame.sequence_number < self.endpoint.expected_sequence_number
        ):
            return  # AWS's plugin drops a duplicate without acknowledging it
        for event in self.endpoint.receive(message, now=self._driver.now()):
            if isinstance(event, StreamData):
                self.stream.append(event)
                if event.payload_type == PayloadType.OUTPUT:
                    self.output += event.payload
            else:
                self.events.append(event)
        if not acknowledge:
            self.endpoint.data_to_send()
        await self._driver.flush()

    # -- test controls -----------------------------------------------------------------------

    def hold(self) -> None:
        """Stop taking in what arrives: nothing is delivered or acknowledged until
        :meth:`release`."""
        if self._held is None:
            self._held = []

    async def release(self) -> None:
        """Take in what was held, in order, and go on taking in what arrives."""
        while self._held:
            await self.take(self._held.pop(0))
        self._held = None
        self._changed.set()

    @property
    def held(self) -> list[bytes]:
        """The messages waiting in :meth:`hold`, oldest first."""
        return list(self._held or [])

    async def until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate()`` holds, checked whenever a message arrives."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def output_contains(self, text: bytes, timeout: float = 30.0) -> None:
        await self.until(lambda: text in self.output, timeout)

    # -- what the agent sent -----------------------------------------------------------------

    def payloads(self, payload_type: int) -> list[bytes]:
        """The delivered stream payloads of one type, in order."""
        return [data.payload for data in self.stream if data.payload_type == payload_type]

    @property
    def exit_code(self) -> int | None:
        codes = self.payloads(PayloadType.EXIT_CODE)
        return decode_exit_code(codes[-1]) if codes else None

    # -- sending -----------------------------------------------------------------------------

    async def handshake(self, timeout: float = 30.0) -> HandshakeRequest:
        """Answer the agent's HandshakeRequest, as Hatchway's client or as AWS's plugin, and
        wait for its HandshakeComplete; returns the request."""
        await self.until(lambda: bool(self.payloads(PayloadType.HANDSHAKE_REQUEST)), timeout)
        request = HandshakeRequest.from_json(self.payloads(PayloadType.HANDSHAKE_REQUEST)[0])
        if self.aws_plugin:
            response = aws_plugin_response(request, self.plugin_version)
        else:
            response, _type, _properties, negotiated = answer_request(
                request, supported=self.extensions
            )
            self.endpoint.max_payload_size = negotiated.max_payload_size
            self.negotiated = negotiated
        await self.send(PayloadType.HANDSHAKE_RESPONSE, response.to_json())
        await self.until(lambda: bool(self.payloads(PayloadType.HANDSHAKE_COMPLETE)), timeout)
        HandshakeComplete.from_json(self.payloads(PayloadType.HANDSHAKE_COMPLETE)[0])
        return request

    async def send(self, payload_type: int, data: bytes) -> None:
        """Send stream data (dropped while disconnected: resent after :meth:`accept`)."""
        self.endpoint.send(payload_type, data, now=self._driver.now())
        await self._driver.flush()

    async def send_corrupted(self, payload_type: int, data: bytes) -> uuid.UUID:
        """Send stream data whose first sending fails its payload digest (a flipped bit on
        the way); the endpoint resends it intact when its timer says so. Returns the MessageId
        of the damaged sending."""
        assert self.socket is not None
        self.endpoint.send(payload_type, data, now=self._driver.now())
        damaged: uuid.UUID | None = None
        for wire in self.endpoint.data_to_send():
            frame = decode_frame(wire)
            if frame.message_type == MessageType.INPUT_STREAM_DATA:
                damaged = frame.message_id
                wire = wire[:-1] + bytes([wire[-1] ^ 1])  # the payload's last byte
            await self.socket.send(wire)
        await self._driver.flush()  # arms the retransmission timer
        assert damaged is not None
        return damaged

    async def type(self, keys: bytes) -> None:
        await self.send(PayloadType.OUTPUT, keys)

    async def size(self, rows: int, cols: int) -> None:
        await self.send(PayloadType.SIZE, SizePayload(cols=cols, rows=rows).to_json())

    async def control(self, message_type: str, payload: bytes = b"{}") -> None:
        """Send a control message as the gateway would."""
        assert self.socket is not None
        await self.socket.send(control_frame(message_type, payload, now=time.time()))

    async def channel_closed(self, session_id: str, output: str) -> None:
        """``channel_closed``, as the server sends it when it ends the session."""
        closed = ChannelClosedPayload(
            message_id="m-1",
            created_date="0",
            destination_id="mi-0123456789abcdef0",
            session_id=session_id,
            output=output,
        )
        await self.control(MessageType.CHANNEL_CLOSED, closed.to_json())


@contextlib.asynccontextmanager
async def real_time() -> AsyncIterator[None]:
    """Let the loop's clock follow the real clock for a while, in a looptime test.

    looptime fast-forwards the loop's clock to the next timer whenever nothing is ready. A
    real process (a shell in a PTY) answers in real time, so a test waiting for it with a
    time-out on the loop's clock would time out at once. While a call in an executor is
    pending, looptime instead waits for real, moving the loop's clock by no more than the
    real time that passed: this keeps one pending for the duration of the block. Time-outs
    inside then last at least as long in real time as they say.

    Outside the block the clock is fast-forwarded again, also for the timers of the code
    under test while the process is still working: a test in which a real process runs
    throughout (tests/agent/test_shell_session.py) is better off on the real clock.
    """
    stop = threading.Event()
    pacer = asyncio.get_running_loop().run_in_executor(None, stop.wait, 600)
    try:
        yield
    finally:
        stop.set()
        await pacer


class MemorySessions:
    """Sessions and their client tokens in memory (the subset of ``SessionRepository`` the
    gateway and the session service use)."""

    def __init__(self) -> None:
        self.rows: dict[str, Session] = {}
        self.tokens: dict[str, SessionToken] = {}
        self.fail_writes = False  # make every write raise StoreError (a database outage)
        self.events: list[Any] = []  # events written with the changes (``events=``), in order
        self.audit: list[AuditEvent] = []  # audit records written with the changes

    def _check(self) -> None:
        if self.fail_writes:
            raise StoreError("database write failed: OperationalError")

    async def create(
        self,
        session: Session,
        token_hash: str,
        now: float,
        *,
        audit: Sequence[AuditEvent] = (),
        events: Sequence[Any] = (),
    ) -> None:
        self._check()
        self.rows[session.session_id] = session
        self.audit.extend(audit)
        self.events.extend(events)
        self.tokens[token_hash] = SessionToken(token_hash, session.session_id, now, None, False)

    async def get(self, session_id: str) -> Session | None:
        return self.rows.get(session_id)

    async def mark_disconnected(self, session_ids: Sequence[str]) -> int:
        self._check()
        changed = 0
        for session_id in session_ids:
            row = self.rows.get(session_id)
            if row is not None and row.status == SessionStatus.CONNECTED:
                self.rows[session_id] = replace(row, status=SessionStatus.DISCONNECTED)
                changed += 1
        return changed

    async def set_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        now: float,
        only_if: Sequence[SessionStatus] | None = None,
        exit_code: int | None = None,
        details: str | None = None,
        audit: Sequence[AuditEvent] = (),
        events: Sequence[Any] = (),
    ) -> bool:
        self._check()
        row = self.rows.get(session_id)
        if row is None or (only_if is not None and row.status not in only_if):
            return False
        self.events.extend(events)
        changes: dict[str, Any] = {"status": status}
        if not status.is_active:
            changes["end_date"] = now
            self._revoke(session_id)
        if exit_code is not None:
            changes["exit_code"] = exit_code
        if details is not None:
            changes["details"] = details
        self.rows[session_id] = replace(row, **changes)
        self.audit.extend(audit)
        return True

    async def add_bytes(self, session_id: str, bytes_in: int, bytes_out: int) -> None:
        self._check()
        row = self.rows[session_id]
        self.rows[session_id] = replace(
            row, bytes_in=row.bytes_in + bytes_in, bytes_out=row.bytes_out + bytes_out
        )

    async def describe(
        self, *, active: bool, target: str | None = None, limit: int = 200, offset: int = 0
    ) -> list[Session]:
        rows = [
            r
            for r in self.rows.values()
            if r.status.is_active == active and target in (None, r.target)
        ]
        rows.sort(key=lambda r: (-r.start_date, r.session_id))
        return rows[offset : offset + limit]

    async def active_on(self, target: str) -> list[Session]:
        return await self.describe(active=True, target=target, limit=10_000)

    async def token(self, token_hash: str) -> SessionToken | None:
        return self.tokens.get(token_hash)

    async def mark_token_used(self, token_hash: str, now: float) -> None:
        self._check()
        token = self.tokens.get(token_hash)
        if token is not None and token.first_used_at is None:
            self.tokens[token_hash] = replace(token, first_used_at=now)

    async def replace_tokens(self, session_id: str, token_hash: str, now: float) -> None:
        self._check()
        self._revoke(session_id)
        self.tokens[token_hash] = SessionToken(token_hash, session_id, now, None, False)

    def _revoke(self, session_id: str) -> None:
        for key, token in self.tokens.items():
            if token.session_id == session_id:
                self.tokens[key] = replace(token, revoked=True)


@dataclass
class MemoryStore:
    """Stands in for :class:`hatchway.store.store.Store` where only sessions are used."""

    sessions: MemorySessions = field(default_factory=MemorySessions)


def session_record(
    session_id: str,
    target: str,
    *,
    status: SessionStatus = SessionStatus.CONNECTING,
    start_date: float = 1_700_000_000.0,
    owner_id: str = "",
) -> Session:
    """A session row as StartSession writes it (by user ``owner_id``, if given)."""
    return Session(
        session_id=session_id,
        target=target,
        status=status,
        start_date=start_date,
        end_date=None,
        document_name="SSM-SessionManagerRunShell",
        owner="arn:aws:iam::123456789012:user/alice",
        reason="",
        details="",
        max_session_duration="",
        parameters={},
        run_as="",
        exit_code=None,
        bytes_in=0,
        bytes_out=0,
        owner_id=owner_id,
    )


# ---- webhooks ------------------------------------------------------------------------------


@dataclass
class Posted:
    """One webhook delivery as a receiver got it."""

    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class FakePoster:
    """Receives webhook deliveries in memory (``server.events.worker.Poster``): each URL
    answers the statuses scripted for it in turn (``None``: no answer), then 200."""

    script: dict[str, list[int | None]] = field(default_factory=dict)
    posted: list[Posted] = field(default_factory=list)
    closed: bool = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
        from hatchway.server.events.worker import PostResult

        self.posted.append(Posted(url, body, dict(headers)))
        answers = self.script.get(url) or []
        status = answers.pop(0) if answers else 200
        if status is None:
            return PostResult(None, "ClientConnectorError: connection refused")
        return PostResult(status, "" if 200 <= status < 300 else f"HTTP {status}")

    def to(self, url: str) -> list[Posted]:
        return [p for p in self.posted if p.url == url]

    async def close(self) -> None:
        self.closed = True


# ---- the cluster's NATS bus ------------------------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS's subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class MemoryNats:
    """A NATS server in memory for :class:`MemoryBus` clients: wildcard subscriptions, each
    delivered in order by a task of its own (as nats-py does), request/reply through inboxes,
    and "no responders" when nobody subscribes to a request's subject.

    ``published`` records every raw message (subject, sealed data) for tampering tests;
    :meth:`inject` publishes raw bytes as anybody on the same server could (a forger).
    """

    def __init__(self) -> None:
        self._subs: list[tuple[str, asyncio.Queue[tuple[str, bytes, str | None]]]] = []
        self.published: list[tuple[str, bytes]] = []

    def add(self, pattern: str) -> asyncio.Queue[tuple[str, bytes, str | None]]:
        queue: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue()
        self._subs.append((pattern, queue))
        return queue

    def remove(self, queue: asyncio.Queue[tuple[str, bytes, str | None]]) -> None:
        self._subs = [(p, q) for p, q in self._subs if q is not queue]

    def has_subscriber(self, subject: str) -> bool:
        return any(subject_matches(p, subject) for p, _ in self._subs)

    def inject(self, subject: str, data: bytes, reply: str | None = None) -> None:
        self.published.append((subject, data))
        for pattern, queue in self._subs:
            if subject_matches(pattern, subject):
                queue.put_nowait((subject, data, reply))


class MemoryBus(Bus):
    """A replica's :class:`~hatchway.server.cluster.bus.Bus` on a :class:`MemoryNats`: the
    same sealing and the same errors (``Unavailable`` while not connected, ``NoResponder``),
    without a NATS server. ``dropped`` lists the messages refused as not sealed for their
    subject, ``failures`` what handlers raised. :meth:`disconnect` and :meth:`reconnect`
    model an outage of NATS."""

    def __init__(
        self, nats: MemoryNats, key: bytes = b"k" * 32, *, prefix: str = "hatchway"
    ) -> None:
        super().__init__(BusOptions(servers=("memory://",), prefix=prefix), Sealer(key))
        self.nats = nats
        self.dropped: list[tuple[str, str]] = []
        self.failures: list[Exception] = []
        self._queues: list[asyncio.Queue[tuple[str, bytes, str | None]]] = []
        self._readers: list[asyncio.Task[None]] = []
        self.connected = True

    async def open(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        for queue in self._queues:
            self.nats.remove(queue)
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queues, self._readers = [], []

    def disconnect(self) -> None:
        self.connected = False
        if self.on_disconnected is not None:
            self.on_disconnected()

    def reconnect(self) -> None:
        self.connected = True
        if self.on_reconnected is not None:
            self.on_reconnected()

    async def subscribe(self, subject: str, handler: Handler, *, concurrent: bool = False) -> None:
        self._check()
        queue = self.nats.add(subject)
        self._queues.append(queue)

        async def handle(msg_subject: str, body: bytes, reply: str | None) -> None:
            try:
                await handler(msg_subject, body, reply)
            except Exception as exc:  # Bus logs it and goes on; tests look at `failures`
                self.failures.append(exc)

        async def read() -> None:
            while True:
                msg_subject, data, reply = await queue.get()
                try:
                    body = self._sealer.open(msg_subject, data)
                except RemoteProtocolError as exc:
                    self.dropped.append((msg_subject, exc.message))
                    continue
                if concurrent:  # a task per message, as Bus does
                    task = asyncio.get_running_loop().create_task(handle(msg_subject, body, reply))
                    self._readers.append(task)
                else:
                    await handle(msg_subject, body, reply)

        self._readers.append(asyncio.get_running_loop().create_task(read()))

    async def publish(self, subject: str, body: bytes) -> None:
        await self.publish_raw(subject, self._sealer.seal(subject, body))

    async def publish_raw(self, subject: str, data: bytes) -> None:
        self._check()
        self.nats.inject(subject, data)

    async def request(self, subject: str, body: bytes, timeout: float = 3.0) -> bytes:
        self._check()
        if not self.nats.has_subscriber(subject):
            raise NoResponder(f"nobody answers on {subject}")
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        queue = self.nats.add(inbox)
        try:
            self.nats.inject(subject, self._sealer.seal(subject, body), reply=inbox)
            try:
                async with asyncio.timeout(timeout):
                    _, data, _ = await queue.get()
            except TimeoutError as exc:
                raise Unavailable(f"no answer on {subject}: timed out") from exc
        finally:
            self.nats.remove(queue)
        try:
            return self._sealer.open(inbox + "#reply", data)
        except RemoteProtocolError as exc:
            raise Unavailable(f"bad answer on {subject}: {exc.message}") from exc

    def _check(self) -> None:
        if not self.connected:
            raise Unavailable("not connected to NATS")
