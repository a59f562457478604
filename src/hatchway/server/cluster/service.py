"""One replica's part in the cluster: routing, take-over, drain and health.

**Sessions.** Each session has one *relay*: the replica whose gateway runs it (timers,
recording, log stream, byte counts), recorded in ``sessions.relay``. StartSession makes the
replica that answers it the relay. An end that reaches another replica is piped to the relay
(``pipes``); an end that reaches the relay is served there directly. When the relay is gone,
the first replica that notices takes its sessions over (a compare-and-set in the database, so
each session gets exactly one new relay), with the grace period for their ends to come back,
exactly as a single server does after a restart (docs/protocol.md §9.7).

**Nodes.** ``nodes.replica`` names the replica that holds a node's control channel; messages
for the node (start a session, end it, deregister) go to that replica over NATS, wherever the
API call landed.

**Broadcasts** (``<prefix>.all``): a node's control channel is gone (its sessions' clients are
told, wherever they are relayed), a session ended (its relay hangs up), access changed (every
replica re-checks the sessions it relays).

**Drain** (SIGTERM): the replica reports itself unhealthy, stops accepting, closes its ends
with ``GOING_AWAY`` (they re-dial another replica and resume), says it is leaving (the others
take its sessions over at once) and closes its control channels (agents re-dial elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from hatchway.auth.tokens import hash_token
from hatchway.errors import (
    AccessDenied,
    AuthError,
    ChannelClosed,
    Conflict,
    HatchwayError,
    NotFound,
    RemoteProtocolError,
    TargetNotConnected,
    Throttled,
    Unavailable,
)
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.payloads import AgentTaskPayload, OpenDataChannelInput
from hatchway.server.cluster.bus import Bus, NoResponder
from hatchway.server.cluster.envelope import Freshness, PipeFrame, unpack_pipe
from hatchway.server.cluster.pipes import (
    EdgePipe,
    PipeSender,
    RemoteEnd,
    Replayed,
    close_payload,
)
from hatchway.server.cluster.replicas import ReplicaInfo, Replicas
from hatchway.server.control import ControlChannels
from hatchway.server.gateway import OPEN_TIMEOUT, Gateway, LiveSession
from hatchway.store.records import Session, SessionStatus
from hatchway.store.store import Store
from hatchway.transport.socket import Socket, TextSocket

if TYPE_CHECKING:
    from aiohttp import web

    from hatchway.server.console.bridge import Terminals
    from hatchway.server.logstreams import LogStreamService
    from hatchway.server.recordings import RecordingService

log = logging.getLogger(__name__)

__all__ = ["Cluster", "RoutedControl"]

#: Seconds between two looks for sessions whose relay is gone (once warm).
SWEEP_INTERVAL: Final = 2.0
#: Seconds between two checks that the sessions this replica relays are still its own.
OWNERSHIP_INTERVAL: Final = 5.0
#: Seconds a database health probe may take.
PROBE_TIMEOUT: Final = 2.0
RPC_TIMEOUT: Final = 5.0
#: Seconds an end waits at most for sessions being taken in here (see ``_adopting``).
ADOPTION_WAIT: Final = 15.0

AdmitAgent = Callable[[str, str, str], Awaitable[LiveSession]]
"""(session id, node id, source address) → the live session, or a HatchwayError refusal."""

_ERRORS: dict[str, type[HatchwayError]] = {
    cls.__name__: cls
    for cls in (
        AccessDenied,
        AuthError,
        Conflict,
        NotFound,
        TargetNotConnected,
        Throttled,
        Unavailable,
    )
}


class Moved(Unavailable):
    """The session's relay is another replica (the caller routes again)."""


_ERRORS["Moved"] = Moved


@dataclass
class Hooks:
    """What the composition root hands the cluster once everything is built."""

    admit_agent: AdmitAgent
    end_here: Callable[[str, str], Awaitable[None]]
    access_changed: Callable[[], None]
    recordings: RecordingService | None = None
    log_streams: LogStreamService | None = None
    terminals: Terminals | None = None


class Cluster:
    """This replica's membership of the cluster.

    Args:
        store: the shared database.
        bus: this replica's NATS connection (opened by :meth:`start`).
        control: this replica's control channels.
        me: what this replica announces (its id is fresh at every start).
    """

    def __init__(
        self,
        store: Store,
        bus: Bus,
        control: ControlChannels,
        me: ReplicaInfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.bus = bus
        self._gateway: Gateway = None  # type: ignore[assignment]  # set by attach()
        self._control = control
        self._clock = clock
        self.replica_id = me.replica_id
        self.replicas = Replicas(bus, me, self._stats, self._replica_gone, clock=clock)
        self._fresh = Freshness(clock)
        self._remote_ends: dict[str, RemoteEnd] = {}
        self._edges: dict[str, EdgePipe] = {}
        self._adoptions: dict[asyncio.Future[None], str | None] = {}
        self._served = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.hooks: Hooks | None = None
        self.draining = False
        self._db_problem: str | None = None
        self._db_checked = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------

    def attach(self, gateway: Gateway, hooks: Hooks) -> None:
        """The gateway and services, once the composition root has built them."""
        self._gateway = gateway
        self.hooks = hooks

    async def start(self) -> None:
        me = self.replica_id
        await self.bus.open()
        self.bus.on_disconnected = self.replicas.disconnected
        self.bus.on_reconnected = self.replicas.connected
        # Requests at once: a slow one (its database round trips) must not queue the others,
        # e.g. a hundred ends re-dialling after a failover.
        await self.bus.subscribe(self.bus.subject("r", me, "rpc"), self._rpc, concurrent=True)
        await self.bus.subscribe(self.bus.subject("r", me, "p", "*"), self._pipe_message)
        await self.bus.subscribe(self.bus.subject("all"), self._broadcast)
        await self.replicas.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._sweep(), name="cluster-sweep"),
            loop.create_task(self._check_ownership(), name="cluster-ownership"),
        ]
        log.info("replica %s joined the cluster (subjects %s.*)", me, self.bus.options.prefix)

    async def drain(self) -> None:
        """Leave the cluster for a rolling restart (see the module docstring). The caller has
        stopped accepting connections already; bounded by the sockets' close time-outs."""
        self.draining = True
        log.info("replica %s drains: its ends re-dial other replicas", self.replica_id)
        await self._gateway.close_all()
        if self.hooks is not None and self.hooks.recordings is not None:
            await self.hooks.recordings.stop()
        if self.hooks is not None and self.hooks.log_streams is not None:
            await self.hooks.log_streams.stop()
        await self.replicas.stop(leaving=True)  # the others take its sessions over now
        await self._control.close_all()
        async with asyncio.TaskGroup() as tg:
            for pipe in list(self._edges.values()):
                if pipe.sock is not None:
                    tg.create_task(
                        pipe.sock.close(CloseCode.GOING_AWAY, "this server is restarting")
                    )
        await self.stop()

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        await self.replicas.stop(leaving=False)
        await self.bus.close()

    # ---- health ------------------------------------------------------------------------------

    async def problems(self) -> list[str]:
        """Why this replica should not take new connections now (empty: healthy)."""
        reasons = []
        if self.draining:
            reasons.append("draining: this replica is shutting down")
        if not self.bus.connected:
            reasons.append("NATS is unreachable")
        now = time.monotonic()
        if now - self._db_checked >= 1.0:
            self._db_checked = now
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self._store.settings.get("account_id")
                self._db_problem = None
            except (HatchwayError, TimeoutError) as exc:
                message = exc.message if isinstance(exc, HatchwayError) else "timed out"
                self._db_problem = f"the database is unreachable: {message}"
        if self._db_problem:
            reasons.append(self._db_problem)
        return reasons

    def _stats(self, me: ReplicaInfo) -> None:
        me.control_channels = self._control.count()
        me.sessions = len(self._gateway.live_ids())
        me.pipes = len(self._edges) + len(self._remote_ends)
        me.pipes_served = self._served
        me.draining = self.draining
        me.healthy = self.bus.connected and self._db_problem is None and not self.draining

    # ---- routing data channels ---------------------------------------------------------------

    async def route(self, session_id: str) -> str:
        """The replica that relays ``session_id``: ``""`` for this one (also when the session
        is unknown or over: the gateway refuses it with the reason). A session whose relay is
        gone is taken over here."""
        for _ in range(3):
            session = await self._store.sessions.get(session_id)
            if session is None or not session.status.is_active:
                return ""
            relay = session.relay
            if relay == self.replica_id:
                await self._settled(session_id)
                return ""
            if relay and self.replicas.alive(relay):
                return relay
            async with self._adopting(session_id):
                claimed = await self._store.sessions.claim_relay(session_id, self.replica_id, relay)
                if claimed:
                    log.info("session %s: relayed here now (its relay %s is gone)", session_id,
                             relay or "(none)")  # fmt: skip
                    await self.adopt([session])
            if claimed:
                return ""
        raise Unavailable(f"cannot settle which server relays {session_id}; try again")

    async def serve_client(self, sock: TextSocket, session_id: str) -> None:
        """A client's data channel (already upgraded), wherever its session is relayed."""
        first: str | None = None  # its first message, once read (to pipe it)
        for _ in range(3):
            try:
                relay = await self.route(session_id)
            except HatchwayError as exc:
                await sock.close(CloseCode.GOING_AWAY, exc.message)
                return
            if not relay:  # (moved here, if its first message was read to be piped elsewhere)
                end = sock if first is None else Replayed(sock, first)
                await self._gateway.serve_client(end, session_id)
                return
            if first is None:
                try:
                    async with asyncio.timeout(OPEN_TIMEOUT):
                        first = await sock.receive_text()
                except (TimeoutError, ChannelClosed, RemoteProtocolError):
                    why = "the first message must be a text OpenDataChannelInput"
                    await sock.close(CloseCode.POLICY, why)
                    return
                if await self._holds_a_fresh_token(session_id, first) and await self._take(
                    relay, session_id
                ):
                    await self._gateway.serve_client(Replayed(sock, first), session_id)
                    return
            pipe_id = secrets.token_hex(12)
            pipe = self._edge(pipe_id, relay)
            try:
                await self._call(relay, {"op": "open", "end": "client", "pipe": pipe_id,
                                         "session": session_id, "first": first})  # fmt: skip
            except Moved:
                self._edges.pop(pipe_id, None)
                continue
            except HatchwayError as exc:
                self._edges.pop(pipe_id, None)
                await sock.close(CloseCode.GOING_AWAY, f"{exc.message}; reconnect")
                return
            await self._run_edge(pipe_id, pipe, sock)
            return
        await sock.close(CloseCode.GOING_AWAY, "the session's relay keeps moving; reconnect")

    async def open_agent(self, session_id: str, node_id: str, source: str) -> str | None:
        """Before an agent's upgrade: admit it here (``None``) or at the session's relay
        (a pipe id for :meth:`run_agent`). Raises the relay's refusal."""
        assert self.hooks is not None
        for attempt in range(3):
            relay = await self.route(session_id)
            if not relay:
                return None
            if attempt == 0 and await self._take(relay, session_id, node_id):
                return None
            pipe_id = secrets.token_hex(12)
            self._edge(pipe_id, relay)
            try:
                await self._call(relay, {"op": "open", "end": "agent", "pipe": pipe_id,
                                         "session": session_id, "node": node_id,
                                         "source": source})  # fmt: skip
            except Moved:
                self._edges.pop(pipe_id, None)
                continue
            except BaseException:
                self._edges.pop(pipe_id, None)
                raise
            return pipe_id
        raise Unavailable("the session's relay keeps moving; try again")

    async def run_agent(self, pipe_id: str, sock: Socket) -> None:
        pipe = self._edges.get(pipe_id)
        if pipe is None:
            await sock.close(CloseCode.GOING_AWAY, "the session's relay went away; reconnect")
            return
        await self._run_edge(pipe_id, pipe, sock)

    def forget_agent(self, pipe_id: str) -> None:
        """The upgrade after :meth:`open_agent` failed: tell the relay the end is gone."""
        pipe = self._edges.pop(pipe_id, None)
        if pipe is not None:
            self._spawn(pipe.sender.send(PipeFrame.CLOSE, close_payload(None, "upgrade failed")))

    async def _holds_a_fresh_token(self, session_id: str, first: str) -> bool:
        """Whether a client's first message holds its session's token, never used yet (the
        session is new): only such a client may move the session (the relay's gateway still
        checks the token as for any end)."""
        try:
            opened = OpenDataChannelInput.from_json(first.encode())
            token = await self._store.sessions.token(hash_token(opened.token_value))
        except HatchwayError:
            return False
        return (
            token is not None
            and token.session_id == session_id
            and not token.revoked
            and token.first_used_at is None
        )

    async def _take(self, relay: str, session_id: str, node_id: str | None = None) -> bool:
        """Ask ``relay`` to hand over a new session no end has reached yet, whose first end
        (the node's, authenticated, or the client's, with its fresh token) has come here:
        relayed here, that end needs no pipe, and the other one only if it lands elsewhere.
        False: it stays where it is (an end came there first, or the relay refuses or cannot
        be asked); the caller pipes to it."""
        assert self.hooks is not None
        session = await self._store.sessions.get(session_id)
        if session is None or session.status != SessionStatus.CONNECTING or self.draining:
            return False
        if node_id is not None and session.target != node_id:
            return False
        async with self._adopting(session_id):  # its ends that come here meanwhile wait
            with contextlib.suppress(HatchwayError):
                await self._call(relay, {"op": "hand", "session": session_id})
            # The database decides, not the answer: a hand-over whose answer was lost (timed
            # out) happened all the same, and a refusal leaves the relay as it was.
            session = await self._store.sessions.get(session_id)
            if session is None or session.relay != self.replica_id:
                return False  # kept, ended meanwhile, or moved on: routed again
            if not session.status.is_active:
                return False
            self._gateway.take_in(session)
            if self.hooks.recordings is not None:
                await self.hooks.recordings.take(session_id, self._gateway.attach_recorder)
            if self.hooks.log_streams is not None:
                await self.hooks.log_streams.restore(
                    {session_id}, self._gateway.attach_log_stream, only={session_id}
                )
        log.info("session %s: relayed here, where its first end came (from %s)", session_id,
                 relay)  # fmt: skip
        return True

    async def _hand(self, message: dict[str, Any]) -> dict[str, Any]:
        """Another replica, reached by the first end of a new session relayed here, asks for
        it (:meth:`_take`): handed over if no end has come here, else kept."""
        assert self.hooks is not None
        session_id, to = str(message.get("session")), str(message.get("from_replica", ""))
        terminals = self.hooks.terminals
        if (
            self.draining
            or to in ("", self.replica_id)
            or not self.replicas.alive(to)
            or (terminals is not None and terminals.has(session_id))
        ):
            return {"handed": False}
        live = self._gateway.movable(session_id)
        if live is None:
            return {"handed": False}
        live.moving = True  # an end that comes now is sent to the new relay
        try:
            claimed = await self._store.sessions.claim_relay(session_id, to, self.replica_id)
        finally:
            live.moving = False
        if not claimed:
            return {"handed": False}
        await self._gateway.release(session_id)
        if self.hooks.recordings is not None:
            await self.hooks.recordings.let_go(session_id)
        if self.hooks.log_streams is not None:
            self.hooks.log_streams.let_go(session_id)
        log.info("session %s: handed to %s, where its first end came", session_id, to)
        return {"handed": True}

    def _edge(self, pipe_id: str, relay: str) -> EdgePipe:
        sender = PipeSender(self.bus, self.bus.subject("r", relay, "p", pipe_id))
        pipe = EdgePipe(sender, relay)
        self._edges[pipe_id] = pipe
        return pipe

    async def _run_edge(self, pipe_id: str, pipe: EdgePipe, sock: Socket) -> None:
        try:
            if not self.replicas.alive(pipe.relay):
                pipe.relay_gone()
            await pipe.run(sock)
        finally:
            self._edges.pop(pipe_id, None)

    async def serve_console(
        self, request: web.Request, session_id: str, user_id: str, offset: int
    ) -> web.StreamResponse | None:
        """A browser's terminal WebSocket for a console terminal of another replica (the
        session's relay, which started it): piped there. ``None``: no other replica has it."""
        from aiohttp import web

        from hatchway.server.cluster.consolepipe import BrowserEdge

        session = await self._store.sessions.get(session_id)
        relay = session.relay if session is not None else ""
        if relay in ("", self.replica_id) or not self.replicas.alive(relay):
            return None
        pipe_id = secrets.token_hex(12)
        edge = BrowserEdge(PipeSender(self.bus, self.bus.subject("r", relay, "p", pipe_id)), relay)
        self._edges[pipe_id] = edge  # type: ignore[assignment]
        try:
            await self._call(relay, {"op": "open", "end": "console", "pipe": pipe_id,
                                     "session": session_id, "user": user_id,
                                     "offset": offset})  # fmt: skip
        except HatchwayError:
            self._edges.pop(pipe_id, None)
            raise
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4 * 1024 * 1024)
        try:
            await ws.prepare(request)
            await edge.run(ws)
        finally:
            self._edges.pop(pipe_id, None)
        return ws

    # ---- routing control messages ------------------------------------------------------------

    async def reachable(self, node_id: str) -> bool:
        if self._control.is_connected(node_id):
            return True
        node = await self._store.nodes.get(node_id)
        return (
            node is not None
            and node.connected
            and node.replica not in ("", self.replica_id)
            and self.replicas.alive(node.replica)
        )

    async def to_node(self, node_id: str, message: dict[str, Any]) -> None:
        """Deliver a control message to the replica holding ``node_id``'s control channel.

        Raises:
            TargetNotConnected: no replica holds it.
        """
        node = await self._store.nodes.get(node_id)
        if node is None or not node.connected or node.replica in ("", self.replica_id):
            raise TargetNotConnected(f"{node_id} is not connected.")
        try:
            await self._call(node.replica, {"op": "control", "node": node_id, **message})
        except NoResponder as exc:
            raise TargetNotConnected(f"{node_id} is not connected.") from exc

    # ---- broadcasts --------------------------------------------------------------------------

    async def broadcast(self, op: str, **fields: Any) -> None:
        body = Freshness.stamp({"op": op, "from": self.replica_id, **fields}, self._clock())
        try:
            await self.bus.publish(self.bus.subject("all"), body)
        except HatchwayError as exc:
            log.warning("cannot tell the other replicas (%s): %s", op, exc.message)

    async def _broadcast(self, _subject: str, body: bytes, _reply: str | None) -> None:
        try:
            message = self._fresh.check(body)
        except RemoteProtocolError as exc:
            log.warning("ignored a broadcast: %s", exc.message)
            return
        if message.get("from") == self.replica_id or self.hooks is None:
            return
        op = message.get("op")
        if op == "node_gone" and isinstance(message.get("node"), str):
            if not self._control.is_connected(message["node"]):
                self._gateway.node_gone(message["node"])
        elif op == "session_end" and isinstance(message.get("session"), str):
            if self._gateway.live(message["session"]) is not None:
                await self.hooks.end_here(message["session"], str(message.get("output", "")))
        elif op == "access_changed":
            self.hooks.access_changed()

    def access_changed(self) -> None:
        """Identities, policies or tags changed: every replica re-checks its sessions."""
        if self.hooks is not None:
            self.hooks.access_changed()
        self._spawn(self.broadcast("access_changed"))

    # ---- requests between replicas -----------------------------------------------------------

    async def _call(self, replica: str, message: dict[str, Any]) -> dict[str, Any]:
        """A request to ``replica``; its refusal raised as the same error class."""
        subject = self.bus.subject("r", replica, "rpc")
        message = {**message, "from_replica": self.replica_id}
        try:
            raw = await self.bus.request(
                subject, Freshness.stamp(message, self._clock()), timeout=RPC_TIMEOUT
            )
        except NoResponder:
            self.replicas.suspect(replica)
            raise
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise Unavailable(f"a bad answer from replica {replica}") from exc
        if not isinstance(answer, dict):
            raise Unavailable(f"a bad answer from replica {replica}")
        if "error" in answer:
            kind = _ERRORS.get(str(answer.get("kind")), Unavailable)
            raise kind(str(answer.get("error")))
        return answer

    async def _rpc(self, subject: str, body: bytes, reply: str | None) -> None:
        try:
            message = self._fresh.check(body)
            answer = await self._answer(message)
        except HatchwayError as exc:
            # The nearest class both sides know (e.g. InvalidInstanceId crosses as NotFound).
            kind = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS),
                        "Unavailable")  # fmt: skip
            answer = {"error": exc.message, "kind": kind}
        except Exception:
            log.exception("a request from another replica failed")
            answer = {"error": "internal error in the relaying server", "kind": "Unavailable"}
        if reply:
            try:
                await self.bus.reply(subject, reply, json.dumps(answer).encode())
            except HatchwayError as exc:
                log.info("cannot answer a request: %s", exc.message)

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "open":
            return await self._open(message)
        if op == "control":
            return await self._control_message(message)
        if op == "hand":
            return await self._hand(message)
        raise RemoteProtocolError(f"unknown request {op!r}")

    async def _open(self, message: dict[str, Any]) -> dict[str, Any]:
        """An end of a session relayed here reached another replica (``edge``)."""
        assert self.hooks is not None
        if self.draining:
            raise Unavailable("the session's relay is restarting")
        session_id, pipe_id = str(message.get("session")), str(message.get("pipe"))
        end, edge = message.get("end"), str(message.get("from_replica", ""))
        if end == "console":
            return self._open_console(message, session_id, pipe_id, edge)
        relay = await self.route(session_id)  # takes it in if the database says it is ours
        if relay:
            raise Moved(f"session {session_id} is relayed by {relay}")
        sender = PipeSender(self.bus, self.bus.subject("r", edge or "-", "p", pipe_id))
        self._served += 1
        if end == "agent":
            live = await self.hooks.admit_agent(
                session_id, str(message.get("node")), str(message.get("source", ""))
            )
            remote = RemoteEnd(sender, f"agent:{session_id}@{edge}", edge)
            self._remote_ends[pipe_id] = remote
            self._spawn(self._serve_remote(pipe_id, self._gateway.serve_agent(remote, live)))
        elif end == "client":
            first = message.get("first")
            if not isinstance(first, str):
                raise RemoteProtocolError("a client end without its first message")
            remote = RemoteEnd(sender, f"client:{session_id}@{edge}", edge, first_text=first)
            self._remote_ends[pipe_id] = remote
            self._spawn(self._serve_remote(pipe_id, self._gateway.serve_client(remote, session_id)))
        else:
            raise RemoteProtocolError(f"unknown end {end!r}")
        return {"ok": True}

    def _open_console(
        self, message: dict[str, Any], session_id: str, pipe_id: str, edge: str
    ) -> dict[str, Any]:
        """A browser reached another replica for a console terminal that lives here."""
        from hatchway.server.cluster.consolepipe import RemoteBrowser

        assert self.hooks is not None
        if self.hooks.terminals is None:
            raise NotFound(f"No console terminal for session {session_id}.")
        terminal = self.hooks.terminals.get(session_id, str(message.get("user")))
        offset = message.get("offset")
        sender = PipeSender(self.bus, self.bus.subject("r", edge or "-", "p", pipe_id))
        browser = RemoteBrowser(sender, edge)
        self._remote_ends[pipe_id] = browser  # type: ignore[assignment]
        self._served += 1
        start = max(0, offset) if isinstance(offset, int) else 0
        self._spawn(self._serve_remote(pipe_id, terminal.serve_browser(browser, start)))
        return {"ok": True}

    async def _serve_remote(self, pipe_id: str, serving: Awaitable[None]) -> None:
        try:
            await serving
        finally:
            end = self._remote_ends.pop(pipe_id, None)
            if isinstance(end, RemoteEnd):
                await end.close(CloseCode.GOING_AWAY, "")
            elif end is not None:
                await end.close(code=CloseCode.GOING_AWAY)

    async def _control_message(self, message: dict[str, Any]) -> dict[str, Any]:
        node_id, action = str(message.get("node")), message.get("action")
        if action == "start":
            task = AgentTaskPayload.from_json(str(message.get("task", "")).encode())
            await self._control.start_session(node_id, task)
        elif action == "end":
            await self._control.end_session(
                node_id, str(message.get("session")), str(message.get("output", ""))
            )
        elif action == "drop":
            await self._control.drop(node_id, str(message.get("reason", "")))
        else:
            raise RemoteProtocolError(f"unknown control action {action!r}")
        return {"ok": True}

    async def _pipe_message(self, subject: str, body: bytes, _reply: str | None) -> None:
        pipe_id = subject.rsplit(".", 1)[-1]
        try:
            seq, kind, payload = unpack_pipe(body)
        except RemoteProtocolError:
            return
        remote = self._remote_ends.get(pipe_id)
        if remote is not None:
            remote.incoming(seq, kind, payload)
            return
        edge = self._edges.get(pipe_id)
        if edge is not None:
            edge.incoming(seq, kind, payload)

    # ---- taking over -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _adopting(self, session_id: str | None = None) -> AsyncIterator[None]:
        """While sessions are being taken in here (from the database's compare-and-set until
        their recorders and log streams are attached), their ends wait in :meth:`route`:
        an end that joined earlier would relay frames no recording sees. ``session_id``:
        just that session is (else any may be: a take-over)."""
        done = asyncio.get_running_loop().create_future()
        self._adoptions[done] = session_id
        try:
            yield
        finally:
            del self._adoptions[done]
            done.set_result(None)

    async def _settled(self, session_id: str) -> None:
        """Wait (bounded) for the adoptions under way here that may concern ``session_id``."""
        waits = [f for f, which in self._adoptions.items() if which in (None, session_id)]
        if waits:
            await asyncio.wait(waits, timeout=ADOPTION_WAIT)

    async def adopt(self, sessions: list[Session]) -> None:
        """Relay ``sessions`` here from now on (their ends have the grace to come back).

        Called within :meth:`_adopting`, so that no end joins before the recording does."""
        if not sessions:
            return
        ids = {s.session_id for s in sessions}
        await self._gateway.restore(sessions)
        if self.hooks is not None and self.hooks.recordings is not None:
            await self.hooks.recordings.restore(ids, self._gateway.attach_recorder, only=ids)
        if self.hooks is not None and self.hooks.log_streams is not None:
            await self.hooks.log_streams.restore(ids, self._gateway.attach_log_stream, only=ids)

    async def _replica_gone(self, replica: str) -> None:
        for pipe in self._edges.values():
            if pipe.relay == replica:
                pipe.relay_gone()
        for end in self._remote_ends.values():
            if end.edge == replica:
                end.edge_gone()
        try:
            await self.take_over(replica)
        except HatchwayError as exc:
            log.warning("cannot take over from %s now (%s); the sweep tries again", replica,
                        exc.message)  # fmt: skip

    async def take_over(self, replica: str) -> None:
        """Take the sessions ``replica`` relayed; mark the nodes it held disconnected."""
        async with self._adopting():
            sessions = await self._store.sessions.take_over(replica, self.replica_id)
            if sessions:
                log.info("took over %d session(s) from replica %s", len(sessions),
                         replica or "(none)")  # fmt: skip
                await self.adopt(sessions)
        events = self._control.events
        nodes = await self._store.nodes.release_replica(
            replica, lambda node: events.node_offline(node, f"its server replica {replica} is gone")
        )
        for node in nodes:
            if not self._control.is_connected(node):
                self._gateway.node_gone(node)
            await self.broadcast("node_gone", node=node)

    async def _sweep(self) -> None:
        """Sessions whose relay is gone, and nodes whose replica is (missed while this
        replica was away from NATS, left by a drain nobody took, or by a whole cluster's
        restart), are taken over."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            if not self.replicas.warm or self.draining:
                continue
            try:
                held = await self._store.sessions.relays() | await self._store.nodes.holders()
                for replica in held:
                    if not self.replicas.alive(replica):
                        await self.take_over(replica)
            except HatchwayError as exc:
                log.info("sweep: %s", exc.message)

    async def _check_ownership(self) -> None:
        """Sessions relayed here that another replica took over (this one was cut off from
        NATS for a while) are let go: their ends re-dial the new relay."""
        while True:
            await asyncio.sleep(OWNERSHIP_INTERVAL)
            if self.draining:
                continue
            try:
                lost = await self._store.sessions.relayed_elsewhere(
                    self._gateway.live_ids(), self.replica_id
                )
            except HatchwayError:
                continue
            for session_id in lost:
                session = await self._store.sessions.get(session_id)
                live = self._gateway.live(session_id)
                if live is None or live.moving:
                    continue  # handed over meanwhile (_hand lets it go itself)
                if session is not None and session.status.is_active:
                    log.warning("session %s is relayed by %s now; letting it go", session_id,
                                session.relay)  # fmt: skip
                    await self._gateway.release(session_id)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ClusterNotices:
    """What ``SessionService`` tells the other replicas (``sessions.Elsewhere``)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    async def session_ended(self, session_id: str, output: str) -> None:
        await self._cluster.broadcast("session_end", session=session_id, output=output)

    async def node_gone(self, node_id: str) -> None:
        await self._cluster.broadcast("node_gone", node=node_id)


class RoutedControl:
    """Control messages to nodes wherever their control channel is (``SessionService`` and
    ``NodeService`` use it as they use ``ControlChannels`` on a single server)."""

    def __init__(self, local: ControlChannels, cluster: Cluster) -> None:
        self._local = local
        self._cluster = cluster

    def is_connected(self, node_id: str) -> bool:
        return self._local.is_connected(node_id)

    async def reachable(self, node_id: str) -> bool:
        return await self._cluster.reachable(node_id)

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        if self._local.is_connected(node_id):
            await self._local.start_session(node_id, task)
            return
        await self._cluster.to_node(node_id, {"action": "start", "task": task.to_json().decode()})

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None:
        if self._local.is_connected(node_id):
            await self._local.end_session(node_id, session_id, output)
            return
        with contextlib.suppress(TargetNotConnected):
            await self._cluster.to_node(
                node_id, {"action": "end", "session": session_id, "output": output}
            )

    async def drop(self, node_id: str, reason: str) -> None:
        await self._local.drop(node_id, reason)
        with contextlib.suppress(TargetNotConnected):
            await self._cluster.to_node(node_id, {"action": "drop", "reason": reason})
