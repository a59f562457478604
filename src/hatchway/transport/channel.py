"""Runs a protocol ``Endpoint`` over a WebSocket that may be replaced (resume).

One writer per WebSocket: frames leave only through the driver (``flush``, under a lock, or
``flush_now`` when no flush is under way), so their order on the wire is the order the endpoint
produced them. Work that cannot be done at once (a timer fired, the socket applies
backpressure) goes to one writer task the driver owns, ended by ``close()``. The endpoint's
retransmission deadline is kept as one timer handle, moved only when the deadline moves.

The socket is a :class:`hatchway.transport.socket.Socket`, named here only for the type
checker: that module imports aiohttp, which the CLI (whose socket is its own) never loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from hatchway.protocol.reliability import Endpoint

if TYPE_CHECKING:
    from hatchway.transport.socket import Socket

log = logging.getLogger(__name__)

ACK_DELAY = 0.005  # seconds an acknowledgement may wait for data to ride along with
STOP_TIMEOUT = 1.0  # seconds close() waits for the writer task to end once cancelled


class ChannelDriver:
    """Owns an endpoint's timers, its writer and its (current) WebSocket connection.

    Args:
        endpoint: the sans-I/O endpoint to drive.
        clock: the monotonic clock the endpoint's timers run on. Defaults to the running
            event loop's clock (``loop.time()``), on which the driver's timers fire anyway
            (and which ``looptime`` fast-forwards in tests); pass ``time.monotonic`` only if
            the loop's clock is the same.
    """

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float] | None = None) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._ws: Socket | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._retransmit: asyncio.TimerHandle | None = None
        self._retransmit_at: float | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        # Frames drained by flush_now() that the socket declined: they go first.
        self._backlog: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None
        self._write_wanted = False

    def now(self) -> float:
        """The clock the endpoint's ``now`` arguments must come from."""
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def attach(self, ws: Socket) -> None:
        """Use ``ws`` from now on (a reconnect)."""
        self._ws = ws
        self._rearm()

    def detach(self, ws: Socket) -> None:
        if self._ws is ws:
            self._ws = None

    async def flush(self, *, acks: bool = True) -> None:
        """Send everything the endpoint has ready, including what is queued while sending.

        Data goes before acknowledgements (see ``Endpoint.data_to_send``). With
        ``acks=False`` acknowledgements stay queued for :meth:`acks_later`.
        Frames are dropped while disconnected: the reliability layer retransmits them.
        """
        if acks:
            self._cancel_ack_timer()
        async with self._lock:
            while True:
                frames, self._backlog = self._backlog, []
                frames += self.endpoint.data_to_send(acks=acks)
                ws = self._ws
                if not frames or ws is None:
                    break
                if not await self._send_all(ws, frames):
                    break  # the reader notices the drop and reconnects
        self._rearm()

    @staticmethod
    async def _send_all(ws: Socket, frames: list[bytes]) -> bool:
        for frame in frames:
            if not await ws.send(frame):
                return False
        return True

    def flush_now(self, *, acks: bool = True) -> bool:
        """Send what is ready without yielding to the event loop, if the socket allows it.

        Saves a task switch on the keystroke path. Returns False when the caller must use
        :meth:`flush` instead: not connected, a flush in progress, or the socket declined
        (:meth:`Socket.send_now`; e.g. it is applying backpressure) — the frames already
        drained are then kept to be sent first. With ``acks=False`` acknowledgements stay
        queued, as with :meth:`flush`.
        """
        ws = self._ws
        if ws is None or self._lock.locked() or self._backlog:
            return False
        if acks:
            self._cancel_ack_timer()
        frames = self.endpoint.data_to_send(acks=acks)
        sent = not frames or ws.send_now(frames)
        if not sent:
            self._backlog = frames
        self._rearm()
        return sent

    def flush_soon(self, *, acks: bool = True) -> None:
        """Send what is ready now if the socket allows it (:meth:`flush_now`), else from the
        writer task (which sends queued acknowledgements too).

        Never waits: a reader that calls this keeps reading while a slow flush is under way,
        so two peers that both write a lot cannot end up each waiting for the other to read.
        """
        if not self.flush_now(acks=acks):
            self._wake_writer()

    def acks_later(self, delay: float = ACK_DELAY) -> None:
        """Send queued acknowledgements within ``delay`` seconds (delayed ACK).

        Any data sent before then carries them along; a keystroke's echo is not made to wait
        behind the acknowledgement of the keystroke.
        """
        if self._ack_timer is None and self.endpoint.acks_pending and not self._closed:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(delay, self._acks_due)

    def _acks_due(self) -> None:
        self._ack_timer = None
        self._wake_writer()

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _rearm(self) -> None:
        """Point the retransmission timer at the endpoint's next deadline (if it moved)."""
        deadline = None if self._closed else self.endpoint.next_deadline()
        if deadline == self._retransmit_at:
            return
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        self._retransmit_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.now())
            self._retransmit = asyncio.get_running_loop().call_later(delay, self._timer_due)

    def _timer_due(self) -> None:
        due = self._retransmit_at
        self._retransmit = None
        self._retransmit_at = None
        # asyncio runs a timer up to its clock resolution early, so the clock may still read
        # a hair before the deadline: the endpoint would do nothing and the timer, re-armed
        # for the same deadline, fire again at once (for ever, on a clock that moves only
        # when the loop is idle, as looptime's). The timer is due: run it at its deadline.
        now = self.now()
        self.endpoint.handle_timer(now if due is None else max(now, due))
        self._wake_writer()

    # ---- the writer task -------------------------------------------------------------------

    def _wake_writer(self) -> None:
        """Have the writer task flush (once more, if it is flushing now)."""
        if self._closed:
            return
        self._write_wanted = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._write_wanted and not self._closed:
            self._write_wanted = False
            await self.flush()

    async def close(self) -> None:
        """Stop the timers and the writer task (a send it is blocked in is given up). Idempotent."""
        self._closed = True
        self._cancel_ack_timer()
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            # asyncio.wait neither raises the writer's CancelledError here nor lets a send
            # that ignores cancellation hold us up.
            await asyncio.wait({writer}, timeout=STOP_TIMEOUT)
