"""Giving memory back to the operating system after a burst of connections ends.

Measured (``benchmarks/bench_connections.py``, 5,000 idle connections per burst): the memory
a burst took stayed with the process after its connections were closed, and the next burst
added more (e.g. 93 → 350 → 600 MiB over two bursts of connections in a TLS handshake; TLS
connections idle before their first request take ~12–25 KiB each). The objects were all freed
(``gc.collect()`` found nothing to collect); glibc's allocator kept the freed heap, and one
``malloc_trim(0)`` brought the process back to ~110 MiB. So when the number of open
connections has fallen far below its peak, the server trims the heap: off the event loop
(``ctypes`` releases the GIL; a trim of a few hundred MiB takes ~150 ms), shortly after the
fall and at most once per ``interval``. Without glibc (``malloc_trim`` missing) nothing is
done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable

__all__ = ["MemoryReclaimer", "malloc_trim"]

log = logging.getLogger(__name__)


def _glibc_trim() -> Callable[[], None] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


malloc_trim = _glibc_trim()
"""glibc's ``malloc_trim(0)`` (give free heap memory back), or ``None`` elsewhere."""


class MemoryReclaimer:
    """Trims the heap once a burst of connections is over.

    Call :meth:`connections_changed` with the number of open connections whenever it changes
    (the connection guard does). When it is ``drop`` or more below the highest count since
    the last trim, a trim runs ``delay`` seconds later (so the rest of the burst can close
    first), and never sooner than ``interval`` after the previous one.

    Args:
        trim: the function that gives memory back (``malloc_trim``; tests pass a counter).
    """

    def __init__(
        self,
        trim: Callable[[], None] | None = malloc_trim,
        *,
        drop: int = 1000,
        delay: float = 1.0,
        interval: float = 10.0,
    ) -> None:
        self._trim = trim
        self._drop = drop
        self._delay = delay
        self._interval = interval
        self._peak = 0
        self._count = 0
        self._last: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Future[None] | None = None
        self._closed = False

    def connections_changed(self, count: int) -> None:
        self._count = count
        self._peak = max(self._peak, count)
        if self._trim is None or self._closed or self._timer is not None:
            return
        if self._peak - count < self._drop:
            return
        loop = asyncio.get_running_loop()
        delay = self._delay
        if self._last is not None:
            delay = max(delay, self._last + self._interval - loop.time())
        self._timer = loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running is not None and not self._running.done():
            return
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._peak = self._count
        assert self._trim is not None
        self._running = loop.run_in_executor(None, self._timed_trim, self._trim)

    @staticmethod
    def _timed_trim(trim: Callable[[], None]) -> None:
        started = time.perf_counter()
        trim()
        log.debug("heap trimmed in %.0f ms", (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        """Cancel a pending trim and wait for a running one; trim no more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None:
            await self._running
