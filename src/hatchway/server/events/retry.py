"""When a failed webhook delivery is tried again, and when it is given up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off: the n-th retry waits ``first_delay * 2**(n-1)`` seconds, at most
    ``max_delay``; a delivery is given up (``failed``) after ``max_attempts`` attempts or once
    it is ``max_age`` seconds old, whichever comes first.

    With the defaults a receiver that is down gets attempts 1, 2, 4, … 256 s apart, then every
    5 minutes, for a day. No jitter: a subscription has one delivery in flight at a time, so
    a recovering receiver is not stormed.
    """

    first_delay: float = 1.0
    max_delay: float = 300.0
    max_attempts: int = 300
    max_age: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if not (0 < self.first_delay <= self.max_delay and self.max_attempts >= 1):
            raise ValueError("RetryPolicy needs 0 < first_delay <= max_delay and max_attempts >= 1")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 → ``first_delay``)."""
        exponent = min(max(attempts - 1, 0), 64)  # 2**64 s is past any max_delay
        return float(min(self.first_delay * 2**exponent, self.max_delay))

    def next_attempt(self, *, attempts: int, created_at: float, now: float) -> float | None:
        """When to try again after ``attempts`` failed attempts (the latest at ``now``) of a
        delivery created at ``created_at``; ``None``: give it up."""
        if attempts >= self.max_attempts:
            return None
        when = now + self.delay(attempts)
        if when - created_at > self.max_age:
            return None
        return when
