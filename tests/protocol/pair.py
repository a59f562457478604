"""Two in-memory endpoints, a fake clock and an optionally unreliable wire between them.

The wire can lose, duplicate and reorder frames (a hostile network), and it can model what the
real deployment does instead: Hatchway's gateway between two WebSockets that deliver in order,
whose connections are cut and made again (:meth:`Pair.cut`, :meth:`Pair.rejoin`), and AWS's
plugin as the client, which drops duplicates without acknowledging them
(``client_drops_duplicates``).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hatchway.protocol.control import control_frame
from hatchway.protocol.events import Event, StreamData
from hatchway.protocol.frames import MessageType, peek_header
from hatchway.protocol.reliability import Endpoint, Role

#: Start of the fake monotonic clock, deliberately far from the wall clock.
T0 = 1000.0
#: The fake wall clock at T0 (CreatedDate stamps).
WALL0 = 1_700_000_000.0


def counting_ids(prefix: int) -> Callable[[], uuid.UUID]:
    """Deterministic MessageIds: ``prefix`` in the high half, a counter in the low half."""
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=(prefix << 64) | next(counter))


def fixed_wall(now: float = WALL0) -> Callable[[], float]:
    """A wall clock that stands still."""
    return lambda: now


@dataclass
class Wire:
    """How the wire misbehaves. Probabilities apply per frame."""

    loss: float = 0.0
    duplication: float = 0.0
    reorder: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))


class Pair:
    """A CLIENT and an AGENT :class:`Endpoint` joined by a wire, with a fake clock.

    Frames are carried one at a time; every delivery advances the clock by ``latency`` (so a
    large latency is a slow link or a slow reader: frames queue behind each other).

    Args:
        client_drops_duplicates: the client behaves like AWS's plugin (docs/protocol.md §6.3):
            a stream frame below its expected sequence number is dropped without an ack.
    """

    def __init__(
        self,
        *,
        wire: Wire | None = None,
        latency: float = 0.001,
        client_drops_duplicates: bool = False,
        client: dict[str, Any] | None = None,
        agent: dict[str, Any] | None = None,
        **common: Any,
    ) -> None:
        self.now = T0
        self.latency = latency
        self.wire = wire or Wire()
        self.client_drops_duplicates = client_drops_duplicates
        self.client = Endpoint(
            Role.CLIENT,
            wall_clock=self.wall_clock,
            id_factory=counting_ids(0xC),
            **{**common, **(client or {})},
        )
        self.agent = Endpoint(
            Role.AGENT,
            wall_clock=self.wall_clock,
            id_factory=counting_ids(0xA),
            **{**common, **(agent or {})},
        )
        self.events: dict[Role, list[Event]] = {Role.CLIENT: [], Role.AGENT: []}
        self.in_flight: list[tuple[Role, bytes]] = []
        self.frames_carried = 0
        self.duplicates_dropped = 0
        self.absent: set[Role] = set()  # ends whose connection to the gateway is cut

    def wall_clock(self) -> float:
        """The fake wall clock: moves with the monotonic one, from a different origin."""
        return WALL0 + (self.now - T0)

    def endpoint(self, role: Role) -> Endpoint:
        return self.client if role is Role.CLIENT else self.agent

    def collect(self) -> None:
        """Move frames from both endpoints onto the wire, dropping/duplicating per ``wire``."""
        for source, dest in ((self.client, Role.AGENT), (self.agent, Role.CLIENT)):
            for data in source.data_to_send():
                if dest in self.absent or source.role in self.absent:
                    continue  # into a dead socket, or dropped at the gateway
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
        self.frames_carried += 1
        if dest is Role.CLIENT and self.client_drops_duplicates and self._duplicate(data):
            self.duplicates_dropped += 1
            return True
        self.events[dest].extend(self.endpoint(dest).receive(data, now=self.now))
        return True

    def _duplicate(self, data: bytes) -> bool:
        header = peek_header(data)
        return (
            header.message_type == MessageType.OUTPUT_STREAM_DATA
            and header.sequence_number < self.client.expected_sequence_number
        )

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
        self.fire_timers()
        return True

    def fire_timers(self) -> None:
        """Run both endpoints' timers at the current time (each only acts when due)."""
        self.client.handle_timer(self.now)
        self.agent.handle_timer(self.now)

    def run_until_acked(self, max_steps: int = 50_000, *, timers_while_busy: bool = False) -> int:
        """Deliver and fire timers until both sides have everything acked; returns steps.

        By default timers only fire when the wire is idle (a fast network); with
        ``timers_while_busy`` they fire whenever due, also while frames queue (a slow one).
        """
        for step in range(max_steps):
            self.collect()
            if timers_while_busy:
                self.fire_timers()
                self.collect()
            if self.deliver_one():
                continue
            if self.client.all_acked and self.agent.all_acked:
                return step
            if not self.advance():
                raise AssertionError("unacked frames but no timer deadline")
        raise AssertionError(f"not all acked after {max_steps} steps")

    def cut(self, role: Role) -> None:
        """``role``'s connection to the gateway breaks.

        Frames on the wire to it are lost, and so are the last of those it sent (those that
        had not reached the gateway) and what it had not sent yet. The
        gateway sends ``pause_publication`` to the other end, which sees it at once (the
        gateway's own messages are never lost or overtaken), and drops what that end sends
        until ``role`` is back.
        """
        self.absent.add(role)
        other = Role.AGENT if role is Role.CLIENT else Role.CLIENT
        # What it sent last may not have reached the gateway: keep only the first few.
        self.in_flight = [(dest, data) for dest, data in self.in_flight if dest is not role]
        del self.in_flight[self.wire.rng.randrange(len(self.in_flight) + 1) :]
        self.endpoint(role).data_to_send()
        if other not in self.absent:
            pause = control_frame(MessageType.PAUSE_PUBLICATION, b"{}", now=self.wall_clock())
            self.events[other].extend(self.endpoint(other).receive(pause, now=self.now))

    def rejoin(self, role: Role) -> None:
        """``role`` connects again, as through Hatchway's gateway.

        Its driver calls ``retransmit_all``. If the other end is there, the gateway sends
        ``start_publication`` to the agent and the client before it relays anything from the
        new connection, so both see it first; frames already on the wire to ``role`` now reach
        the new connection. If the other end is away, ``role`` is paused instead.
        """
        self.absent.discard(role)
        self.endpoint(role).retransmit_all(self.now)
        if self.absent:
            ends, kind = [role], MessageType.PAUSE_PUBLICATION
        else:
            ends, kind = [Role.AGENT, Role.CLIENT], MessageType.START_PUBLICATION
        frame = control_frame(kind, b"{}", now=self.wall_clock())
        for end in ends:
            self.events[end].extend(self.endpoint(end).receive(frame, now=self.now))

    def reconnect(self, role: Role) -> None:
        """:meth:`cut` and :meth:`rejoin` ``role``."""
        self.cut(role)
        self.rejoin(role)

    def stream(self, role: Role) -> list[StreamData]:
        """The stream frames ``role`` has received so far."""
        return [e for e in self.events[role] if isinstance(e, StreamData)]

    def received(self, role: Role) -> bytes:
        return b"".join(e.payload for e in self.stream(role))
