"""Runs a protocol ``Endpoint`` over a WebSocket that may be replaced (resume).

One writer per WebSocket: frames leave only through ``flush``, which drains the endpoint under a
lock, so their order on the wire is the order the endpoint produced them. The endpoint's
retransmission deadline is kept as one timer handle, moved only when the deadline moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hatchway.protocol.reliability import Endpoint

log = logging.getLogger(__name__)

ACK_DELAY = 0.005  # seconds an acknowledgement may wait for data to ride along with


class ChannelDriver:
    """Owns an endpoint's timers and its (current) WebSocket connection.

    ``clock`` is the monotonic clock the endpoint's timers run on (``time.monotonic``).
    """

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._ws: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._retransmit: asyncio.TimerHandle | None = None
        self._retransmit_at: float | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def attach(self, ws: Any) -> None:
        """Use ``ws`` from now on (a reconnect)."""
        self._ws = ws
        self._rearm()

    def detach(self, ws: Any) -> None:
        if self._ws is ws:
            self._ws = None

    async def flush(self, *, acks: bool = True) -> None:
        """Send everything the endpoint has ready, including what is queued while sending.

        Data goes before acknowledgements (see ``Endpoint.data_to_send``). With
        ``acks=False`` acknowledgements stay queued for :meth:`acks_later`.
        Frames are dropped while disconnected: the reliability layer retransmits them.
        """
        if acks and self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        async with self._lock:
            while frames := self.endpoint.data_to_send(acks=acks):
                ws = self._ws
                if ws is None:
                    break
                try:
                    for frame in frames:
                        await ws.send(frame)
                except Exception as exc:  # the reader notices the drop and reconnects
                    log.debug("send failed: %s", exc)
                    break
        self._rearm()

    def flush_now(self) -> bool:
        """Send what is ready without yielding to the event loop, if the socket allows it.

        Saves a task switch on the keystroke path. The socket opts in with ``can_send_now()``
        and ``send_now(frames)``; returns False (nothing drained) when the caller must use
        :meth:`flush` instead: no such socket, a flush in progress, or the socket is
        applying backpressure.
        """
        ws = self._ws
        can = getattr(ws, "can_send_now", None)
        if ws is None or can is None or self._lock.locked() or not can():
            return False
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        frames = self.endpoint.data_to_send()
        if frames:
            try:
                ws.send_now(frames)
            except Exception as exc:  # as in flush(): the reader notices and reconnects
                log.debug("send failed: %s", exc)
        self._rearm()
        return True

    def flush_soon(self) -> None:
        """Send what is ready now if the socket allows it (:meth:`flush_now`), else in a task."""
        if not self.flush_now() and not any(not t.done() for t in self._tasks):
            self._spawn_flush()

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
        self._spawn_flush()

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
            delay = max(0.0, deadline - self._clock())
            self._retransmit = asyncio.get_running_loop().call_later(delay, self._timer_due)

    def _timer_due(self) -> None:
        self._retransmit = None
        self._retransmit_at = None
        self.endpoint.handle_timer(self._clock())
        self._spawn_flush()

    def _spawn_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        for handle in (self._ack_timer, self._retransmit):
            if handle is not None:
                handle.cancel()
        self._ack_timer = self._retransmit = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1)
