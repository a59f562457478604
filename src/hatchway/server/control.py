"""Agents' control channels: one outbound WebSocket per node (DESIGN.md §4, §9).

The server pushes ``interactive_shell`` (start a session) and ``channel_closed`` (end one) to
the agent; the agent sends ``agent_heartbeat`` every ``heartbeat_interval`` seconds and
``agent_task_complete`` when a session ends, which the server answers with
``agent_task_acknowledge`` (protocol.md §9.4, §9.5). All use the 120-byte-header frames.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from hatchway.errors import HatchwayError, RemoteProtocolError, TargetNotConnected
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.frames import MessageType, decode_frame
from hatchway.protocol.payloads import (
    AgentHeartbeat,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosedPayload,
    MGSPayload,
)
from hatchway.server.settings import ServerSettings
from hatchway.store.store import Store
from hatchway.transport.websocket import AiohttpSocket

log = logging.getLogger(__name__)

TaskCompleteHandler = Callable[[str, AgentTaskComplete], Awaitable[None]]
NodeGoneHandler = Callable[[str], Awaitable[None]]


@dataclass
class ControlChannel:
    node_id: str
    peer: AiohttpSocket


class ControlChannels:
    """The live control channel of every node connected to this server."""

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        # Set by the composition root: the session service that records a finished session.
        self.on_task_complete: TaskCompleteHandler | None = None
        # Set by the composition root: told when a node's channel closes for good (not
        # replaced by a newer one), so its sessions' clients hear of it at once.
        self.on_node_gone: NodeGoneHandler | None = None
        self._channels: dict[str, ControlChannel] = {}

    def is_connected(self, node_id: str) -> bool:
        channel = self._channels.get(node_id)
        return channel is not None and not channel.peer.closed

    async def serve(self, request: web.Request, node_id: str) -> web.WebSocketResponse:
        """Run one agent's control channel until it closes."""
        ws = web.WebSocketResponse(
            max_msg_size=self._settings.max_frame_size,
            autoping=True,
            heartbeat=None,
        )
        await ws.prepare(request)
        abort = request.transport.abort if request.transport is not None else None
        peer = AiohttpSocket(ws, f"control:{node_id}", abort=abort)
        channel = ControlChannel(node_id, peer)
        old = self._channels.get(node_id)
        self._channels[node_id] = channel
        if old is not None:
            await old.peer.close(CloseCode.REPLACED, "replaced by a newer connection")
        await self._store.nodes.mark_connected(node_id, True, self._clock())
        log.info("node %s connected its control channel", node_id)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self._receive(channel, msg.data)
        finally:
            if self._channels.get(node_id) is channel:
                del self._channels[node_id]
                if self.on_node_gone is not None:
                    try:
                        await self.on_node_gone(node_id)
                    except HatchwayError as exc:
                        log.warning("node %s went away: %s", node_id, exc.message)
                try:
                    await self._store.nodes.mark_connected(node_id, False, self._clock())
                except HatchwayError as exc:
                    log.debug("cannot mark %s disconnected: %s", node_id, exc)
                log.info("node %s control channel closed", node_id)
        return ws

    async def _receive(self, channel: ControlChannel, data: bytes) -> None:
        try:
            frame = decode_frame(data, max_size=self._settings.max_frame_size)
            if frame.message_type == MessageType.AGENT_HEARTBEAT:
                beat = AgentHeartbeat.from_json(frame.payload)
                await self._store.nodes.heartbeat(
                    channel.node_id,
                    self._clock(),
                    computer_name=beat.hostname,
                    platform_type=beat.platform_type,
                    platform_name=beat.platform_name,
                    platform_version=beat.platform_version,
                    ip_address=beat.ip_address,
                    agent_version=beat.agent_version,
                )
            elif frame.message_type == MessageType.AGENT_TASK_COMPLETE:
                done = AgentTaskComplete.from_json(frame.payload)
                if self.on_task_complete is not None:
                    await self.on_task_complete(channel.node_id, done)
                ack = AgentTaskAcknowledge(
                    message_id=str(frame.message_id), task_id=done.task_id, topic=done.topic
                )
                await channel.peer.send(
                    control_frame(
                        MessageType.AGENT_TASK_ACKNOWLEDGE, ack.to_json(), now=self._clock()
                    )
                )
            else:
                log.debug("ignoring %s from %s", frame.message_type, channel.node_id)
        except RemoteProtocolError as exc:
            log.info("node %s sent a bad control message: %s", channel.node_id, exc.message)

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        """Push ``interactive_shell`` to the node; Unavailable if it is not connected."""
        channel = self._channels.get(node_id)
        payload = MGSPayload.wrap(task, topic="aws.ssm.startSession").to_json()
        frame = control_frame(MessageType.INTERACTIVE_SHELL, payload, now=self._clock())
        if channel is None or not await channel.peer.send(frame):
            raise TargetNotConnected(f"{node_id} is not connected.")

    async def end_session(self, node_id: str, session_id: str, output: str = "") -> None:
        """Tell the node to end a session (``channel_closed`` on the control channel)."""
        channel = self._channels.get(node_id)
        if channel is None:
            return
        payload = ChannelClosedPayload(
            message_id=str(uuid.uuid4()),
            created_date=str(int(self._clock() * 1000)),
            destination_id=node_id,
            session_id=session_id,
            output=output,
        ).to_json()
        await channel.peer.send(
            control_frame(MessageType.CHANNEL_CLOSED, payload, now=self._clock())
        )

    async def drop(self, node_id: str, reason: str) -> None:
        """Close a node's channel now (deregistration)."""
        channel = self._channels.pop(node_id, None)
        if channel is not None:
            await channel.peer.close(CloseCode.DEREGISTERED, reason)

    async def close_all(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(
            *(c.peer.close(CloseCode.GOING_AWAY, "server shutting down") for c in channels)
        )
