"""Runs a protocol ``Endpoint`` over a WebSocket that may be replaced (resume).

One writer per WebSocket: frames leave only through ``flush``, which drains the endpoint under a
lock, so their order on the wire is the order the endpoint produced them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from hatchway.protocol.reliability import Endpoint

log = logging.getLogger(__name__)


class ChannelDriver:
    """Owns an endpoint's timers and its (current) WebSocket connection."""

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._ws: Any = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def attach(self, ws: Any) -> None:
        """Use ``ws`` from now on (a reconnect); start the retransmission timer once."""
        self._ws = ws
        if self._timer_task is None:
            self._timer_task = asyncio.get_running_loop().create_task(self._timers())
        self._wake.set()

    def detach(self, ws: Any) -> None:
        if self._ws is ws:
            self._ws = None

    async def flush(self) -> None:
        """Send everything the endpoint has ready, including what is queued while sending.

        Frames are dropped while disconnected: the reliability layer retransmits them.
        """
        async with self._lock:
            while frames := self.endpoint.data_to_send():
                ws = self._ws
                if ws is None:
                    break
                try:
                    for frame in frames:
                        await ws.send(frame)
                except Exception as exc:  # the reader notices the drop and reconnects
                    log.debug("send failed: %s", exc)
                    break
        self._wake.set()

    async def _timers(self) -> None:
        while True:
            deadline = self.endpoint.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self.endpoint.handle_timer(self._clock())
            await self.flush()

    async def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None
