"""The data-channel gateway: joins each session's client and agent sockets and relays frames.

Acknowledgements are end to end between client and agent (docs/protocol.md §1.1); the gateway
only reads frame headers to count bytes and validate framing. While one end is away it sends
``pause_publication`` to the other, and ``start_publication`` to both whenever both are there
(§6.7), so frames are never pushed into a void and both ends re-emit what is unacknowledged.

A session has one timer at a time (:class:`Deadline`): a new session's agent must attach, then
its client must use its token; an end that went away has ``disconnect_grace`` seconds to come
back (ResumeSession for the client, a re-dial for the agent) before the session ends. The timers
run on the event loop's clock; timestamps (tokens, status changes) come from the injected wall
clock.

The gateway keeps nothing that the two ends and the database cannot re-create: after a server
restart, an end of a session the database says is active is simply taken in again (§9.7).

No peer can hold up anybody else: every send is bounded by the socket's send time-out, and
ending a session (``channel_closed`` and a close to both ends) runs in the background, both ends
at once, so ``TerminateSession`` and the node's control channel never wait for a slow client.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hatchway.auth.tokens import hash_token
from hatchway.errors import (
    AuthError,
    ChannelClosed,
    HatchwayError,
    NotFound,
    RemoteProtocolError,
    StoreError,
    Unavailable,
)
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.frames import MessageType, PayloadType, peek_header
from hatchway.protocol.payloads import (
    ChannelClosedPayload,
    NoticeKind,
    NoticePayload,
    OpenDataChannelInput,
)
from hatchway.server.logstreams import StreamTap
from hatchway.server.preferences import SessionLimits
from hatchway.server.recorder import SessionRecorder
from hatchway.server.settings import ServerSettings
from hatchway.store.records import Session, SessionStatus
from hatchway.store.store import Store
from hatchway.transport.socket import CLOSE_TIMEOUT, SEND_TIMEOUT, Socket, TextSocket

log = logging.getLogger(__name__)

__all__ = ["OPEN_TIMEOUT", "Deadline", "End", "Expired", "Gateway", "LiveSession"]

OPEN_TIMEOUT = 10.0  # seconds for a client to send its OpenDataChannelInput (§3.1)
MOVED_KEPT = 10_000  # sessions let go to other replicas, remembered (see Gateway._moved)
MOVED = "the session moved to another server; reconnect"

#: Called when a session's timer runs out: (session id, final status, reason).
Expired = Callable[[str, SessionStatus, str], object]
AdmitClient = Callable[[Session], Awaitable[None]]


class End(Enum):
    """The two ends of a data channel."""

    CLIENT = "client"
    AGENT = "agent"

    @property
    def other(self) -> End:
        return End.AGENT if self is End.CLIENT else End.CLIENT


class Deadline(Enum):
    """What a session's timer waits for."""

    #: A new session's agent must connect within ``agent_attach_timeout`` (else ``Failed``).
    ATTACH = "attach"
    #: The agent is there; the client's token has its first-use window (plus slack).
    FIRST_USE = "first use"
    #: An end went away (or the server restarted): ``disconnect_grace`` to come back.
    GRACE = "grace"


@dataclass(eq=False)
class LiveSession:
    """What the gateway knows of one session while it runs."""

    session_id: str
    target: str
    client: Socket | None = None
    agent: Socket | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    ended: bool = False
    client_seen: bool = False
    #: Re-created after a server restart; cleared once both ends are back.
    restored: bool = False
    #: The node's control channel closed; cleared when its agent's data channel is back.
    node_away: bool = False
    deadline: Deadline | None = None
    timer: asyncio.TimerHandle | None = None
    #: Records the session's terminal (``server.recordings``); fed every stream frame.
    recorder: SessionRecorder | None = None
    #: Streams the session's output to its log group (``server.logstreams``).
    log_stream: StreamTap | None = None
    #: The idle timeout and maximum duration (``server.preferences``), watched by ``watch``.
    limits: SessionLimits | None = None
    #: Loop time the maximum duration counts from, and of the last stream data either way
    #: (the idle timeout counts from it; for port sessions, bytes moving).
    started: float = 0.0
    active_at: float = 0.0
    watch: asyncio.Task[None] | None = None
    #: Being handed to another replica (scale-out): an end that comes now is sent there.
    moving: bool = False

    def socket(self, end: End) -> Socket | None:
        return self.client if end is End.CLIENT else self.agent

    def attach(self, end: End, sock: Socket | None) -> None:
        if end is End.CLIENT:
            self.client = sock
        else:
            self.agent = sock


class Gateway:
    """Relays frames between the two ends of each live session on this server.

    Args:
        store: the sessions' records (status, tokens, byte counters).
        settings: time-outs (``agent_attach_timeout``, ``token_first_use``,
            ``disconnect_grace``).
        clock: the wall clock, for timestamps only.
        on_expired: ends a session whose timer ran out (the session service).
    """

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        on_expired: Expired,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_expired = on_expired
        self.admit_client: AdmitClient | None = None
        """Asked, once a client's token is checked, whether the session's owner may still
        run it (``authz``); raising ``AccessDenied`` refuses the channel."""
        self.limits_of: Callable[[Session], SessionLimits | None] = lambda _: None
        """The limits of a session taken in after a restart (the session service sets it)."""
        self._live: dict[str, LiveSession] = {}
        #: Sessions let go to another replica (scale-out), never taken in again on demand.
        self._moved: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # ---- lifecycle ------------------------------------------------------------------------

    def expect(self, session_id: str, target: str, limits: SessionLimits | None = None) -> None:
        """Register a new session; the agent must attach within ``agent_attach_timeout``.
        ``limits`` (idle timeout, maximum duration) are enforced from now on."""
        live = self._live.setdefault(session_id, LiveSession(session_id, target))
        self._arm(live, Deadline.ATTACH)
        self.limit(live, limits)

    def limit(self, live: LiveSession, limits: SessionLimits | None, *, age: float = 0.0) -> None:
        """Enforce ``limits`` on a live session that has run ``age`` seconds already."""
        if limits is None or live.ended:
            return
        now = asyncio.get_running_loop().time()
        live.limits, live.started, live.active_at = limits, now - max(age, 0.0), now
        if live.watch is None:
            live.watch = asyncio.get_running_loop().create_task(self._watch_limits(live))

    async def restore(self, sessions: Iterable[Session]) -> int:
        """Take in the sessions a previous server process left active (at start).

        Both ends re-dial; each session has ``disconnect_grace`` for them to come back.
        Returns how many sessions were taken in.
        """
        taken = 0
        connected: list[LiveSession] = []
        for session in sessions:
            self._moved.pop(session.session_id, None)  # taken back (its relay died, say)
            if session.status.is_active and session.session_id not in self._live:
                live = self._adopt(session)
                self.limit(live, self.limits_of(session), age=self._clock() - session.start_date)
                taken += 1
                if session.status == SessionStatus.CONNECTED:
                    connected.append(live)
        # One statement for them all: a hundred sessions taken over must not wait in single
        # file (a failing database delays nobody: the status is only what DescribeSessions says).
        if connected:
            try:
                await self._store.sessions.mark_disconnected([x.session_id for x in connected])
            except StoreError as exc:
                log.warning("cannot record %d session(s) Disconnected: %s", len(connected),
                            exc.message)  # fmt: skip
        return taken

    def take_in(self, session: Session) -> LiveSession:
        """Scale-out: a new session that moved here before either end came (its node's end
        came here first): as if started here, its agent due within ``agent_attach_timeout``."""
        self._moved.pop(session.session_id, None)
        live = self._live.setdefault(
            session.session_id, LiveSession(session.session_id, session.target)
        )
        self._arm(live, Deadline.ATTACH)
        self.limit(live, self.limits_of(session), age=self._clock() - session.start_date)
        return live

    def movable(self, session_id: str) -> LiveSession | None:
        """The live session, if no end has ever come for it: it may move to another replica."""
        live = self._live.get(session_id)
        if (
            live is None
            or live.ended
            or live.moving
            or live.restored
            or live.client_seen
            or live.client is not None
            or live.agent is not None
            or live.deadline is not Deadline.ATTACH
        ):
            return None
        return live

    def live(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    def attach_recorder(self, session_id: str, recorder: SessionRecorder) -> bool:
        """Record the stream frames of a live session from now on; False if it is not live."""
        live = self._live.get(session_id)
        if live is None or live.ended:
            return False
        live.recorder = recorder
        return True

    def attach_log_stream(self, session_id: str, tap: StreamTap) -> bool:
        """Stream the output of a live session from now on; False if it is not live."""
        live = self._live.get(session_id)
        if live is None or live.ended:
            return False
        live.log_stream = tap
        return True

    def live_ids(self) -> list[str]:
        """The sessions this gateway relays (or waits for an end of) now."""
        return [sid for sid, live in self._live.items() if not live.ended]

    def end(self, session_id: str, output: str = "") -> None:
        """End a session here: ``channel_closed`` and close (4001) to both ends.

        Returns at once: the goodbyes run in the background, both ends concurrently and each
        bounded by its socket's time-outs, so a slow end holds up nobody.
        """
        live = self._live.pop(session_id, None)
        if live is None or live.ended:
            return
        live.ended = True
        self._disarm(live)
        if live.watch is not None and live.watch is not asyncio.current_task():
            live.watch.cancel()
        payload = ChannelClosedPayload(
            message_id=str(uuid.uuid4()),
            created_date=str(int(self._clock() * 1000)),
            destination_id=live.target,
            session_id=session_id,
            output=output,
        ).to_json()
        frame = control_frame(MessageType.CHANNEL_CLOSED, payload, now=self._clock())
        ends = [sock for sock in (live.client, live.agent) if sock is not None]
        self._spawn(self._hang_up(live, ends, frame))

    def node_gone(self, node_id: str) -> int:
        """The node's control channel closed for good: tell the client of each of its live
        sessions at once (``hatchway_notice``, §9.6), and let a session whose agent is away
        end after the grace with a reason that says so. Returns the number of sessions."""
        notice = self._node_away_notice()
        affected = [s for s in self._live.values() if s.target == node_id and not s.ended]
        for live in affected:
            live.node_away = True
            if live.agent is None and live.timer is None:
                self._arm(live, Deadline.GRACE)
            if live.client is not None:
                self._spawn(self._notify(live.client, notice))
        if affected:
            log.info("node %s went away with %d live session(s)", node_id, len(affected))
        return len(affected)

    def no_longer_run(self, node_id: str, running: frozenset[str]) -> list[str]:
        """The node's agent reported the sessions it runs: of this node's sessions that went
        away with it (or with a server restart), the ones it no longer runs (its agent
        restarted), which will never come back. A session started a moment ago, not listed
        yet, is not among them."""
        return [
            live.session_id
            for live in self._live.values()
            if live.target == node_id
            and (live.node_away or live.restored)
            and live.session_id not in running
        ]

    def _node_away_notice(self) -> NoticePayload:
        grace = self._settings.disconnect_grace
        return NoticePayload(
            kind=NoticeKind.NODE_AWAY,
            message=f"the node went away; waiting up to {_seconds(grace)} s for it to come back",
            grace=math.ceil(grace),
        )

    async def close_all(self) -> None:
        """Server shutdown: close every end with 1001 (they re-dial the next server process),
        keep the sessions active in the database, and flush the byte counters."""
        self._closing = True
        lives = list(self._live.values())
        self._live.clear()
        for live in lives:
            self._disarm(live)
            if live.watch is not None:
                live.watch.cancel()
        async with asyncio.TaskGroup() as tg:
            for live in lives:
                for sock in (live.client, live.agent):
                    if sock is not None:
                        tg.create_task(sock.close(CloseCode.GOING_AWAY, "the server is restarting"))
                tg.create_task(self._record_bytes(live))
        await self._drain_tasks()

    async def release(self, session_id: str) -> None:
        """Let another server relay a live session (scale-out: it was taken over): close its
        ends with 1001 so they re-dial, without ending it; its byte counts are flushed."""
        live = self._live.pop(session_id, None)
        if live is None or live.ended:
            return
        self._moved[session_id] = None
        while len(self._moved) > MOVED_KEPT:
            self._moved.popitem(last=False)
        self._disarm(live)
        if live.watch is not None:
            live.watch.cancel()
        live.ended = True  # here: the relay loops of its ends stop counting and forwarding
        live.moving = True
        async with asyncio.TaskGroup() as tg:
            for sock in (live.client, live.agent):
                if sock is not None:
                    tg.create_task(sock.close(CloseCode.GOING_AWAY, "the session moved; reconnect"))
        await self._record_bytes(live)

    # ---- client end -----------------------------------------------------------------------

    async def serve_client(self, sock: TextSocket, session_id: str) -> None:
        """Serve a client's data channel: its token comes in the first text message (§3.1)."""
        if self._closing:
            await sock.close(CloseCode.GOING_AWAY, "the server is restarting")
            return
        try:
            session = await self._authenticate_client(sock, session_id)
            if self.admit_client is not None:
                await self.admit_client(session)
            live = self._find(session)
        except ChannelClosed:
            return
        except StoreError as exc:
            log.warning("client for %s: %s", session_id, exc.message)
            await sock.close(CloseCode.INTERNAL_ERROR, "the server failed; try again")
            return
        except HatchwayError as exc:
            log.info("client for %s refused: %s", session_id, exc.message)
            await sock.close(CloseCode.POLICY, exc.message)
            return
        if live is None and session_id in self._moved:
            await sock.close(CloseCode.GOING_AWAY, MOVED)
            return
        if live is None:  # it ended since the check above
            ended = await self._store.sessions.get(session_id)
            reason = _has_ended(ended) if ended is not None else "the session has ended"
            await sock.close(CloseCode.ENDED, reason)
            return
        await self._serve_end(sock, live, End.CLIENT)

    async def _authenticate_client(self, sock: TextSocket, session_id: str) -> Session:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                text = await sock.receive_text()
        except TimeoutError as exc:
            raise AuthError(f"no OpenDataChannelInput within {OPEN_TIMEOUT:g} s") from exc
        except RemoteProtocolError as exc:
            raise AuthError("the first message must be a text OpenDataChannelInput") from exc
        opened = OpenDataChannelInput.from_json(text.encode())
        token_hash = hash_token(opened.token_value)
        token = await self._store.sessions.token(token_hash)
        now = self._clock()
        if token is None or token.session_id != session_id:
            raise AuthError("invalid token for this session")
        if token.revoked:
            # Revoked because the session ended before its client came (e.g. the agent could
            # not start it): the token's holder may know why.
            ended = await self._store.sessions.get(session_id)
            if ended is not None and not ended.status.is_active:
                raise AuthError(_has_ended(ended))
            raise AuthError("token has been revoked")
        if token.first_used_at is None:
            if now - token.created_at > self._settings.token_first_use:
                raise AuthError("token expired before first use")
            await self._store.sessions.mark_token_used(token_hash, now)
        session = await self._store.sessions.get(session_id)
        if session is None:
            raise NotFound("no such session")
        if not session.status.is_active:
            raise AuthError(_has_ended(session))
        return session

    # ---- agent end ------------------------------------------------------------------------

    async def admit_agent(self, session_id: str, node_id: str) -> LiveSession:
        """Check, before the upgrade is accepted, that ``node_id`` may serve this session.

        Raises:
            NotFound: the session is not active on that node (the agent ends it).
            Unavailable: the server is shutting down (the agent tries again).
        """
        if self._closing:
            raise Unavailable("the server is restarting; try again")
        live = self._live.get(session_id)
        if live is None:
            session = await self._store.sessions.get(session_id)
            if session is not None and session.target == node_id:
                live = self._find(session)
        if (live is None or live.moving) and session_id in self._moved:
            raise Unavailable(f"session {session_id} moved to another server; try again")
        if live is None or live.ended or live.target != node_id:
            raise NotFound(f"Session {session_id} is not active on {node_id}.")
        return live

    async def serve_agent(self, sock: Socket, live: LiveSession) -> None:
        """Serve an agent's data channel (authenticated and admitted before the upgrade)."""
        await self._serve_end(sock, live, End.AGENT)

    # ---- both ends ------------------------------------------------------------------------

    def _find(self, session: Session) -> LiveSession | None:
        """The live session for ``session``; one the database says is active but this process
        does not run (it restarted) is taken in again."""
        live = self._live.get(session.session_id)
        if live is not None or self._closing or not session.status.is_active:
            return live
        if session.session_id in self._moved:
            return None
        return self._adopt(session)

    def _adopt(self, session: Session) -> LiveSession:
        live = LiveSession(
            session.session_id,
            session.target,
            client_seen=session.status != SessionStatus.CONNECTING,
            restored=True,
        )
        self._live[session.session_id] = live
        self._arm(live, Deadline.GRACE)
        log.info("session %s taken in after a restart; waiting for its ends", session.session_id)
        return live

    async def _serve_end(self, sock: Socket, live: LiveSession, end: End) -> None:
        """Make ``sock`` this session's ``end``, relay until it goes, clean up.

        A newer connection for the same end replaces the older one (closed with 4000).
        """
        if self._closing:
            await sock.close(CloseCode.GOING_AWAY, "the server is restarting")
            return
        if live.moving:
            await sock.close(CloseCode.GOING_AWAY, MOVED)
            return
        if live.ended:
            await sock.close(CloseCode.ENDED, "the session has ended")
            return
        # Take the place first: the older connection's relay then sees it is no longer the
        # current end and leaves without pausing the other end or arming the grace timer.
        older = live.socket(end)
        live.attach(end, sock)
        if older is not None:
            self._spawn(older.close(CloseCode.REPLACED, "replaced by a newer connection"))
        try:
            await self._joined(live, end)
            await self._relay(sock, live, end)
        finally:
            if live.socket(end) is sock:
                live.attach(end, None)
                await self._left(live, end)

    async def _relay(self, sock: Socket, live: LiveSession, end: End) -> None:
        to_agent = end is End.CLIENT
        stream = MessageType.INPUT_STREAM_DATA if to_agent else MessageType.OUTPUT_STREAM_DATA
        loop = asyncio.get_running_loop()
        # Relays until the connection closes, also after the session ended: the handler of a
        # connection must outlive the goodbye (channel_closed, then a close) sent on it.
        async for data in sock:
            try:
                header = peek_header(data)
            except RemoteProtocolError as exc:
                log.info("%s sent a malformed frame: %s", sock.label, exc.message)
                await sock.close(CloseCode.BAD_DATA, f"malformed frame: {exc.message}")
                return
            if live.socket(end) is not sock:
                continue  # replaced: the sender re-emits on its newer connection (§6.6)
            if header.message_type == stream:
                if header.payload_type == PayloadType.OUTPUT:
                    # What the receiver takes as payload, never the header's claim (§4.2).
                    if to_agent:
                        live.bytes_in += header.payload_size
                    else:
                        live.bytes_out += header.payload_size
                    if header.payload_size:
                        live.active_at = loop.time()  # input or output: not idle
                if live.recorder is not None:
                    live.recorder.feed(to_agent, header, data)  # a list append: no I/O here
                if live.log_stream is not None and not to_agent:
                    live.log_stream.feed(header, data)  # a list append too
            other = live.agent if to_agent else live.client
            if other is not None:
                await other.send(data)  # bounded: a stalled receiver is dropped

    async def _joined(self, live: LiveSession, end: End) -> None:
        sock = live.socket(end)
        assert sock is not None
        now = self._clock()
        if end is End.CLIENT:
            live.client_seen = True
        node_back = end is End.AGENT and live.node_away
        if node_back:
            live.node_away = False
        if live.restored:
            log.info("session %s: the %s is back after the restart", live.session_id, end.value)
        client, agent = live.client, live.agent
        if client is not None and agent is not None:
            self._disarm(live)
            if live.restored:
                log.info("session %s: both ends are back after the restart", live.session_id)
            live.restored = False
            # Both ends re-emit what is unacknowledged on start_publication (§6.6). Sent to
            # both at once: a slow end must not delay the other.
            start = control_frame(MessageType.START_PUBLICATION, b"{}", now=now)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(agent.send(start))
                tg.create_task(client.send(start))
            if node_back:
                back = NoticePayload(kind=NoticeKind.NODE_BACK, message="the node is back")
                await self._notify(client, back)
            await self._set_status(
                live,
                SessionStatus.CONNECTED,
                only_if=(SessionStatus.CONNECTING, SessionStatus.DISCONNECTED),
            )
            return
        await sock.send(control_frame(MessageType.PAUSE_PUBLICATION, b"{}", now=now))
        if end is End.CLIENT and live.node_away:
            await self._notify(sock, self._node_away_notice())
        if end is End.AGENT and live.deadline is Deadline.ATTACH:
            self._arm(live, Deadline.FIRST_USE)

    async def _left(self, live: LiveSession, end: End) -> None:
        if live.ended or self._closing:
            return
        other = live.socket(end.other)
        if other is not None:
            pause = control_frame(MessageType.PAUSE_PUBLICATION, b"{}", now=self._clock())
            await other.send(pause)
        if end is End.CLIENT:
            await self._set_status(
                live, SessionStatus.DISCONNECTED, only_if=(SessionStatus.CONNECTED,)
            )
        # The awaits above let the missing end come back (a quick re-dial): then it's joined.
        if live.ended or self._closing:
            return
        if live.client is not None and live.agent is not None:
            await self._set_status(
                live, SessionStatus.CONNECTED, only_if=(SessionStatus.DISCONNECTED,)
            )
            return
        if live.timer is None:
            self._arm(live, Deadline.GRACE)

    async def _hang_up(self, live: LiveSession, ends: list[Socket], frame: bytes) -> None:
        async with asyncio.TaskGroup() as tg:
            for sock in ends:
                tg.create_task(_say_goodbye(sock, frame))
        await self._record_bytes(live)

    async def _notify(self, sock: Socket, notice: NoticePayload) -> None:
        frame = control_frame(MessageType.HATCHWAY_NOTICE, notice.to_json(), now=self._clock())
        await sock.send(frame)

    # ---- records --------------------------------------------------------------------------

    async def _set_status(
        self, live: LiveSession, status: SessionStatus, *, only_if: tuple[SessionStatus, ...]
    ) -> None:
        """Record a status change; a failing database delays nobody and drops no connection."""
        try:
            await self._store.sessions.set_status(
                live.session_id, status, now=self._clock(), only_if=only_if
            )
        except StoreError as exc:
            log.warning("session %s: cannot record %s: %s", live.session_id, status, exc.message)

    async def _record_bytes(self, live: LiveSession) -> None:
        bytes_in, bytes_out = live.bytes_in, live.bytes_out
        if not bytes_in and not bytes_out:
            return
        live.bytes_in = live.bytes_out = 0
        try:
            await self._store.sessions.add_bytes(live.session_id, bytes_in, bytes_out)
        except StoreError as exc:
            log.warning("session %s: cannot record its byte counts: %s", live.session_id, exc)

    # ---- timers and tasks -----------------------------------------------------------------

    def _arm(self, live: LiveSession, deadline: Deadline) -> None:
        delay = {
            Deadline.ATTACH: self._settings.agent_attach_timeout,
            Deadline.FIRST_USE: self._settings.token_first_use + 5,
            Deadline.GRACE: self._settings.disconnect_grace,
        }[deadline]
        self._disarm(live)
        live.deadline = deadline
        loop = asyncio.get_running_loop()
        live.timer = loop.call_later(delay, self._expire, live.session_id)

    @staticmethod
    def _disarm(live: LiveSession) -> None:
        if live.timer is not None:
            live.timer.cancel()
        live.timer = None
        live.deadline = None

    def _expire(self, session_id: str) -> None:
        live = self._live.get(session_id)
        if live is None or live.ended or live.deadline is None:
            return
        deadline = live.deadline
        live.timer = None
        live.deadline = None
        status, reason = self._why(live, deadline)
        log.info("session %s expires: %s", session_id, reason)
        self._on_expired(session_id, status, reason)

    def _why(self, live: LiveSession, deadline: Deadline) -> tuple[SessionStatus, str]:
        """The status and reason a session ends with when ``deadline`` passes."""
        if deadline is Deadline.ATTACH:
            return SessionStatus.FAILED, "the agent did not connect"
        if deadline is Deadline.FIRST_USE:
            return SessionStatus.TERMINATED, "the client did not connect"
        if live.node_away and live.agent is None:
            grace = _seconds(self._settings.disconnect_grace)
            return SessionStatus.TERMINATED, f"the node did not come back within {grace} s"
        missing = [f"the {end.value}" for end in End if live.socket(end) is None]
        who = " and ".join(missing) or "an end"
        after = " after the server restarted" if live.restored else ""
        return SessionStatus.TERMINATED, f"{who} did not reconnect{after}"

    async def _watch_limits(self, live: LiveSession) -> None:
        """End the session when it has been idle (no stream data either way) for
        ``limits.idle`` or has run ``limits.max_duration``; warn the client ``warn_before``
        either happens (``hatchway_notice``, docs/protocol.md §9.6)."""
        limits = live.limits
        assert limits is not None
        loop = asyncio.get_running_loop()
        warned_max = False
        warned_idle_at: float | None = None  # the activity time the idle warning was about
        while not live.ended:
            now = loop.time()
            wake: list[float] = []
            if limits.max_duration is not None:
                end_at = live.started + limits.max_duration
                if now >= end_at:
                    minutes = _minutes(limits.max_duration, limits.unit)
                    self._limit_reached(live, f"the session reached its maximum duration of "
                                        f"{minutes} (maxSessionDuration)")  # fmt: skip
                    return
                if not warned_max and now >= end_at - limits.warn_before:
                    warned_max = True
                    left = _minutes(end_at - now, limits.unit)
                    await self._warn(live, NoticeKind.MAX_DURATION_WARNING,
                                     f"this session reaches its maximum duration and ends in "
                                     f"{left}")  # fmt: skip
                wake.append(end_at if warned_max else end_at - limits.warn_before)
            if limits.idle is not None:
                idle_end = live.active_at + limits.idle
                if now >= idle_end:
                    minutes = _minutes(limits.idle, limits.unit)
                    self._limit_reached(live, f"the session was idle for {minutes} "
                                        "(idleSessionTimeout)")  # fmt: skip
                    return
                warned = warned_idle_at == live.active_at
                if not warned and now >= idle_end - limits.warn_before:
                    warned_idle_at = live.active_at
                    warned = True
                    left = _minutes(idle_end - now, limits.unit)
                    await self._warn(live, NoticeKind.IDLE_WARNING,
                                     f"this session is idle and ends in {left} unless there is "
                                     "input or output")  # fmt: skip
                wake.append(idle_end if warned else idle_end - limits.warn_before)
            if not wake:
                return
            await asyncio.sleep(max(min(wake) - loop.time(), 0.0) + 0.001)

    async def _warn(self, live: LiveSession, kind: NoticeKind, message: str) -> None:
        if live.client is not None and not live.ended:
            await self._notify(live.client, NoticePayload(kind=kind, message=message))

    def _limit_reached(self, live: LiveSession, reason: str) -> None:
        live.watch = None  # ending the session must not cancel the task that ends it
        log.info("session %s ends: %s", live.session_id, reason)
        self._on_expired(live.session_id, SessionStatus.TERMINATED, reason)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` in the background (each such task is bounded by socket time-outs)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_tasks(self) -> None:
        if not self._tasks:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT + 2 * CLOSE_TIMEOUT):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            log.warning("%d background task(s) of the gateway did not finish", len(self._tasks))


async def _say_goodbye(sock: Socket, frame: bytes) -> None:
    await sock.send(frame)  # bounded by the socket's send time-out
    await sock.close(CloseCode.ENDED, "session ended")


def _has_ended(session: Session) -> str:
    """What a client that comes too late is told: the session's end and why."""
    if session.details:
        return f"the session ended ({session.status.value}): {session.details}"
    return "session has ended"


def _seconds(value: float) -> str:
    return f"{value:g}"


def _minutes(seconds: float, unit: float) -> str:
    """``seconds`` in the preferences' minutes (``unit`` seconds each), for people."""
    count = max(1, round(seconds / unit))
    return f"{count} minute{'s' if count != 1 else ''}"
