"""Two in-memory endpoints, a fake clock and an optionally unreliable wire between them."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hatchway.protocol.events import Event, StreamData
from hatchway.protocol.reliability import Endpoint, Role

T0 = 1_700_000_000.0


def counting_ids(prefix: int) -> Callable[[], uuid.UUID]:
    """Deterministic MessageIds: ``prefix`` in the high half, a counter in the low half."""
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=(prefix << 64) | next(counter))


@dataclass
class Wire:
    """How the wire misbehaves. Probabilities apply per frame."""

    loss: float = 0.0
    duplication: float = 0.0
    reorder: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))


class Pair:
    """A CLIENT and an AGENT :class:`Endpoint` joined by a wire, with a fake clock.

    Frames are carried one at a time; every delivery advances the clock by ``latency``.
    """

    def __init__(
        self,
        *,
        wire: Wire | None = None,
        latency: float = 0.001,
        client: dict[str, Any] | None = None,
        agent: dict[str, Any] | None = None,
        **common: Any,
    ) -> None:
        self.now = T0
        self.latency = latency
        self.wire = wire or Wire()
        self.client = Endpoint(
            Role.CLIENT, now=T0, id_factory=counting_ids(0xC), **{**common, **(client or {})}
        )
        self.agent = Endpoint(
            Role.AGENT, now=T0, id_factory=counting_ids(0xA), **{**common, **(agent or {})}
        )
        self.events: dict[Role, list[Event]] = {Role.CLIENT: [], Role.AGENT: []}
        self.in_flight: list[tuple[Role, bytes]] = []
        self.frames_carried = 0

    def endpoint(self, role: Role) -> Endpoint:
        return self.client if role is Role.CLIENT else self.agent

    def collect(self) -> None:
        """Move frames from both endpoints onto the wire, dropping/duplicating per ``wire``."""
        for source, dest in ((self.client, Role.AGENT), (self.agent, Role.CLIENT)):
            for data in source.data_to_send():
                if self.wire.rng.random() < self.wire.loss:
                    continue
                self.in_flight.append((dest, data))
                if self.wire.rng.random() < self.wire.duplication:
                    self.in_flight.append((dest, data))

    def deliver_one(self) -> bool:
        """Deliver one frame from the wire (a random one if reordering). False if none."""
        if not self.in_flight:
            return False
        index = self.wire.rng.randrange(len(self.in_flight)) if self.wire.reorder else 0
        dest, data = self.in_flight.pop(index)
        self.now += self.latency
        self.events[dest].extend(self.endpoint(dest).receive(data, now=self.now))
        self.frames_carried += 1
        return True

    def deliver(self, max_frames: int = 100_000) -> None:
        """Carry frames until the wire and both outboxes are empty."""
        for _ in range(max_frames):
            self.collect()
            if not self.deliver_one():
                return
        raise AssertionError("the wire never went quiet")

    def advance(self) -> bool:
        """Jump the clock to the earliest deadline and fire both timers. False if none."""
        deadlines = [
            d for d in (self.client.next_deadline(), self.agent.next_deadline()) if d is not None
        ]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        self.client.handle_timer(self.now)
        self.agent.handle_timer(self.now)
        return True

    def run_until_acked(self, max_steps: int = 50_000) -> int:
        """Deliver and fire timers until both sides have everything acked; returns steps."""
        for step in range(max_steps):
            self.collect()
            if self.deliver_one():
                continue
            if self.client.all_acked and self.agent.all_acked:
                return step
            if not self.advance():
                raise AssertionError("unacked frames but no timer deadline")
        raise AssertionError(f"not all acked after {max_steps} steps")

    def stream(self, role: Role) -> list[StreamData]:
        """The stream frames ``role`` has received so far."""
        return [e for e in self.events[role] if isinstance(e, StreamData)]

    def received(self, role: Role) -> bytes:
        return b"".join(e.payload for e in self.stream(role))
