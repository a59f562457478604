"""Per-source back-off after failed attempts (``server.throttle``), on an injected clock."""

from __future__ import annotations

import pytest

from hatchway.errors import Throttled
from hatchway.server.throttle import BackoffPolicy, FailureLimiter, source_key
from tests.fakes import FakeClock


def limiter(**policy: float) -> tuple[FailureLimiter, FakeClock]:
    clock = FakeClock(now=1000.0)
    return FailureLimiter(BackoffPolicy(**policy), clock=clock), clock


def test_free_failures_then_doubling_waits_up_to_the_cap() -> None:
    lim, clock = limiter(free_failures=3, first_delay=1.0, max_delay=8.0)
    waits = []
    for _ in range(8):
        lim.check("10.0.0.1")  # never raises once its wait has passed
        waits.append(lim.failed("10.0.0.1"))
        clock.advance(waits[-1])
    assert waits == [0, 0, 0, 1, 2, 4, 8, 8]


def test_a_waiting_source_is_refused_and_others_are_not() -> None:
    lim, clock = limiter(free_failures=1, first_delay=10.0)
    lim.failed("10.0.0.1")
    assert lim.failed("10.0.0.1") == 10.0
    with pytest.raises(Throttled, match="retry in 10 s"):
        lim.check("10.0.0.1")
    lim.check("10.0.0.2")
    clock.advance(9.5)
    with pytest.raises(Throttled):
        lim.check("10.0.0.1")
    clock.advance(0.5)
    lim.check("10.0.0.1")


def test_success_forgets_the_failures() -> None:
    lim, _ = limiter(free_failures=2)
    for _ in range(2):
        lim.failed("10.0.0.1")
    lim.succeeded("10.0.0.1")
    assert lim.failed("10.0.0.1") == 0  # free again
    assert len(lim) == 1


def test_only_failures_count() -> None:
    lim, _ = limiter(free_failures=1)
    for _ in range(1000):  # e.g. a provisioning host registering many nodes
        attempt = lim.begin("127.0.0.1")
        attempt.outcome = True
        lim.end(attempt)
    assert len(lim) == 0


def test_no_more_attempts_in_flight_than_free_failures_left() -> None:
    lim, clock = limiter(free_failures=3, first_delay=1.0)
    for _ in range(20):  # one after the other: never held back
        attempt = lim.begin("127.0.0.1")
        attempt.outcome = True
        lim.end(attempt)
    burst = [lim.begin("10.0.0.1") for _ in range(3)]  # as many at once as free failures
    with pytest.raises(Throttled, match="at once"):
        lim.begin("10.0.0.1")
    burst[0].outcome = False
    lim.end(burst[0])
    with pytest.raises(Throttled, match="at once"):  # 2 in flight, 2 free failures left
        lim.begin("10.0.0.1")
    for attempt in burst[1:]:
        attempt.outcome = False
        lim.end(attempt)
    assert lim.failed("10.0.0.1") == 1.0  # the fourth failure: a wait
    clock.advance(1.0)
    probe = lim.begin("10.0.0.1")  # once the wait is over: one attempt at a time
    with pytest.raises(Throttled, match="at once"):
        lim.begin("10.0.0.1")
    probe.outcome = None  # refused for another reason: neither counted nor forgiven
    lim.end(probe)
    lim.end(lim.begin("10.0.0.1"))
    assert len(lim) == 1


def test_a_right_answer_ends_the_back_off() -> None:
    lim, _ = limiter(free_failures=1, first_delay=60.0)
    attempt = lim.begin("10.0.0.1")
    attempt.outcome = True
    lim.failed("10.0.0.1")
    lim.end(attempt)  # e.g. a right code checked while a wrong one failed
    lim.check("10.0.0.1")
    assert len(lim) == 0


def test_old_failures_are_forgotten() -> None:
    lim, clock = limiter(free_failures=2, forget_after=60.0)
    lim.failed("10.0.0.1")
    lim.failed("10.0.0.1")
    clock.advance(61.0)
    assert lim.failed("10.0.0.1") == 0  # counting starts afresh


def test_the_table_is_bounded_least_recently_failing_first() -> None:
    lim, _ = limiter(free_failures=0, first_delay=5.0, max_sources=3)
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        lim.failed(host)
    lim.failed("10.0.0.1")  # most recent again
    lim.failed("10.0.0.4")  # evicts 10.0.0.2
    assert len(lim) == 3
    lim.check("10.0.0.2")
    for host in ("10.0.0.1", "10.0.0.3", "10.0.0.4"):
        with pytest.raises(Throttled):
            lim.check(host)


def test_waits_do_not_overflow() -> None:
    policy = BackoffPolicy(free_failures=0, first_delay=1.0, max_delay=60.0)
    assert policy.delay(10_000) == 60.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", "unknown"),
        (None, "unknown"),
        ("not an address", "unknown"),
    ],
)
def test_source_key(address: str | None, key: str) -> None:
    assert source_key(address) == key
