"""Back-off for sources that keep failing to authenticate (activation codes today).

A source is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so counting
single IPv6 addresses would give one attacker billions of fresh sources). After
``BackoffPolicy.free_failures`` failures a source must wait before it may try again, twice as
long after each further failure, up to ``max_delay``; while it waits every attempt is answered
``Throttled`` at once, without any key derivation. Only failures count: a source that
registers many nodes with the right codes (``hatchway up``, tests, a provisioning script on
one host) is never slowed down, and a success forgets the source's failures.

The table lives in memory, bounded (least recently failing sources are forgotten first) and
timed by a monotonic clock, so a wall-clock step neither frees nor blocks anyone.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from hatchway.errors import Throttled

__all__ = ["Attempt", "BackoffPolicy", "FailureLimiter", "source_key"]


def source_key(address: str | None) -> str:
    """The unit a limit applies to: the IPv4 address, or the /64 of an IPv6 address.

    IPv4-mapped IPv6 addresses count as their IPv4 address; anything unparsable (a Unix
    socket, no peer) is one shared source, ``"unknown"``.
    """
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How patient the server is with a failing source.

    Attributes:
        free_failures: failures a source may make before it has to wait.
        first_delay: the wait after the first failure beyond the free ones (seconds).
        max_delay: the wait never grows beyond this.
        forget_after: a source with no failure for this long starts afresh.
        max_sources: sources remembered at most (the least recently failing go first).
    """

    free_failures: int = 10
    first_delay: float = 1.0
    max_delay: float = 60.0
    forget_after: float = 3600.0
    max_sources: int = 10_000

    def delay(self, failures: int) -> float:
        """The wait imposed after ``failures`` failures in a row."""
        beyond = failures - self.free_failures
        if beyond <= 0:
            return 0.0
        # The exponent is capped so that a source failing for days cannot overflow a float.
        return min(self.max_delay, self.first_delay * 2.0 ** min(beyond - 1, 64))


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    in_flight: int = 0  # attempts begun and not ended


@dataclass(slots=True)
class Attempt:
    """One attempt of a source, between :meth:`FailureLimiter.begin` and ``end``.

    Attributes:
        source: whose attempt it is.
        outcome: ``True`` once the right answer was given, ``False`` once a wrong (or
            malformed) one was; ``None`` when neither (refused for another reason).
    """

    source: str
    outcome: bool | None = None


class FailureLimiter:
    """Per-source failure counts with exponential back-off (see the module docstring).

    Args:
        policy: the limits.
        clock: a monotonic clock in seconds (injected by tests).
    """

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._clock = clock
        self._sources: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def check(self, source: str) -> None:
        """Raise ``Throttled`` if ``source`` must still wait; cheap, does no other work.

        Raises:
            Throttled: the source failed too often and its wait has not passed yet.
        """
        record = self._sources.get(source)
        if record is None:
            return
        wait = record.blocked_until - self._clock()
        if wait > 0:
            raise Throttled(
                f"Too many failed attempts from this address; retry in {max(1, round(wait))} s."
            )

    def begin(self, source: str) -> Attempt:
        """Start an attempt of ``source``, to be given to :meth:`end` with its outcome.

        A source may have only as many attempts in flight as it has free failures left (one
        at a time once it is past them): otherwise a burst sent while the first attempts are
        still being checked would all get through, on the first try and each time a wait
        ends, and a single source could lock an activation in one burst.

        Raises:
            Throttled: the source must wait, or has as many attempts in flight as it may.
        """
        self.check(source)
        record = self._sources.get(source)
        if record is None:
            record = self._sources[source] = _Record()
            self._evict()
        if record.in_flight >= max(1, self.policy.free_failures - record.failures):
            raise Throttled(
                "Too many registration attempts from this address at once; retry in a second."
            )
        record.in_flight += 1
        return Attempt(source)

    def end(self, attempt: Attempt) -> None:
        """Finish an attempt: count its failure, forget the source's failures after a success."""
        record = self._sources.get(attempt.source)
        if record is not None:
            record.in_flight = max(0, record.in_flight - 1)
        if attempt.outcome is True:
            self.succeeded(attempt.source)
        elif attempt.outcome is False:
            self.failed(attempt.source)
        elif record is not None and record.failures == 0 and record.in_flight == 0:
            del self._sources[attempt.source]

    def failed(self, source: str) -> float:
        """Count a failure of ``source``; returns the wait it now has (0 while still free)."""
        now = self._clock()
        record = self._sources.pop(source, None)
        if record is None:
            record = _Record()
        elif now - record.last_failure > self.policy.forget_after:
            record.failures = 0
        record.failures += 1
        record.last_failure = now
        wait = self.policy.delay(record.failures)
        record.blocked_until = now + wait
        self._sources[source] = record  # most recent last
        self._evict()
        return wait

    def succeeded(self, source: str) -> None:
        """A right answer from ``source``: forget its failures."""
        record = self._sources.get(source)
        if record is None:
            return
        if record.in_flight:  # keep counting the attempts still in flight
            record.failures, record.blocked_until = 0, 0.0
        else:
            del self._sources[source]

    def _evict(self) -> None:
        while len(self._sources) > self.policy.max_sources:
            self._sources.popitem(last=False)
