"""The agent process: one outbound control channel, heartbeats, and the sessions it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hatchway.agent.dialer import Dialer, Socket
from hatchway.agent.facts import heartbeat
from hatchway.agent.runas import DEFAULT_RUN_AS, resolve_run_as
from hatchway.agent.shell_session import ShellSession
from hatchway.agent.state import AgentState
from hatchway.errors import AuthError, HatchwayError, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.control import control_frame
from hatchway.protocol.frames import MessageType, decode_frame
from hatchway.protocol.payloads import (
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosedPayload,
    MGSPayload,
)
from hatchway.protocol.timing import HEARTBEAT_INTERVAL
from hatchway.transport.backoff import Backoff

log = logging.getLogger(__name__)

COMPLETE_RETRY = 1.0  # resend agent_task_complete this often until acknowledged


@dataclass(frozen=True)
class AgentSettings:
    run_as_default: str = DEFAULT_RUN_AS
    heartbeat_interval: float = HEARTBEAT_INTERVAL


class Deregistered(AuthError):
    """The server no longer knows this node."""


class Agent:
    """Keeps the control channel up and runs the sessions the server starts."""

    def __init__(
        self,
        state: AgentState,
        settings: AgentSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.settings = settings
        self._clock = clock
        self._dialer = Dialer(state)
        self._ws: Socket | None = None
        self._sessions: dict[str, ShellSession] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # MessageId → (agent_task_complete frame, set when acknowledged)
        self._unacked: dict[str, tuple[bytes, asyncio.Event]] = {}
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set. Raises AuthError if the server refuses this node."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        path = f"/v1/control-channel/{self.state.node_id}?role=subscribe&stream=input"
        stopping = asyncio.get_running_loop().create_task(stop.wait())
        try:
            while not stop.is_set():
                try:
                    ws = await self._dialer.connect(path)
                except AuthError:
                    raise
                except HatchwayError as exc:
                    delay = backoff.next_delay()
                    log.warning("%s; retrying in %.1f s", exc.message, delay)
                    await asyncio.wait({stopping}, timeout=delay)
                    continue
                backoff.reset()
                log.info(
                    "control channel to %s open as %s", self.state.endpoint, self.state.node_id
                )
                await self._serve(ws, stopping)
                if not stop.is_set():
                    await asyncio.wait({stopping}, timeout=backoff.next_delay())
        finally:
            stopping.cancel()
            await self._shutdown()
            await self._dialer.close()

    async def _serve(self, ws: Socket, stopping: asyncio.Task[bool]) -> None:
        self._ws = ws
        self.connected.set()
        beats = asyncio.get_running_loop().create_task(self._heartbeats())
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            await self._send_beat()
            for frame, _ in list(self._unacked.values()):
                await self._send(frame)
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                await self._shutdown()  # while the channel is up, so completions get through
        finally:
            self.connected.clear()
            self._ws = None
            beats.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, HatchwayError, OSError):
                await reader
            with contextlib.suppress(Exception):
                await ws.close()
        code = ws.close_code
        if code == CloseCode.DEREGISTERED:
            raise Deregistered("the server deregistered this node")
        if code == CloseCode.REPLACED:
            # Our live connection was taken over: another agent runs with this node's identity.
            # Going back would make the two replace each other forever; the newer one wins.
            raise AuthError("another agent connected with this node's identity; stopping")
        if not stopping.done():
            log.warning("control channel closed (code %s); reconnecting", code)

    async def _read(self, ws: Socket) -> None:
        async for message in ws:
            try:
                self._dispatch(message)
            except RemoteProtocolError as exc:
                log.warning("bad control message: %s", exc.message)

    def _dispatch(self, message: bytes) -> None:
        frame = decode_frame(message)
        if frame.message_type == MessageType.INTERACTIVE_SHELL:
            task = MGSPayload.from_json(frame.payload).unwrap_task()
            self._start(task)
        elif frame.message_type == MessageType.CHANNEL_CLOSED:
            closed = ChannelClosedPayload.from_json(frame.payload)
            session = self._sessions.get(closed.session_id)
            if session is not None:
                session.cancel(closed.output or "terminated by the server")
        elif frame.message_type == MessageType.AGENT_TASK_ACKNOWLEDGE:
            ack = AgentTaskAcknowledge.from_json(frame.payload)
            pending = self._unacked.pop(ack.message_id, None)
            if pending is not None:
                pending[1].set()

    def _start(self, task: AgentTaskPayload) -> None:
        if task.session_id in self._sessions or task.session_id in self._starting:
            return  # a duplicate start after a reconnect
        self._starting.add(task.session_id)
        self._spawn(self._prepare(task))

    async def _prepare(self, task: AgentTaskPayload) -> None:
        """Resolve (maybe create) the run-as user off the event loop, then run the session."""
        session_type = task.document_content.get("sessionType")
        try:
            if session_type != "Standard_Stream":
                raise RemoteProtocolError(f"sessionType {session_type} is not supported")
            user = await asyncio.to_thread(
                resolve_run_as, self.settings.run_as_default, task.run_as_user
            )
        except HatchwayError as exc:
            self._starting.discard(task.session_id)
            await self.complete(task.session_id, "Failed", exc.message)
            return
        self._starting.discard(task.session_id)
        session = ShellSession(task, self._dialer, user, self.complete, self._clock)
        self._sessions[task.session_id] = session
        await session.run()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def complete(self, session_id: str, status: str, output: str) -> None:
        """Report a finished session until the server acknowledges it (protocol.md §9.5)."""
        self._sessions.pop(session_id, None)
        done = AgentTaskComplete(
            task_id=session_id,
            final_task_status=status,
            instance_id=self.state.node_id,
            output=output,
        )
        message_id = uuid.uuid4()
        frame = control_frame(
            MessageType.AGENT_TASK_COMPLETE,
            done.to_json(),
            now=self._clock(),
            message_id=message_id,
        )
        key = str(message_id)
        acked = asyncio.Event()
        self._unacked[key] = (frame, acked)
        deadline = self._clock() + 600
        try:
            while not acked.is_set() and self._clock() < deadline:
                await self._send(frame)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(acked.wait(), COMPLETE_RETRY)
        finally:
            self._unacked.pop(key, None)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self._send_beat()

    async def _send_beat(self) -> None:
        beat = heartbeat(self.state.endpoint, len(self._sessions))
        await self._send(
            control_frame(MessageType.AGENT_HEARTBEAT, beat.to_json(), now=self._clock())
        )

    async def _send(self, frame: bytes) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send(frame)

    async def _shutdown(self) -> None:
        """End every session (reported to the server if it can be) and stop, within ~3 s."""
        for session in list(self._sessions.values()):
            session.cancel("the agent is stopping")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=3)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1)
