"""The back-off schedule of failed webhook deliveries."""

from __future__ import annotations

import pytest

from hatchway.server.events.retry import RetryPolicy


def test_delays_double_from_one_second_up_to_five_minutes() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300,
    ]  # fmt: skip
    assert policy.delay(10_000) == 300


def test_a_delivery_is_given_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_attempt(attempts=1, created_at=0.0, now=10.0) == 11.0
    assert policy.next_attempt(attempts=2, created_at=0.0, now=20.0) == 22.0
    assert policy.next_attempt(attempts=3, created_at=0.0, now=30.0) is None


def test_a_delivery_is_given_up_when_the_next_attempt_would_be_past_max_age() -> None:
    policy = RetryPolicy(max_age=24 * 3600.0)
    day = 24 * 3600.0
    assert policy.next_attempt(attempts=20, created_at=0.0, now=day - 300) == day
    assert policy.next_attempt(attempts=20, created_at=0.0, now=day - 299) is None


def test_the_defaults_retry_for_about_a_day() -> None:
    policy = RetryPolicy()
    now, attempts = 0.0, 0
    while True:
        attempts += 1
        when = policy.next_attempt(attempts=attempts, created_at=0.0, now=now)
        if when is None:
            break
        now = when
    assert 23 * 3600 < now <= 24 * 3600
    assert attempts < policy.max_attempts  # the age decides, with these defaults


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=10, max_delay=5)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
