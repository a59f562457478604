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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hatchway.errors import ChannelClosed, RemoteProtocolError, StoreError
from hatchway.protocol.closecodes import CloseCode
from hatchway.store.records import Session, SessionStatus, SessionToken


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
        return True

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

    ``fail_heartbeats`` makes the next that many heartbeat writes raise ``StoreError``, as a
    locked SQLite database does.
    """

    connected: dict[str, bool] = field(default_factory=dict)
    beats: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)
    fail_heartbeats: int = 0
    beat_written: asyncio.Event = field(default_factory=asyncio.Event)

    async def mark_connected(self, instance_id: str, connected: bool, now: float) -> None:
        self.connected[instance_id] = connected

    async def heartbeat(self, instance_id: str, now: float, **facts: str) -> None:
        if self.fail_heartbeats:
            self.fail_heartbeats -= 1
            raise StoreError("database write failed: OperationalError")
        self.beats.append((instance_id, now, facts))
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


class MemorySessions:
    """Sessions and their client tokens in memory (the subset of ``SessionRepository`` the
    gateway and the session service use)."""

    def __init__(self) -> None:
        self.rows: dict[str, Session] = {}
        self.tokens: dict[str, SessionToken] = {}
        self.fail_writes = False  # make every write raise StoreError (a database outage)

    def _check(self) -> None:
        if self.fail_writes:
            raise StoreError("database write failed: OperationalError")

    async def create(self, session: Session, token_hash: str, now: float) -> None:
        self._check()
        self.rows[session.session_id] = session
        self.tokens[token_hash] = SessionToken(token_hash, session.session_id, now, None, False)

    async def get(self, session_id: str) -> Session | None:
        return self.rows.get(session_id)

    async def set_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        now: float,
        only_if: Sequence[SessionStatus] | None = None,
        exit_code: int | None = None,
        details: str | None = None,
    ) -> bool:
        self._check()
        row = self.rows.get(session_id)
        if row is None or (only_if is not None and row.status not in only_if):
            return False
        changes: dict[str, Any] = {"status": status}
        if not status.is_active:
            changes["end_date"] = now
            self._revoke(session_id)
        if exit_code is not None:
            changes["exit_code"] = exit_code
        if details is not None:
            changes["details"] = details
        self.rows[session_id] = replace(row, **changes)
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
) -> Session:
    """A session row as StartSession writes it."""
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
    )
