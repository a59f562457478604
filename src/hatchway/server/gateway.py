"""The data-channel gateway: joins a session's client and agent WebSockets and relays frames.

Acknowledgements are end to end between client and agent (DESIGN.md §1.2); the gateway only
parses frame headers to count bytes and validate framing. While one end is away it sends
``pause_publication`` to the other, and ``start_publication`` when both are back (protocol.md
§5.5), so frames are never pushed into a void. A vanished end has ``disconnect_grace`` seconds to
come back (ResumeSession for the client, a re-dial for the agent) before the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from hatchway.auth.tokens import hash_token
from hatchway.errors import AuthError, HatchwayError, NotFound, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.frames import MessageType, PayloadType, peek_header
from hatchway.protocol.payloads import ChannelClosedPayload, OpenDataChannelInput
from hatchway.server.peer import Peer
from hatchway.server.settings import ServerSettings
from hatchway.store.records import SessionStatus
from hatchway.store.store import Store

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0  # seconds for a client to send its OpenDataChannelInput


@dataclass
class LiveSession:
    """What the gateway knows of one session while it runs."""

    session_id: str
    target: str
    client: Peer | None = None
    agent: Peer | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    ended: bool = False
    client_seen: bool = False
    timer: asyncio.TimerHandle | None = None


class Gateway:
    """Relays frames between the two ends of each live session on this server."""

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        on_expired: Callable[[str, SessionStatus, str], object],
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_expired = on_expired  # (session_id, status, reason) → ends the session
        self._live: dict[str, LiveSession] = {}

    # ---- lifecycle ------------------------------------------------------------------------

    def expect(self, session_id: str, target: str) -> None:
        """Register a new session; the agent must attach within ``agent_attach_timeout``."""
        live = self._live.setdefault(session_id, LiveSession(session_id, target))
        self._arm(
            live,
            self._settings.agent_attach_timeout,
            "the agent did not connect",
            SessionStatus.FAILED,
        )

    def live(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    async def end(self, session_id: str, output: str = "") -> None:
        """Tell both ends the session is over (channel_closed), close them, flush counters."""
        live = self._live.pop(session_id, None)
        if live is None or live.ended:
            return
        live.ended = True
        self._disarm(live)
        payload = ChannelClosedPayload(
            message_id=str(uuid.uuid4()),
            created_date=str(int(self._clock() * 1000)),
            destination_id=live.target,
            session_id=session_id,
            output=output,
        ).to_json()
        frame = control_frame(MessageType.CHANNEL_CLOSED, payload, now=self._clock())
        for peer in (live.client, live.agent):
            if peer is not None:
                await peer.send(frame)
                await peer.close(CloseCode.ENDED, "session ended")
        with contextlib.suppress(HatchwayError):
            await self._store.sessions.add_bytes(session_id, live.bytes_in, live.bytes_out)

    async def close_all(self) -> None:
        for live in list(self._live.values()):
            self._disarm(live)
            for peer in (live.client, live.agent):
                if peer is not None:
                    await peer.close(CloseCode.GOING_AWAY, "server shutting down")
        self._live.clear()

    # ---- client end -----------------------------------------------------------------------

    async def client_connect(self, request: web.Request, session_id: str) -> web.WebSocketResponse:
        """Serve a client's data channel: token in the first text frame (protocol.md §2)."""
        ws = web.WebSocketResponse(max_msg_size=self._settings.max_frame_size, autoping=True)
        await ws.prepare(request)
        peer = Peer(ws, f"client:{session_id}")
        try:
            await self._authenticate_client(ws, session_id)
        except HatchwayError as exc:
            log.info("client for %s refused: %s", session_id, exc.message)
            await peer.close(CloseCode.POLICY, exc.message)
            return ws
        live = self._live.get(session_id)
        if live is None or live.ended:
            await peer.close(CloseCode.ENDED, "session has ended")
            return ws
        await self._serve_end(ws, peer, live, client=True)
        return ws

    async def _authenticate_client(self, ws: web.WebSocketResponse, session_id: str) -> None:
        try:
            msg = await asyncio.wait_for(ws.receive(), OPEN_TIMEOUT)
        except TimeoutError as exc:
            raise AuthError("no OpenDataChannelInput within 10 s") from exc
        if msg.type != WSMsgType.TEXT:
            raise AuthError("the first message must be a text OpenDataChannelInput")
        opened = OpenDataChannelInput.from_json(msg.data.encode())
        token_hash = hash_token(opened.token_value)
        token = await self._store.sessions.token(token_hash)
        now = self._clock()
        if token is None or token.session_id != session_id:
            raise AuthError("invalid token for this session")
        if token.revoked:
            raise AuthError("token has been revoked")
        if token.first_used_at is None:
            if now - token.created_at > self._settings.token_first_use:
                raise AuthError("token expired before first use")
            await self._store.sessions.mark_token_used(token_hash, now)
        session = await self._store.sessions.get(session_id)
        if session is None:
            raise NotFound("no such session")
        if not session.status.is_active:
            raise AuthError("session has ended")

    # ---- agent end ------------------------------------------------------------------------

    async def agent_connect(
        self, request: web.Request, session_id: str, node_id: str
    ) -> web.WebSocketResponse:
        """Serve an agent's data channel (already authenticated by its signed upgrade)."""
        live = self._live.get(session_id)
        if live is None or live.ended or live.target != node_id:
            raise NotFound(f"Session {session_id} is not active on {node_id}.")
        ws = web.WebSocketResponse(max_msg_size=self._settings.max_frame_size, autoping=True)
        await ws.prepare(request)
        peer = Peer(ws, f"agent:{session_id}")
        await self._serve_end(ws, peer, live, client=False)
        return ws

    async def _serve_end(
        self, ws: web.WebSocketResponse, peer: Peer, live: LiveSession, *, client: bool
    ) -> None:
        """Make ``peer`` this session's client (or agent) end, relay until it goes, clean up.

        A newer connection for the same end replaces the older one (DESIGN.md §9).
        """
        end = "client" if client else "agent"
        if live.ended:  # ended while this connection was being set up
            await peer.close(CloseCode.ENDED, "session has ended")
            return
        # Take the place first: the older connection's relay then sees it is no longer the
        # current end and leaves without pausing the other end or arming the grace timer.
        older: Peer | None = getattr(live, end)
        setattr(live, end, peer)
        if older is not None:
            await older.close(CloseCode.REPLACED, "replaced by a newer connection")
        if live.ended:
            await peer.close(CloseCode.ENDED, "session has ended")
            return
        await self._joined(live)
        try:
            await self._relay(ws, peer, live, to_agent=client)
        finally:
            if getattr(live, end) is peer:
                setattr(live, end, None)
                await self._left(live, f"the {end} did not reconnect")

    # ---- relay ----------------------------------------------------------------------------

    async def _relay(
        self, ws: web.WebSocketResponse, peer: Peer, live: LiveSession, *, to_agent: bool
    ) -> None:
        stream_type = MessageType.INPUT_STREAM_DATA if to_agent else MessageType.OUTPUT_STREAM_DATA
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue  # later text frames carry nothing we need
            data: bytes = msg.data
            try:
                header = peek_header(data)
            except RemoteProtocolError as exc:
                log.info("%s sent a malformed frame: %s", peer.label, exc.message)
                await peer.close(CloseCode.BAD_DATA, f"malformed frame: {exc.message}")
                return
            if header.message_type == stream_type and header.payload_type == PayloadType.OUTPUT:
                if to_agent:
                    live.bytes_in += header.payload_length
                else:
                    live.bytes_out += header.payload_length
            other = live.agent if to_agent else live.client
            if other is not None:
                await other.send(data)

    async def _joined(self, live: LiveSession) -> None:
        now = self._clock()
        if live.client is not None:
            live.client_seen = True
        if live.client is not None and live.agent is not None:
            self._disarm(live)
            start = control_frame(MessageType.START_PUBLICATION, b"{}", now=now)
            await live.agent.send(start)
            await live.client.send(start)
            await self._store.sessions.set_status(
                live.session_id,
                SessionStatus.CONNECTED,
                now=now,
                only_if=(SessionStatus.CONNECTING, SessionStatus.DISCONNECTED),
            )
        else:
            present = live.client or live.agent
            if present is not None:
                await present.send(control_frame(MessageType.PAUSE_PUBLICATION, b"{}", now=now))
            if live.agent is not None and not live.client_seen:
                # The agent is here first; the client has its token's first-use window.
                self._arm(live, self._settings.token_first_use + 5, "the client did not connect")

    async def _left(self, live: LiveSession, reason: str) -> None:
        if live.ended or (live.client is not None and live.agent is not None):
            return
        now = self._clock()
        other = live.client or live.agent
        if other is not None:
            await other.send(control_frame(MessageType.PAUSE_PUBLICATION, b"{}", now=now))
        if live.client is None:
            await self._store.sessions.set_status(
                live.session_id,
                SessionStatus.DISCONNECTED,
                now=now,
                only_if=(SessionStatus.CONNECTED,),
            )
        # The awaits above let the missing end come back (a quick re-dial): then it's joined.
        if live.ended:
            return
        if live.client is not None and live.agent is not None:
            await self._store.sessions.set_status(
                live.session_id,
                SessionStatus.CONNECTED,
                now=self._clock(),
                only_if=(SessionStatus.DISCONNECTED,),
            )
            return
        self._arm(live, self._settings.disconnect_grace, reason)

    # ---- timers ---------------------------------------------------------------------------

    def _arm(
        self,
        live: LiveSession,
        delay: float,
        reason: str,
        status: SessionStatus = SessionStatus.TERMINATED,
    ) -> None:
        self._disarm(live)
        loop = asyncio.get_running_loop()
        live.timer = loop.call_later(delay, self._expire, live.session_id, status, reason)

    @staticmethod
    def _disarm(live: LiveSession) -> None:
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None

    def _expire(self, session_id: str, status: SessionStatus, reason: str) -> None:
        live = self._live.get(session_id)
        if live is None or live.ended:
            return
        log.info("session %s expires: %s", session_id, reason)
        self._on_expired(session_id, status, reason)
