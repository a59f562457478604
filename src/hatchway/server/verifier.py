"""Checking secrets against their scrypt hashes off the event loop, with bounded waiting.

scrypt costs ~80–300 ms of CPU and 32 MiB per check (``auth.tokens``). Run on the event loop,
every wrong activation code stalled every connection of the server; run on an unbounded pool,
a flood of guesses would queue without end. So checks run on a small dedicated thread pool
(``hashlib.scrypt`` releases the GIL while it works, so the loop keeps serving), and when
``max_waiting`` checks already wait for a thread, the next caller is answered ``Throttled``
at once instead of being queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from hatchway.auth.tokens import verify_secret
from hatchway.errors import Throttled

__all__ = ["SecretVerifier"]

Check = Callable[[str, str], bool]


class SecretVerifier:
    """A bounded pool for secret checks.

    Use :meth:`admission` around everything a check needs (reading the stored hash too), so
    the work that a flood of requests can start is bounded, not just the hashing::

        with verifier.admission():            # Throttled when the pool is full
            stored = await store.get(...)
            ok = await verifier.verify(code, stored.code_hash)

    Args:
        workers: threads computing hashes (each uses one core and 32 MiB while it works).
        max_waiting: admitted callers that may wait for a thread; beyond that, ``Throttled``.
        check: the function run on the pool (``verify_secret``; tests count its calls).
    """

    def __init__(self, *, workers: int = 1, max_waiting: int = 16, check: Check = verify_secret):
        if workers < 1 or max_waiting < 0:
            raise ValueError("workers must be at least 1 and max_waiting not negative")
        self._check = check
        self._capacity = workers + max_waiting
        self._admitted = 0  # only the event loop's thread touches it
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hatchway-kdf")

    @property
    def admitted(self) -> int:
        """Callers inside :meth:`admission` now (working or waiting)."""
        return self._admitted

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of the pool's places for the duration of the block.

        Raises:
            Throttled: every place is taken.
        """
        if self._admitted >= self._capacity:
            raise Throttled("Too many registrations are being checked; retry in a few seconds.")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def verify(self, secret: str, hashed: str) -> bool:
        """Whether ``secret`` matches ``hashed``, computed on the pool (call within
        :meth:`admission`)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._check, secret, hashed
        )

    def close(self) -> None:
        """Stop the pool; checks not started yet are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
