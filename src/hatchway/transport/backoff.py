"""Jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays that grow ×``factor`` from ``initial`` up to ``maximum``, with full jitter.

    Full jitter (a uniform draw in [delay/2, delay]) keeps a fleet of agents that lost the
    server at the same moment from reconnecting in lockstep.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    _current: float = field(default=0.0, init=False)
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self._current = (
            self.initial if self._current == 0 else min(self._current * self.factor, self.maximum)
        )
        return self.rng.uniform(self._current / 2, self._current)

    def reset(self) -> None:
        self._current = 0.0
