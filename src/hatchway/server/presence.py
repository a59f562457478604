"""Node presence: agents' heartbeats kept in memory, written to the database in batches.

Every connected agent beats every ``heartbeat_interval`` seconds (10 s): with 10,000 nodes that
is 1,000 beats a second. Writing each as it comes cost ~2.3 ms of CPU (a transaction, a
statement built by SQLAlchemy, a trip to aiosqlite's thread), 70 % of a core for 3,000 idle
nodes. Here a beat only replaces the node's entry in a dict; every ``write_interval`` seconds
the newest beat of each node that beat since goes to the database in one transaction of at
most two ``executemany`` statements (``NodeRepository.record_presence``): the ping time of
every such node, and the facts (host name, platform, addresses, agent version) only of the
nodes whose facts changed since they were last written. A beat with new facts (a node that
just connected, or changed) brings the next write forward to :data:`CHANGE_DELAY` from now.

So ``LastPingDateTime`` in the database (what ``DescribeInstanceInformation`` shows, from any
replica) lags the newest heartbeat by at most ``write_interval`` plus one write; the ping
status allows for it (:func:`online_window`). Connecting and disconnecting are still written at
once (``mark_connected``), and a node's pending beat is written before it is marked
disconnected (:meth:`Presence.forget` hands it back).

The batching itself is clock-free and synchronous (:meth:`Presence.beat`, :meth:`Presence.take`,
:meth:`Presence.restore`); :meth:`Presence.run` is the thin loop that writes a batch each period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from hatchway.errors import HatchwayError
from hatchway.protocol.timing import liveness_window
from hatchway.store.records import Heartbeat

log = logging.getLogger(__name__)

#: Seconds between two presence writes (the default of ``ServerSettings``).
WRITE_INTERVAL: Final = 5.0
#: A beat with new facts (a node that just connected, or whose facts changed) is written this
#: soon instead (after the loop's other ready work: beats read in the same pass share the
#: write), with whatever else waits: ``nodes`` shows a new node's platform at once, as before.
CHANGE_DELAY: Final = 0.0

_Facts = tuple[str, str, str, str, str, str]


def online_window(heartbeat_interval: float, write_interval: float) -> float:
    """How old a node's stored ping time may be for it to count as ``Online``: the agents'
    liveness window plus the time a beat may wait in memory before it is written."""
    return liveness_window(heartbeat_interval) + write_interval


class PresenceStore(Protocol):
    """Where presence goes (``store.repositories.NodeRepository``)."""

    async def record_presence(
        self,
        changed: Sequence[Heartbeat],
        pings: Sequence[tuple[str, float]],
        *,
        replica: str = "",
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """One write's worth of presence.

    Attributes:
        changed: the nodes whose facts differ from what was last written (their whole beat).
        pings: the other nodes that beat: only their ping time is written.
    """

    changed: tuple[Heartbeat, ...]
    pings: tuple[tuple[str, float], ...]

    def __len__(self) -> int:
        return len(self.changed) + len(self.pings)


def _facts(beat: Heartbeat) -> _Facts:
    return (
        beat.computer_name,
        beat.platform_type,
        beat.platform_name,
        beat.platform_version,
        beat.ip_address,
        beat.agent_version,
    )


class Presence:
    """The newest heartbeat of each node of this server, waiting to be written.

    Args:
        store: writes batches (``record_presence``).
        write_interval: seconds between two writes in :meth:`run`.
    """

    def __init__(self, store: PresenceStore, write_interval: float = WRITE_INTERVAL) -> None:
        self._store = store
        self.write_interval = write_interval
        #: Scale-out: this replica's id, written as the holder of the nodes' channels.
        self.replica_id = ""
        self._pending: dict[str, Heartbeat] = {}
        #: The facts last written per node (a node absent here has its facts written next).
        self._written: dict[str, _Facts] = {}
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Lock | None = None
        #: Set by a beat with new facts (no loop is bound until it is awaited).
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        """How many nodes have a beat waiting."""
        return len(self._pending)

    def beat(self, beat: Heartbeat) -> None:
        """A node beat: keep it until the next write (an older one waiting is superseded)."""
        seen = self._pending.get(beat.instance_id)
        if seen is None or beat.at >= seen.at:
            self._pending[beat.instance_id] = beat
            if self._written.get(beat.instance_id) != _facts(beat):
                self._changed.set()

    def forget(self, node_id: str) -> Heartbeat | None:
        """The node's channel closed: drop what is kept for it; returns its unwritten beat."""
        self._written.pop(node_id, None)
        return self._pending.pop(node_id, None)

    def take(self) -> Batch:
        """Everything waiting, as one batch; the waiting list is empty after.

        The facts of the batch's nodes count as written; if the write fails, give the batch
        back with :meth:`restore`.
        """
        pending, self._pending = self._pending, {}
        changed: list[Heartbeat] = []
        pings: list[tuple[str, float]] = []
        for node_id, beat in pending.items():
            facts = _facts(beat)
            if self._written.get(node_id) == facts:
                pings.append((node_id, beat.at))
            else:
                changed.append(beat)
                self._written[node_id] = facts
        return Batch(tuple(changed), tuple(pings))

    def restore(self, batch: Batch) -> None:
        """A batch could not be written: keep its beats for the next write (newer beats that
        arrived meanwhile win) and write its facts again."""
        for beat in batch.changed:
            self._written.pop(beat.instance_id, None)
            self._pending.setdefault(beat.instance_id, beat)
        for node_id, at in batch.pings:
            if node_id not in self._pending:
                # Its facts are those last written; a beat with them restores the ping time.
                facts = self._written.get(node_id)
                if facts is not None:
                    self._pending[node_id] = Heartbeat(node_id, at, *facts)

    async def write(self) -> int:
        """Write what is waiting now, in one transaction; returns how many nodes it covered.

        A failed write is logged and kept for the next one, never raised: a database that is
        down delays presence, it does not end channels.
        """
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:  # one write at a time, so batches land in order
            batch = self.take()
            if not batch:
                return 0
            try:
                await self._store.record_presence(
                    batch.changed, batch.pings, replica=self.replica_id
                )
            except HatchwayError as exc:
                self.restore(batch)
                log.warning("cannot write the presence of %d node(s) now: %s", len(batch),
                            exc.message)  # fmt: skip
                return 0
            except BaseException:
                self.restore(batch)
                raise
            return len(batch)

    def start(self) -> None:
        """Start :meth:`run` in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="presence writer")

    async def run(self) -> None:
        """Write a batch every ``write_interval`` seconds, or :data:`CHANGE_DELAY` after a
        beat with new facts, for ever."""
        changed = self._changed
        while True:
            try:
                async with asyncio.timeout(self.write_interval):
                    await changed.wait()
                await asyncio.sleep(CHANGE_DELAY)  # let a burst of new nodes share a write
            except TimeoutError:
                pass
            changed.clear()
            try:
                await self.write()
            except Exception:
                log.exception("presence write failed")

    async def close(self) -> None:
        """Stop the periodic writes and write what is still waiting."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
        await self.write()
