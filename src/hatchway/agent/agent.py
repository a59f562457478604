"""The agent process: one outbound control channel, heartbeats, and the sessions it runs.

Structure (structured concurrency): :meth:`Agent.run` holds one task group for the
sessions, which outlive control-channel reconnects; each control-channel connection holds a
task group of its own (reader, heartbeats, resends of unacknowledged completions, stop
watcher) that ends with the connection. Messages are decoded and encoded by
``protocol.controlchannel``, the same code the server uses, and every send goes through the
socket's single writer (``transport.sansio_socket.WebSocket``).

Which agent owns the node: every ``agent run`` takes the next generation of its state directory
(``agent.state``) and names it in its control-channel upgrade. A newer agent on the same
directory wins: this one stops when the server says ``SUPERSEDED`` or refuses it with 409, or
when it sees a newer generation in the directory before re-dialling (docs/protocol.md §10.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from hatchway.agent.command_session import CommandSession
from hatchway.agent.dialer import Dialer, Socket, SocketDialer
from hatchway.agent.facts import NodeFacts
from hatchway.agent.port_session import PortSession
from hatchway.agent.runas import DEFAULT_RUN_AS, resolve_run_as
from hatchway.agent.session import DataChannelSession
from hatchway.agent.shell_session import ShellSession
from hatchway.agent.state import AgentState, Generation, claim_generation, read_generation
from hatchway.errors import AuthError, Conflict, HatchwayError, RemoteProtocolError
from hatchway.protocol.closecodes import CloseCode
from hatchway.protocol.controlchannel import (
    AGENT_GENERATION_HEADER,
    MAX_CONNECTIONS_PER_REPORT,
    MAX_CONTROL_MESSAGE,
    MAX_SESSIONS_PER_NODE,
    ConnectionRecord,
    ConnectionReport,
    ControlMessage,
    EndSession,
    Heartbeat,
    LogBudget,
    Sender,
    StartSession,
    TaskAcknowledge,
    TaskComplete,
    TaskStatus,
    decode,
    encode,
)
from hatchway.protocol.handshake import SessionType
from hatchway.protocol.payloads import AgentTaskPayload
from hatchway.protocol.timing import HEARTBEAT_INTERVAL
from hatchway.transport.backoff import Backoff

log = logging.getLogger(__name__)

#: Resend an unacknowledged ``agent_task_complete`` this often (docs/protocol.md §10.5) ...
COMPLETE_RETRY: Final = 1.0
#: ... for at most this long, then give up on it.
COMPLETE_GIVE_UP: Final = 600.0
#: On stop, how long sessions get to end and have their completions acknowledged.
SHUTDOWN_GRACE: Final = 3.0
#: The session types the agent runs (docs/protocol.md §8).
_SESSION_TYPES: Final = frozenset(
    {
        SessionType.STANDARD_STREAM,
        SessionType.INTERACTIVE_COMMANDS,
        SessionType.NON_INTERACTIVE_COMMANDS,
        SessionType.PORT,
    }
)


@dataclass(frozen=True)
class AgentSettings:
    run_as_default: str = DEFAULT_RUN_AS
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    #: Sessions run at once; one more is refused with a clear reason (docs/protocol.md §13.1).
    max_sessions: int = MAX_SESSIONS_PER_NODE


class Deregistered(AuthError):
    """The server no longer knows this node."""


class Superseded(AuthError):
    """A newer agent took over this node's identity; this one must stop."""


class HeartbeatSource(Protocol):
    """Where heartbeats come from (``agent.facts.NodeFacts``; tests give a fixed one)."""

    async def heartbeat(self, session_ids: Iterable[str]) -> Heartbeat: ...


@dataclass
class _Unacked:
    frame: bytes
    since: float  # loop clock


class Agent:
    """Keeps the control channel up and runs the sessions the server starts.

    Args:
        dialer: opens the control channel and the sessions' data channels (default: signed
            WebSockets to the registered server).
        facts: makes heartbeats (default: this machine's facts, collected off the loop).
        clock: the wall clock, for frame timestamps only; timers use the loop's clock.
    """

    def __init__(
        self,
        state: AgentState,
        settings: AgentSettings,
        clock: Callable[[], float] = time.time,
        *,
        dialer: SocketDialer | None = None,
        facts: HeartbeatSource | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self._clock = clock
        self._dialer: SocketDialer = dialer if dialer is not None else Dialer(state)
        self._facts: HeartbeatSource = facts if facts is not None else NodeFacts(state.endpoint)
        self._generation: Generation | None = None
        self._socket: Socket | None = None
        self._sessions: dict[str, DataChannelSession] = {}
        self._starting: set[str] = set()
        self._session_tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._unacked: dict[uuid.UUID, _Unacked] = {}
        self._changed = asyncio.Event()  # a session ended or a completion was acknowledged
        self._bad_log = LogBudget()
        self.connected = asyncio.Event()

    @property
    def generation(self) -> Generation | None:
        """This process's generation of the state directory (set when :meth:`run` starts)."""
        return self._generation

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set.

        Raises:
            AuthError: the server refused this node (:class:`Deregistered`, :class:`Superseded`,
                a bad identity); the agent must not come back on its own.
        """
        self._generation = await asyncio.to_thread(claim_generation, self.state.state_dir)
        failure: HatchwayError | None = None
        try:
            async with asyncio.TaskGroup() as sessions:
                self._session_tasks = sessions
                try:
                    await self._control_loop(stop)
                except HatchwayError as exc:  # re-raised below, outside the task group
                    failure = exc
                finally:
                    await self._shutdown()
        finally:
            self._session_tasks = None
            await self._dialer.close()
        if failure is not None:
            raise failure

    # ---- the control channel ---------------------------------------------------------------

    async def _control_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(initial=0.5, maximum=30.0)
        path = f"/v1/control-channel/{self.state.node_id}?role=subscribe&stream=input"
        assert self._generation is not None
        headers = {AGENT_GENERATION_HEADER: str(self._generation.number)}
        while not stop.is_set():
            self._check_generation()
            try:
                ws = await self._dialer.connect(path, headers, max_size=MAX_CONTROL_MESSAGE)
            except Conflict as exc:
                raise self._superseded() from exc
            except AuthError:
                raise
            except HatchwayError as exc:
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1f s", exc.message, delay)
                await _sleep(delay, stop)
                continue
            backoff.reset()
            log.info(
                "control channel to %s open as %s (agent generation %d)",
                self.state.endpoint,
                self.state.node_id,
                self._generation.number,
            )
            code = await self._serve(ws, stop)
            if code == CloseCode.DEREGISTERED:
                raise Deregistered("the server deregistered this node")
            if code == CloseCode.SUPERSEDED:
                raise self._superseded()
            if code == CloseCode.REPLACED:
                # Same generation, another process: a copy of this state directory runs
                # elsewhere. Going back would make the two replace each other for ever.
                raise AuthError(
                    "another agent connected with this node's identity (a copy of its state "
                    "directory?); stopping"
                )
            if not stop.is_set():
                delay = backoff.next_delay()
                log.warning(
                    "control channel closed (%s); reconnecting in %.1f s",
                    CloseCode.describe(code),
                    delay,
                )
                await _sleep(delay, stop)

    def _check_generation(self) -> None:
        """Stop before re-dialling if a newer agent took over the state directory."""
        current = read_generation(self.state.state_dir)
        mine = self._generation
        if current is not None and mine is not None and current.number != mine.number:
            raise self._superseded(current)

    def _superseded(self, current: Generation | None = None) -> Superseded:
        if current is None:
            with contextlib.suppress(HatchwayError):
                current = read_generation(self.state.state_dir)
        mine = self._generation
        if current is not None and mine is not None and current.number > mine.number:
            return Superseded(
                f"another agent (pid {current.pid}) took over this node's state directory; stopping"
            )
        return Superseded(
            "a newer agent took over this node (from a copy of its state directory?); stopping"
        )

    async def _serve(self, ws: Socket, stop: asyncio.Event) -> int | None:
        """Run one connection until it closes; returns its close code."""
        self._socket = ws
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                helpers = (
                    tasks.create_task(self._heartbeats(ws)),
                    tasks.create_task(self._resend_completions(ws)),
                    tasks.create_task(self._close_on_stop(ws, stop)),
                )
                await self._read(ws)
                for helper in helpers:
                    helper.cancel()
        finally:
            self.connected.clear()
            self._socket = None
            await ws.close()
        return ws.close_code

    async def _read(self, ws: Socket) -> None:
        async for data in ws:
            try:
                message = decode(data, sender=Sender.SERVER)
            except RemoteProtocolError as exc:
                write, left_out = self._bad_log.admit(asyncio.get_running_loop().time())
                if left_out:
                    log.warning("%d more bad control messages were not logged", left_out)
                if write:
                    log.warning("bad control message from the server: %s", exc.message)
                continue
            self._dispatch(message)

    def _dispatch(self, message: ControlMessage) -> None:
        if isinstance(message, StartSession):
            self._start(message.task)
        elif isinstance(message, EndSession):
            session = self._sessions.get(message.session_id)
            if session is not None:
                session.cancel(message.output or "terminated by the server")
        elif isinstance(message, TaskAcknowledge):
            self._unacked.pop(message.message_id, None)
            self._changed.set()

    async def _heartbeats(self, ws: Socket) -> None:
        while True:
            try:
                beat = await self._facts.heartbeat(self._session_ids())
                await ws.send(encode(beat, now=self._clock()))
            except Exception:  # a task boundary: a missed heartbeat must not end the channel
                log.exception("cannot send a heartbeat")
            await asyncio.sleep(self.settings.heartbeat_interval)

    def _session_ids(self) -> list[str]:
        return [*self._sessions, *self._starting]

    async def _resend_completions(self, ws: Socket) -> None:
        """Send every unacknowledged completion now and then every second, until acknowledged
        or too old."""
        loop = asyncio.get_running_loop()
        while True:
            for key, pending in list(self._unacked.items()):
                if loop.time() - pending.since > COMPLETE_GIVE_UP:
                    log.warning("giving up on a session completion the server never acknowledged")
                    self._unacked.pop(key, None)
                    self._changed.set()
                elif not await ws.send(pending.frame):
                    return
            await asyncio.sleep(COMPLETE_RETRY)

    async def _close_on_stop(self, ws: Socket, stop: asyncio.Event) -> None:
        await stop.wait()
        await self._end_sessions(wait_for_acks=True)  # while the channel is up
        await ws.close(CloseCode.NORMAL, "the agent is stopping")

    # ---- sessions --------------------------------------------------------------------------

    def _start(self, task: AgentTaskPayload) -> None:
        sid = task.session_id
        if sid in self._sessions or sid in self._starting or self._session_tasks is None:
            return  # a duplicate start after a reconnect, or stopping
        if len(self._sessions) + len(self._starting) >= self.settings.max_sessions:
            log.warning("refusing session %s: %d sessions run already", sid, len(self._sessions))
            self._spawn(
                self.complete(
                    sid,
                    TaskStatus.FAILED,
                    f"the node runs its maximum of {self.settings.max_sessions} sessions",
                )
            )
            return
        self._starting.add(sid)
        self._spawn(self._run_session(task))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        assert self._session_tasks is not None
        task = self._session_tasks.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._changed.set()

    async def _run_session(self, task: AgentTaskPayload) -> None:
        """One session, start to completion; never raises (a task-group child)."""
        sid = task.session_id
        try:
            session_type = task.document_content.get("sessionType")
            if session_type not in _SESSION_TYPES:
                await self.complete(sid, TaskStatus.FAILED, "this agent runs no such session type")
                return
            if session_type == SessionType.PORT:  # a TCP relay: no process, no run-as user
                self._starting.discard(sid)
                port = PortSession(
                    task, self._dialer, self.complete, self._clock, report=self._report_connections
                )
                self._sessions[sid] = port
                await port.run()
                return
            requested = task.run_as_user or self.settings.run_as_default
            try:
                user = await asyncio.to_thread(
                    functools.partial(
                        resolve_run_as,
                        self.settings.run_as_default,
                        task.run_as_user,
                        must_exist=task.run_as_enabled,
                    )
                )
            except HatchwayError as exc:
                log.warning("session %s: cannot run as %r: %s", sid, requested, exc.message)
                reason = (
                    exc.message  # Run As: the administrator's setting; say what is wrong
                    if task.run_as_enabled
                    else "the agent cannot run sessions as the requested user"
                )
                await self.complete(sid, TaskStatus.FAILED, reason)
                return
            self._starting.discard(sid)
            session: DataChannelSession
            if session_type == SessionType.NON_INTERACTIVE_COMMANDS:
                session = CommandSession(task, self._dialer, user, self.complete, self._clock)
            else:  # Standard_Stream, InteractiveCommands: a PTY
                session = ShellSession(task, self._dialer, user, self.complete, self._clock)
            self._sessions[sid] = session
            await session.run()
        except Exception:
            log.exception("session %s crashed", sid)
            await self.complete(sid, TaskStatus.FAILED, "the agent could not run the session")
        finally:
            self._starting.discard(sid)
            self._sessions.pop(sid, None)
            self._changed.set()

    async def _report_connections(self, session_id: str, records: list[ConnectionRecord]) -> None:
        """Send a port session's connections to the server (``hatchway_connections``, best
        effort: while the control channel is down they are only in the agent's log)."""
        ws = self._socket
        for start in range(0, len(records), MAX_CONNECTIONS_PER_REPORT):
            report = ConnectionReport.create(
                session_id, records[start : start + MAX_CONNECTIONS_PER_REPORT]
            )
            if ws is None or not await ws.send(encode(report, now=self._clock())):
                return

    async def complete(self, session_id: str, status: str, output: str) -> None:
        """Report a finished session; it is resent until acknowledged (docs/protocol.md §10.5)."""
        self._sessions.pop(session_id, None)
        done = TaskComplete.create(
            task_id=session_id,
            status=TaskStatus(status),
            instance_id=self.state.node_id,
            output=output,
        )
        frame = encode(done, now=self._clock())
        self._unacked[done.message_id] = _Unacked(frame, asyncio.get_running_loop().time())
        ws = self._socket
        if ws is not None:
            await ws.send(frame)

    async def _end_sessions(self, *, wait_for_acks: bool) -> None:
        """Cancel every session and wait (at most :data:`SHUTDOWN_GRACE`) until they ended and,
        if asked, their completions are acknowledged."""
        for session in list(self._sessions.values()):
            session.cancel("the agent is stopping")

        def busy() -> bool:
            return bool(self._running or (wait_for_acks and self._unacked))

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                while busy():
                    self._changed.clear()
                    await self._changed.wait()

    async def _shutdown(self) -> None:
        """End every session (reported to the server if the channel is still up); what does
        not end within the grace is cancelled."""
        await self._end_sessions(wait_for_acks=False)
        for task in list(self._running):
            task.cancel()


async def _sleep(delay: float, stop: asyncio.Event) -> None:
    """Wait ``delay`` seconds, or less if ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()
