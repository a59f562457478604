"""One shell session on the agent: data channel, handshake, PTY, clean end.

Sequence (docs/protocol.md §7.2, §8.1, §9.3):
1. dial the data channel (signed), send HandshakeRequest (SessionType + Hatchway extensions);
2. on HandshakeResponse send HandshakeComplete; start the shell at the first Size message (or
   after 1 s), so the shell never sees a wrong window size;
3. relay PTY output as Output frames and Output frames to the PTY, with backpressure: the PTY is
   not read while the send window is full;
4. when the shell exits, send its exit code (if negotiated), wait until the client has
   acknowledged everything, then report ``agent_task_complete``.
If the data channel drops, it is re-dialled with backoff and the reliability layer resends.

Concurrency: a session is one task group, the shell's work in the body and the data channel
as a child task. Whatever ends the session (the shell exits, :meth:`ShellSession.cancel`, a
failure, or cancellation of the task running it) ends both, hangs the shell up and closes the
PTY; only a cancelled task reports nothing (and stays cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hatchway.agent.dialer import Socket, SocketDialer
from hatchway.agent.runas import RunAsUser
from hatchway.agent.terminal import PtyShell
from hatchway.errors import AuthError, HatchwayError, NotFound, RemoteProtocolError
from hatchway.protocol.control import session_state_frame
from hatchway.protocol.events import ChannelClosedEvent, StreamData
from hatchway.protocol.frames import FlagValue, PayloadType
from hatchway.protocol.handshake import (
    HATCHWAY_MAX_PAYLOAD,
    Extensions,
    HandshakeComplete,
    HandshakeResponse,
    build_request,
    negotiated_from_response,
    peer_is_hatchway,
    response_failed,
)
from hatchway.protocol.payloads import (
    AgentTaskPayload,
    SizePayload,
    decode_flag,
    encode_exit_code,
)
from hatchway.protocol.reliability import Endpoint, Role
from hatchway.transport.backoff import Backoff
from hatchway.transport.channel import ChannelDriver

log = logging.getLogger(__name__)

SIZE_WAIT = 1.0  # start the shell this long after the handshake if no Size came
HANDSHAKE_TIMEOUT = 60.0
DRAIN_AFTER_EXIT = 0.5  # keep reading output this long after the shell exits
ACK_WAIT = 150.0  # how long to wait for the client to acknowledge the last output
STALLED_WAIT = 3.0  # ... if the client acknowledges later frames but not the last ones
RECONNECT_FOR = 150.0
HANGUP_WAIT = 3.0  # how long an ended session waits for its shell to go (SIGKILL after 2 s)
READ_CHUNK = 65536
INPUT_BUFFER = 1024 * 1024  # input held for a slow PTY before more is refused
INPUT_READY_MAX = 1.0  # longest wait for a starting shell before input is written anyway
QUIET = 0.2  # a shell that printed and then stayed quiet this long is waiting for input


@dataclass(frozen=True, slots=True)
class SessionTimings:
    """How long a shell session waits for each thing, in seconds (the defaults are the
    production values above). Tests on the real clock pass short ones where a test would
    otherwise wait out a production time-out, and long ones where a timer must not be the
    thing that ends a wait."""

    size_wait: float = SIZE_WAIT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    drain_after_exit: float = DRAIN_AFTER_EXIT
    ack_wait: float = ACK_WAIT
    stalled_wait: float = STALLED_WAIT
    reconnect_for: float = RECONNECT_FOR
    hangup_wait: float = HANGUP_WAIT
    input_ready_max: float = INPUT_READY_MAX
    quiet: float = QUIET


DEFAULT_TIMINGS = SessionTimings()

OFFER = Extensions(max_payload_size=HATCHWAY_MAX_PAYLOAD, exit_code=True)
#: What the client and the server are told when the agent failed (details stay in its log).
COULD_NOT_RUN = "the agent could not run the session"

Completion = Callable[[str, str, str], Awaitable[None]]  # (session id, status, output)


class ShellSession:
    """Runs one Standard_Stream session to its end.

    Args:
        task: the session to run.
        dialer: opens the session's data channel (and re-dials it after a drop).
        user: who the shell runs as.
        complete: called once with (session id, status, output) when the session has ended.
        clock: the wall clock, only for timestamps in frames.
        monotonic: the clock of the reliability layer's timers and of every other time-out
            the session measures itself; it must be the event loop's clock (``time.monotonic``
            is, for asyncio's default loops).
        timings: the session's own waits and time-outs (production values by default).
    """

    def __init__(
        self,
        task: AgentTaskPayload,
        dialer: SocketDialer,
        user: RunAsUser,
        complete: Completion,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timings: SessionTimings = DEFAULT_TIMINGS,
    ) -> None:
        self.session_id = task.session_id
        self._timings = timings
        self._task = task
        self._dialer = dialer
        self._user = user
        self._complete = complete
        self._clock = clock  # wall clock: CreatedDate
        self._now = monotonic  # the reliability layer's timers
        self.endpoint = Endpoint(Role.AGENT, wall_clock=clock)
        self._driver = ChannelDriver(self.endpoint, monotonic)
        self._ws: Socket | None = None
        self._shell: PtyShell | None = None
        self._pending_input = bytearray()
        # The shell exited (or was hung up): no more input for it, and its PTY is drained
        # once, then left alone.
        self._exited = False
        self._input_ready = False
        self._first_output_seq = 0
        self._size: tuple[int, int] | None = None
        self._size_seen = asyncio.Event()
        self._handshake_done = asyncio.Event()
        self._heard = asyncio.Event()  # set whenever a message from the client was processed
        self._cancelled = asyncio.Event()
        self._cancel_reason = ""
        self._cancel_scope: asyncio.Timeout | None = None  # while the shell's work runs
        self._extensions = Extensions()
        self._reading = False
        self._output_eof = asyncio.Event()

    @property
    def shell(self) -> PtyShell | None:
        """The session's shell once it started (it starts after the handshake and the size)."""
        return self._shell

    def cancel(self, reason: str) -> None:
        """End the session from outside (channel_closed, terminate flag); it reports
        ``Cancelled`` with ``reason``."""
        if self._cancelled.is_set():
            return
        self._cancel_reason = reason
        self._cancelled.set()
        if self._cancel_scope is not None:
            self._cancel_scope.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        """Run the session to its end, then report it through the completion callback.

        Raises:
            asyncio.CancelledError: the task running this was cancelled; the shell is hung up
                and the PTY closed all the same, and nothing is reported.
        """
        status, output = "Failed", COULD_NOT_RUN
        try:
            async with asyncio.TaskGroup() as tasks:
                connection = tasks.create_task(self._connection_loop())
                try:
                    status, output = await self._outcome()
                finally:
                    await self._hang_up()
                    connection.cancel()
        except* Exception:
            # The data channel's task crashed (a bug): the group ended the shell's work.
            log.exception("session %s: its data channel failed", self.session_id)
            status, output = "Failed", COULD_NOT_RUN
        finally:
            try:
                await self._driver.close()
                await self._shell_gone()
            finally:
                if self._shell is not None:
                    self._shell.close()  # even if cancelled again meanwhile
        await self._complete(self.session_id, status, output)

    async def _outcome(self) -> tuple[str, str]:
        """Run the shell until it exits or :meth:`cancel` ends it: (status, output)."""
        # asyncio.timeout is the standard library's cancel scope: cancel() expires it, which
        # cancels the shell's work in this block only. A cancellation of the task itself
        # still propagates (asyncio.Timeout tells the two apart).
        scope = asyncio.timeout(None)
        try:
            async with scope:
                self._cancel_scope = scope
                if self._cancelled.is_set():  # cancelled before the work began
                    scope.reschedule(asyncio.get_running_loop().time())
                return await self._run_shell()
        except Exception as exc:
            if scope.expired():  # whatever the work raised on its way out
                return "Cancelled", self._cancel_reason
            if not isinstance(exc, HatchwayError):
                log.exception("session %s crashed", self.session_id)
                return "Failed", COULD_NOT_RUN
            # Details stay in the agent's log; the client and the server get a fixed reason
            # (a protocol failure raised here is one of this module's own fixed texts).
            log.warning("session %s failed: %s", self.session_id, exc.message)
            output = exc.message if isinstance(exc, RemoteProtocolError) else COULD_NOT_RUN
            return "Failed", output
        finally:
            self._cancel_scope = None

    async def _run_shell(self) -> tuple[str, str]:
        request = build_request("Standard_Stream", None, OFFER)
        self.endpoint.send(PayloadType.HANDSHAKE_REQUEST, request.to_json(), now=self._now())
        self._driver.flush_soon()
        if not await _wait_at_most(self._handshake_done, self._timings.handshake_timeout):
            raise RemoteProtocolError("the client did not complete the handshake")
        await _wait_at_most(self._size_seen, self._timings.size_wait)
        rows, cols = self._size or (24, 80)
        self._shell = await PtyShell.spawn(self._user, rows=rows, cols=cols)
        self._first_output_seq = self.endpoint.next_sequence_number
        log.info(
            "session %s: shell pid %d as %s",
            self.session_id,
            self._shell.process.pid,
            self._user.name,
        )
        self._start_reading()
        await self._shell_ready()
        self._input_ready = True
        self._write_input(b"")
        returncode = await self._shell.process.wait()
        self._exited = True
        self._drop_input()  # nobody reads it any more
        await _wait_at_most(self._output_eof, self._timings.drain_after_exit)
        self._drain_output()
        self._stop_reading()
        code = PtyShell.exit_status(returncode)
        if self._extensions.exit_code:
            self.endpoint.send(PayloadType.EXIT_CODE, encode_exit_code(code), now=self._now())
        await self._driver.flush()
        try:
            async with asyncio.timeout(self._timings.ack_wait):
                await self._wait_acked()
        except TimeoutError:
            log.info("session %s: the client did not acknowledge everything", self.session_id)
        return "Success", str(code)

    async def _wait_acked(self) -> None:
        """Wait until the client has acknowledged every frame (docs/protocol.md §9.3).

        While the client is away this goes on (the caller bounds it by ``ack_wait``, longer
        than the server's grace: the server ends the session if the client does not come
        back). A peer that acknowledges later frames but not the last unacknowledged ones
        (AWS's plugin drops a duplicate without an ack, §12) is waited for ``stalled_wait``
        seconds at most, on the event loop's clock.
        """
        loop = asyncio.get_running_loop()
        stalled_wait = self._timings.stalled_wait
        stalled_since: float | None = None
        unacked = self.endpoint.unacked_count
        while not self.endpoint.all_acked:
            if self.endpoint.unacked_count < unacked:  # progress: waiting helps
                unacked, stalled_since = self.endpoint.unacked_count, None
            # Once stalled, a resend of the dropped frames makes the endpoint unsure again
            # (nothing acknowledged since) although nothing changed: keep the first moment.
            if stalled_since is None and self.endpoint.stalled_on_duplicates:
                stalled_since = loop.time()
            if stalled_since is not None and loop.time() - stalled_since >= stalled_wait:
                log.info(
                    "session %s: %d frame(s) left unacknowledged by a peer that acknowledged "
                    "later ones; not waiting longer",
                    self.session_id,
                    self.endpoint.unacked_count,
                )
                return
            self._heard.clear()
            # Woken by anything the client sends; re-checked at least every stalled_wait / 4
            # (resends change what is stalled without anything arriving).
            await _wait_at_most(self._heard, stalled_wait / 4)

    async def _hang_up(self) -> None:
        """Stop the shell's processes (SIGHUP, SIGKILL later), stop relaying its terminal, and
        tell the client the session ends."""
        if self._shell is not None:
            self._exited = True  # nothing more goes in or (reading again on an ack) comes out
            self._stop_reading()
            self._drop_input()
            self._shell.hangup()
        await self._say_terminating()

    async def _shell_gone(self) -> None:
        """Wait (a little) until the hung-up shell has exited."""
        if self._shell is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timings.hangup_wait):
                    await self._shell.process.wait()

    async def _say_terminating(self) -> None:
        frame = session_state_frame("Terminating", self.session_id, now=self._clock())
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send(frame)

    # ---- the data channel -----------------------------------------------------------------

    async def _connection_loop(self) -> None:
        """Keep the data channel up: dial, resend what is unacknowledged, relay; after a drop,
        re-dial with back-off for up to ``reconnect_for`` seconds, then cancel the session."""
        backoff = Backoff(initial=0.1, maximum=5.0)
        lost_at: float | None = None
        path = f"/v1/data-channel/{self.session_id}?role=publish_subscribe"
        while True:
            try:
                ws = await self._dialer.connect(path)
            except (NotFound, AuthError) as exc:
                log.warning("session %s: data channel refused: %s", self.session_id, exc.message)
                self.cancel("the server refused the session's data channel")
                return
            except HatchwayError as exc:
                now = self._now()
                if lost_at is None:
                    lost_at = now
                if now - lost_at > self._timings.reconnect_for:
                    log.warning("session %s: data channel lost: %s", self.session_id, exc.message)
                    self.cancel("the agent lost the session's data channel")
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            lost_at = None
            await self._relay(ws)
            if self._cancelled.is_set():
                return
            log.info("session %s: data channel dropped (%s)", self.session_id, ws.close_code)
            lost_at = self._now()

    async def _relay(self, ws: Socket) -> None:
        """Use ``ws`` until it closes (a socket's iteration ends, it never raises, on a drop)."""
        self._ws = ws
        self._driver.attach(ws)
        try:
            # Resent from the writer task: reading starts at once, so the client's acks of
            # a long resend never pile up unread until its sends (and its reading) stop.
            self.endpoint.retransmit_all(self._now())
            self._driver.flush_soon()
            async for message in ws:
                self._receive(message)
        finally:
            self._driver.detach(ws)
            self._ws = None

    def _receive(self, message: bytes) -> None:
        """Take in one message from the client; never waits (see ``_relay``)."""
        try:
            events = self.endpoint.receive(message, now=self._now())
        except RemoteProtocolError as exc:
            log.info("session %s: dropping bad frame: %s", self.session_id, exc.message)
            return
        for event in events:
            try:
                if isinstance(event, StreamData):
                    self._on_stream(event)
                elif isinstance(event, ChannelClosedEvent):
                    self.cancel(event.payload.output or "session closed by the server")
            except RemoteProtocolError as exc:
                # The frame is already acknowledged and will not come again: drop its payload,
                # keep the channel and the events delivered with it.
                log.info("session %s: dropping bad payload: %s", self.session_id, exc.message)
        self._heard.set()  # for _wait_acked: acknowledgements may have come
        if (
            not self._reading
            and self._shell is not None
            and not self._exited
            and not self._output_eof.is_set()
        ):
            self._start_reading()
        self._driver.flush_soon(acks=False)  # data (e.g. HandshakeComplete, resends) now
        self._driver.acks_later()  # acknowledgements ride along with the next output

    def _on_stream(self, event: StreamData) -> None:
        kind = event.payload_type
        if kind == PayloadType.OUTPUT:
            self._write_input(event.payload)
        elif kind == PayloadType.SIZE:
            size = SizePayload.from_json(event.payload)
            if size.rows > 0 and size.cols > 0:
                self._size = (min(size.rows, 10_000), min(size.cols, 10_000))
                self._size_seen.set()
                if self._shell is not None:
                    self._shell.resize(*self._size)
        elif kind == PayloadType.HANDSHAKE_RESPONSE:
            response = HandshakeResponse.from_json(event.payload)
            failure = response_failed(response)
            if failure:
                self.cancel(f"handshake failed: {failure}")
                return
            self._extensions = negotiated_from_response(response, offer=OFFER)
            # AWS's plugin never re-acknowledges a duplicate: read its acks cumulatively.
            self.endpoint.cumulative_acks = not peer_is_hatchway(response)
            self.endpoint.max_payload_size = self._extensions.max_payload_size
            complete = HandshakeComplete(handshake_time_to_complete_ns=0, customer_message="")
            self.endpoint.send(PayloadType.HANDSHAKE_COMPLETE, complete.to_json(), now=self._now())
            self._handshake_done.set()
        elif kind == PayloadType.FLAG and decode_flag(event.payload) == FlagValue.TERMINATE_SESSION:
            self.cancel("terminated by the client")

    # ---- the PTY --------------------------------------------------------------------------

    async def _shell_ready(self) -> None:
        """Wait (briefly) until the shell reads its terminal the way a person's typing meets it.

        Input written while the shell is still starting sits in the line discipline in
        canonical mode, where an end-of-transmission becomes an empty "line" that the shell's
        line editor later sees as a NUL: piped input ending in EOT would then never end the
        shell. So the first input waits until the shell switched its terminal to
        non-canonical mode (readline is ready) or, for shells that never do, until its
        output has been quiet for a moment; never longer than ``input_ready_max``.
        """
        assert self._shell is not None
        timings = self._timings
        start = self._now()
        quiet_since: float | None = None
        seen = -1
        while (
            self._now() - start < timings.input_ready_max and self._shell.process.returncode is None
        ):
            if not self._shell.canonical():
                return
            now = self._now()
            if self.endpoint.next_sequence_number != seen:
                seen, quiet_since = self.endpoint.next_sequence_number, now
            elif (
                seen > self._first_output_seq and quiet_since and now - quiet_since > timings.quiet
            ):
                return
            await asyncio.sleep(0.005)

    def _write_input(self, data: bytes) -> None:
        if self._exited:
            return  # the shell will never read it
        self._pending_input += data
        shell = self._shell
        if shell is not None and self._input_ready and self._pending_input:
            written = shell.write(bytes(self._pending_input))
            del self._pending_input[:written]
            loop = asyncio.get_running_loop()
            if self._pending_input:
                loop.add_writer(shell.master_fd, self._write_input, b"")
            else:
                loop.remove_writer(shell.master_fd)
        # Backpressure, also while the shell is still starting: while the PTY lags far behind,
        # refuse (don't ack) more input; the client's send window fills and it stops reading
        # its stdin. Refused frames come back by retransmission once the PTY has caught up.
        accepting = len(self._pending_input) <= INPUT_BUFFER
        if accepting != self.endpoint.accepting:
            log.debug(
                "session %s: %s input (%d bytes waiting for the shell)",
                self.session_id,
                "accepting" if accepting else "holding back",
                len(self._pending_input),
            )
            self.endpoint.accepting = accepting

    def _drop_input(self) -> None:
        """Forget input that the shell will never read, and stop waiting for the PTY to take
        it: once the shell has exited, the PTY's master end polls as writable for ever and
        the writer callback would spin, and a closed PTY must leave nothing registered."""
        self._pending_input.clear()
        if self._shell is not None:
            asyncio.get_running_loop().remove_writer(self._shell.master_fd)
        self.endpoint.accepting = True

    def _start_reading(self) -> None:
        if self._shell is not None and not self._reading:
            self._reading = True
            asyncio.get_running_loop().add_reader(self._shell.master_fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._shell is not None and self._reading:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self._shell.master_fd)

    def _on_readable(self) -> None:
        self._read_once()
        self._driver.flush_soon()

    def _read_once(self) -> bool:
        """Move one read of PTY output into the endpoint; False when nothing more now."""
        shell = self._shell
        assert shell is not None
        size = self.endpoint.max_payload_size
        if self.endpoint.send_window() * size < READ_CHUNK:
            self._stop_reading()  # backpressure: resume when acks open the window
            return False
        data = shell.read(READ_CHUNK)
        if data is None:
            return False
        if not data:
            self._stop_reading()
            self._output_eof.set()
            return False
        self.endpoint.send(PayloadType.OUTPUT, data, now=self._now())
        return True

    def _drain_output(self) -> None:
        if self._shell is not None and not self._output_eof.is_set():
            while self._read_once():
                pass


async def _wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set, ``seconds`` at most; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
