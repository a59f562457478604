"""Test doubles, all in one place (STYLE.md). Only what cannot exist here is faked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """A clock the test advances by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
