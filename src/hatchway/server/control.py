"""Agents' control channels: one outbound WebSocket per node (docs/protocol.md §10.3).

The server pushes ``interactive_shell`` (start a session) and ``channel_closed`` (end one) to
the agent; the agent sends ``agent_heartbeat`` every ``heartbeat_interval`` seconds and
``agent_task_complete`` when a session ends, which the server answers with
``agent_task_acknowledge``. Messages are decoded and checked in one place for both ends
(``protocol.controlchannel``).

Each channel is independent and hard to kill by accident: a malformed message is dropped and
counted (the log gets the first few and then a summary at most every 10 s), and only a node that
keeps sending them is disconnected (``POLICY``); a failing database delays heartbeats and
acknowledgements but never ends a channel. A node that stays silent for two heartbeat periods
is closed (``UNRESPONSIVE``), so that an agent that vanished without a TCP close counts as gone.
Heartbeats go to the node presence kept in memory (``server.presence``), which writes every
node's newest beat to the database in batches; the sessions a heartbeat lists are handled by a
per-channel task that keeps only the newest heartbeat, so a slow database never holds up
reading. Each completion is handled in a task of its own and acknowledged once it is recorded
(the agent resends until then).

Which agent may hold a node's channel: the one with the highest generation
(docs/protocol.md §10.3). A newer generation supersedes an older one (``SUPERSEDED``), a lower
one is refused before the upgrade (HTTP 409), and the same generation replaces its own older
connection (``REPLACED``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from aiohttp import web

from hatchway.errors import Conflict, HatchwayError, RemoteProtocolError, TargetNotConnected
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.controlchannel import (
    MAX_CONTROL_MESSAGE,
    ConnectionReport,
    EndSession,
    FloodMeter,
    Heartbeat,
    LogBudget,
    Sender,
    StartSession,
    TaskAcknowledge,
    TaskComplete,
    decode,
    encode,
)
from hatchway.protocol.payloads import AgentTaskPayload
from hatchway.protocol.timing import liveness_window
from hatchway.server.events.catalog import EventCatalog
from hatchway.server.presence import Presence
from hatchway.server.settings import ServerSettings
from hatchway.store.events import Event
from hatchway.store.records import Heartbeat as NodeBeat
from hatchway.transport.aiohttp_socket import AiohttpSocket, aiohttp_max_msg_size
from hatchway.transport.socket import Socket

log = logging.getLogger(__name__)

TaskCompleteHandler = Callable[[str, TaskComplete], Awaitable[None]]
NodeGoneHandler = Callable[[str], Awaitable[None]]
SessionsReportHandler = Callable[[str, frozenset[str]], Awaitable[None]]
ConnectionsHandler = Callable[[str, ConnectionReport], Awaitable[None]]

#: A node that sends more than this many malformed control messages ...
BAD_MESSAGE_LIMIT: Final = 100
#: ... within this many seconds is disconnected with ``CloseCode.POLICY``.
BAD_MESSAGE_WINDOW: Final = 10.0
#: Log lines about bad messages or failed handling: this many per period, then one summary.
LOG_BURST: Final = 5
LOG_PERIOD: Final = 10.0
#: Completions of one node being recorded at once; more are dropped (the agent resends).
MAX_PENDING_COMPLETIONS: Final = 1000
#: Connection reports of one node being recorded at once; more are dropped (and counted).
MAX_PENDING_REPORTS: Final = 8
#: Seconds between two looks for channels silent past the liveness window.
SILENCE_CHECK: Final = 1.0


class NodeStatus(Protocol):
    """What the control channels write about nodes (``store.repositories.NodeRepository``)."""

    async def mark_connected(
        self,
        instance_id: str,
        connected: bool,
        now: float,
        *,
        events: Sequence[Event] = (),
        replica: str = "",
    ) -> bool: ...

    async def record_presence(
        self,
        changed: Sequence[NodeBeat],
        pings: Sequence[tuple[str, float]],
        *,
        replica: str = "",
    ) -> None: ...

    async def claim_generation(self, instance_id: str, generation: int) -> bool: ...


class NodeStore(Protocol):
    """The part of ``store.Store`` the control channels use."""

    @property
    def nodes(self) -> NodeStatus: ...


class NodeControl(Protocol):
    """Messages to nodes: ``ControlChannels`` on one server, routed ones across replicas
    (``server.cluster.service.RoutedControl``)."""

    def is_connected(self, node_id: str) -> bool: ...

    async def reachable(self, node_id: str) -> bool: ...

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None: ...

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None: ...

    async def drop(self, node_id: str, reason: str) -> None: ...


@dataclass(eq=False)
class ControlChannel:
    """One node's live control channel."""

    node_id: str
    socket: Socket
    generation: int
    flood: FloodMeter = field(
        default_factory=lambda: FloodMeter(limit=BAD_MESSAGE_LIMIT, window=BAD_MESSAGE_WINDOW)
    )
    #: The newest heartbeat not yet written (older ones are superseded, never queued).
    pending_beat: Heartbeat | None = None
    beat_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    reading: bool = True
    #: Connection reports being recorded now, and how many were dropped for lack of room.
    recording: int = 0
    reports_dropped: int = 0
    completing: set[uuid.UUID] = field(default_factory=set)
    #: When the node was last heard from (loop clock); not watched for silence until the
    #: channel is marked connected and reading starts.
    last_heard: float = math.inf
    #: Being closed for its silence.
    silenced: bool = False


class ControlChannels:
    """The live control channel of every node connected to this server.

    The composition root sets the callbacks:

    * ``on_task_complete(node_id, done)``: a session ended on the node; when it returns the
      completion is acknowledged, when it raises the agent sends it again a second later.
    * ``on_node_gone(node_id)``: the node's channel closed for good (a drop, or the agent
      stopped); not called when a newer connection replaced it, nor on deregistration or
      server shutdown.
    * ``on_sessions_reported(node_id, session_ids)``: every heartbeat, the sessions the agent
      runs. A session the server started a moment ago may not be listed yet.
    """

    def __init__(
        self,
        store: NodeStore,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self._nodes = store.nodes
        self._settings = settings
        self._clock = clock
        #: Scale-out: this replica's id, recorded as the holder of its nodes' channels.
        self.replica_id = ""
        self.on_task_complete: TaskCompleteHandler | None = None
        self.on_node_gone: NodeGoneHandler | None = None
        self.on_sessions_reported: SessionsReportHandler | None = None
        self.on_connections: ConnectionsHandler | None = None
        self._channels: dict[str, ControlChannel] = {}
        #: The highest agent generation seen per node (the database holds the truth).
        self._generations: dict[str, int] = {}
        self._bad_log = LogBudget(burst=LOG_BURST, period=LOG_PERIOD)
        self._fail_log = LogBudget(burst=LOG_BURST, period=LOG_PERIOD)
        self.events = EventCatalog(clock)
        #: Heartbeats, written to the database in batches (``server.presence``).
        self.presence = Presence(self._nodes, settings.presence_write_interval)
        self._silence_watch: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def is_connected(self, node_id: str) -> bool:
        channel = self._channels.get(node_id)
        return channel is not None and not channel.socket.closed

    async def reachable(self, node_id: str) -> bool:
        """Whether a session can be started on the node now (its channel is up here)."""
        return self.is_connected(node_id)

    def count(self) -> int:
        """How many control channels this server holds."""
        return len(self._channels)

    # ---- opening ---------------------------------------------------------------------------

    async def admit(self, node_id: str, generation: int) -> None:
        """Before the upgrade: refuse an agent older than one that already connected.

        Raises:
            Conflict: a higher generation of this node's agent has connected (HTTP 409).
            StoreError: the database failed (the agent retries).
        """
        if generation < self._generations.get(node_id, 0) or not await self._nodes.claim_generation(
            node_id, generation
        ):
            raise Conflict(
                "a newer agent took over this node's state directory; this one must stop"
            )
        self._generations[node_id] = max(generation, self._generations.get(node_id, 0))

    async def serve(
        self, request: web.Request, node_id: str, generation: int = 0
    ) -> web.WebSocketResponse:
        """Accept an authenticated, admitted upgrade and run the channel until it closes."""
        ws = web.WebSocketResponse(
            max_msg_size=aiohttp_max_msg_size(MAX_CONTROL_MESSAGE),
            autoping=True,
            heartbeat=None,
        )
        await ws.prepare(request)
        transport = request.transport
        socket = AiohttpSocket(
            ws,
            f"control:{node_id}",
            abort=transport.abort if transport is not None else None,
            max_size=MAX_CONTROL_MESSAGE,
        )
        await self.run(socket, node_id, generation)
        return ws

    async def run(self, socket: Socket, node_id: str, generation: int = 0) -> None:
        """Run one node's control channel over ``socket`` until it closes."""
        channel = ControlChannel(node_id, socket, generation)
        old = self._channels.get(node_id)
        if generation < self._generations.get(node_id, 0) or (
            old is not None and generation < old.generation
        ):
            # A newer agent got in between this one's admission and now.
            await socket.close(CloseCode.SUPERSEDED, "a newer agent took over this node")
            return
        self._generations[node_id] = max(generation, self._generations.get(node_id, 0))
        self._channels[node_id] = channel
        if old is not None:
            if old.generation < generation:
                code, why = CloseCode.SUPERSEDED, "a newer agent took over this node"
            else:
                code, why = CloseCode.REPLACED, "replaced by a newer connection"
            await old.socket.close(code, why)
        log.info("node %s connected its control channel (agent generation %d)", node_id, generation)
        self.presence.start()
        try:
            await self._guarded(
                node_id,
                "mark it connected",
                self._nodes.mark_connected(
                    node_id,
                    True,
                    self._clock(),
                    events=self.events.node_online(node_id) if old is None else (),
                    replica=self.replica_id,
                ),
            )
            channel.last_heard = asyncio.get_running_loop().time()
            self._watch_silence()
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._report_sessions(channel))
                await self._read(channel, tasks)
                channel.reading = False
                channel.beat_arrived.set()
                await writer  # the newest heartbeat's sessions are handled before the end
        finally:
            await socket.close()
            if self._channels.get(node_id) is channel:  # closed for good, not replaced
                del self._channels[node_id]
                log.info("node %s control channel closed (%s)", node_id,
                         CloseCode.describe(socket.close_code))  # fmt: skip
                last = self.presence.forget(node_id)
                if last is not None:  # its newest beat goes before its disconnection
                    await self._guarded(
                        node_id,
                        "record its last heartbeat",
                        self._nodes.record_presence((last,), (), replica=self.replica_id),
                    )
                await self._guarded(
                    node_id,
                    "mark it disconnected",
                    self._nodes.mark_connected(
                        node_id,
                        False,
                        self._clock(),
                        events=self.events.node_offline(
                            node_id, CloseCode.describe(socket.close_code)
                        ),
                        replica=self.replica_id,
                    ),
                )
                await self._notify_gone(node_id)

    # ---- receiving -------------------------------------------------------------------------

    async def _read(self, channel: ControlChannel, tasks: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        async for data in channel.socket:
            channel.last_heard = loop.time()
            try:
                message = decode(data, sender=Sender.AGENT)
            except RemoteProtocolError as exc:
                if await self._bad_message(channel, exc):
                    return
                continue
            if isinstance(message, Heartbeat):
                self.presence.beat(
                    NodeBeat(
                        channel.node_id,
                        self._clock(),
                        computer_name=message.hostname,
                        platform_type=message.platform_type,
                        platform_name=message.platform_name,
                        platform_version=message.platform_version,
                        ip_address=message.ip_address,
                        agent_version=message.agent_version,
                    )
                )
                if self.on_sessions_reported is not None:
                    channel.pending_beat = message
                    channel.beat_arrived.set()
            elif isinstance(message, TaskComplete):
                self._complete_soon(channel, message, tasks)
            elif isinstance(message, ConnectionReport):
                self._record_connections_soon(channel, message, tasks)

    def _watch_silence(self) -> None:
        """Start the one task that closes silent channels, unless it runs (idempotent)."""
        if self._silence_watch is None or self._silence_watch.done():
            self._silence_watch = asyncio.create_task(self._close_silent(), name="silent nodes")

    async def _close_silent(self) -> None:
        """Close the channels that went silent (an agent that vanished without a TCP close:
        power loss, a cut link), so their nodes count as gone at once.

        One task for every channel, looking each :data:`SILENCE_CHECK` seconds, rather than a
        timer task per channel: 10,000 idle nodes cost 10,000 comparisons a second, not
        10,000 tasks' memory.
        """
        loop = asyncio.get_running_loop()
        window = liveness_window(self._settings.heartbeat_interval)
        while True:
            await asyncio.sleep(SILENCE_CHECK)
            now = loop.time()
            for channel in list(self._channels.values()):
                idle = now - channel.last_heard
                if idle <= window or channel.silenced:
                    continue
                channel.silenced = True
                log.info("node %s sent nothing for %.0f s; closing its control channel",
                         channel.node_id, idle)  # fmt: skip
                closing = asyncio.create_task(
                    channel.socket.close(
                        CloseCode.UNRESPONSIVE, f"no heartbeat for {window:.0f} s; reconnect"
                    )
                )
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def _bad_message(self, channel: ControlChannel, exc: RemoteProtocolError) -> bool:
        """Count a malformed message; True when the node is disconnected for sending too many."""
        now = asyncio.get_running_loop().time()
        write, left_out = self._bad_log.admit(now)
        if left_out:
            log.warning("%d more bad control messages were not logged", left_out)
        if write:
            log.info("node %s sent a bad control message: %s", channel.node_id, exc.message)
        if not channel.flood.hit(now):
            return False
        log.warning(
            "node %s sent more than %d bad control messages in %.0f s (%d in all); "
            "disconnecting it",
            channel.node_id,
            BAD_MESSAGE_LIMIT,
            BAD_MESSAGE_WINDOW,
            channel.flood.total,
        )
        await channel.socket.close(
            CloseCode.POLICY,
            f"too many malformed control messages (over {BAD_MESSAGE_LIMIT} in "
            f"{BAD_MESSAGE_WINDOW:.0f} s)",
        )
        return True

    async def _report_sessions(self, channel: ControlChannel) -> None:
        """Hand the sessions listed by the newest heartbeat to ``on_sessions_reported``
        whenever one arrived (older ones waiting are superseded)."""
        while True:
            await channel.beat_arrived.wait()
            channel.beat_arrived.clear()
            beat, channel.pending_beat = channel.pending_beat, None
            if beat is not None:
                await self._sessions_reported(channel.node_id, beat)
            if not channel.reading and channel.pending_beat is None:
                return

    async def _sessions_reported(self, node_id: str, beat: Heartbeat) -> None:
        if self.on_sessions_reported is not None:
            await self._guarded(
                node_id,
                "handle the reported sessions",
                self.on_sessions_reported(node_id, frozenset(beat.session_ids)),
            )

    def _complete_soon(
        self, channel: ControlChannel, done: TaskComplete, tasks: asyncio.TaskGroup
    ) -> None:
        if done.message_id in channel.completing:
            return  # a resend of one being recorded now
        if len(channel.completing) >= MAX_PENDING_COMPLETIONS:
            return  # the agent resends it
        channel.completing.add(done.message_id)
        tasks.create_task(self._complete(channel, done))

    def _record_connections_soon(
        self, channel: ControlChannel, report: ConnectionReport, tasks: asyncio.TaskGroup
    ) -> None:
        """Record a port session's connections in the background; a node that sends reports
        faster than the database takes them loses the excess (counted in the log), never
        its channel."""
        if self.on_connections is None:
            return
        if channel.recording >= MAX_PENDING_REPORTS:
            channel.reports_dropped += 1
            if channel.reports_dropped in (1, 100, 10_000):
                log.warning(
                    "node %s reports connections faster than they are recorded; %d report(s) "
                    "dropped",
                    channel.node_id,
                    channel.reports_dropped,
                )
            return
        channel.recording += 1
        tasks.create_task(self._record_connections(channel, report))

    async def _record_connections(self, channel: ControlChannel, report: ConnectionReport) -> None:
        try:
            assert self.on_connections is not None
            await self._guarded(
                channel.node_id,
                f"record the connections of {report.session_id}",
                self.on_connections(channel.node_id, report),
            )
        finally:
            channel.recording -= 1

    async def _complete(self, channel: ControlChannel, done: TaskComplete) -> None:
        try:
            if self.on_task_complete is not None and not await self._guarded(
                channel.node_id,
                f"record the end of {done.task_id}",
                self.on_task_complete(channel.node_id, done),
            ):
                return  # not acknowledged: the agent sends it again
            ack = TaskAcknowledge(done.message_id, done.task_id, done.topic)
            await channel.socket.send(encode(ack, now=self._clock()))
        finally:
            channel.completing.discard(done.message_id)

    # ---- guards ----------------------------------------------------------------------------

    async def _guarded(self, node_id: str, what: str, work: Awaitable[object]) -> bool:
        """Run one message's handling; a failure is logged (rate-limited), never raised."""
        try:
            await work
            return True
        except HatchwayError as exc:
            self._log_failure(node_id, what, exc.message)
        except Exception:
            if self._admit_failure_log():
                log.exception("node %s: cannot %s", node_id, what)
        return False

    def _log_failure(self, node_id: str, what: str, message: str) -> None:
        if self._admit_failure_log():
            log.warning("node %s: cannot %s now: %s", node_id, what, message)

    def _admit_failure_log(self) -> bool:
        write, left_out = self._fail_log.admit(asyncio.get_running_loop().time())
        if left_out:
            log.warning("%d more control-channel failures were not logged", left_out)
        return write

    async def _notify_gone(self, node_id: str) -> None:
        if self.on_node_gone is not None:
            await self._guarded(node_id, "handle its departure", self.on_node_gone(node_id))

    # ---- sending ---------------------------------------------------------------------------

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        """Push ``interactive_shell`` to the node; TargetNotConnected if it is not connected."""
        channel = self._channels.get(node_id)
        frame = encode(StartSession(task), now=self._clock())
        if channel is None or not await channel.socket.send(frame):
            raise TargetNotConnected(f"{node_id} is not connected.")

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None:
        """Tell the node to end a session (``channel_closed`` on the control channel)."""
        channel = self._channels.get(node_id)
        if channel is None:
            return
        message = EndSession(session_id=session_id, node_id=node_id, output=output)
        await channel.socket.send(encode(message, now=self._clock()))

    async def drop(self, node_id: str, reason: str) -> None:
        """Close a node's channel now (deregistration)."""
        channel = self._channels.pop(node_id, None)
        self._generations.pop(node_id, None)
        if channel is not None:
            await channel.socket.close(CloseCode.DEREGISTERED, reason)

    async def close_all(self) -> None:
        """Close every channel (server shutdown), and write the presence still waiting."""
        channels = list(self._channels.values())
        self._channels.clear()
        watch, self._silence_watch = self._silence_watch, None
        if watch is not None:
            watch.cancel()
        await asyncio.gather(
            *(c.socket.close(CloseCode.GOING_AWAY, "server shutting down") for c in channels)
        )
        await self.presence.close()
