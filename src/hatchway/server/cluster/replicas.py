"""Which replicas are alive: each announces itself every second on ``<prefix>.beat``.

A replica not heard for :data:`DEAD_AFTER` seconds is gone (``on_gone`` runs once for it), and
so is one that says it is leaving (the end of a drain) or whose request subject has no
responder (``suspect``: NATS dropped its subscriptions, so its connection is gone). Nobody is
declared gone by a replica that has not itself been connected to NATS for ``DEAD_AFTER``
seconds in a row: after an outage (its own or NATS's) it first listens again, so a NATS restart
makes no replica take over another's sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Final

from hatchway.errors import HatchwayError, RemoteProtocolError
from hatchway.server.cluster.bus import Bus
from hatchway.server.cluster.envelope import Freshness

log = logging.getLogger(__name__)

__all__ = ["BEAT_INTERVAL", "DEAD_AFTER", "ReplicaInfo", "Replicas"]

BEAT_INTERVAL: Final = 1.0
DEAD_AFTER: Final = 3.0


@dataclass
class ReplicaInfo:
    """What a replica says about itself in each beat (``hatchway cluster status``)."""

    replica_id: str
    address: str
    version: str
    started: float
    control_channels: int = 0
    sessions: int = 0
    pipes: int = 0
    #: Ends of sessions relayed here that came through another replica, since the start.
    pipes_served: int = 0
    draining: bool = False
    healthy: bool = True


class Replicas:
    """The alive replicas as this one hears them."""

    def __init__(
        self,
        bus: Bus,
        me: ReplicaInfo,
        stats: Callable[[ReplicaInfo], None],
        on_gone: Callable[[str], Coroutine[Any, Any, None]],
        *,
        clock: Callable[[], float] = time.time,
        interval: float = BEAT_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self._bus = bus
        self.me = me
        self._stats = stats
        self._on_gone = on_gone
        self._clock = clock
        self._interval = interval
        self._dead_after = dead_after
        self._fresh = Freshness(clock)
        self._peers: dict[str, tuple[ReplicaInfo, float]] = {}
        self._gone: set[str] = set()
        self._listening_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[None]] = set()

    @property
    def warm(self) -> bool:
        """Connected to NATS long enough to tell who is gone."""
        since = self._listening_since
        return since is not None and time.monotonic() - since >= self._dead_after

    def alive(self, replica_id: str) -> bool:
        """Whether ``replica_id`` counts as alive now (a replica not heard of yet does, until
        this one is warm)."""
        if replica_id == self.me.replica_id:
            return True
        if replica_id in self._gone or not replica_id:
            return False
        return replica_id in self._peers or not self.warm

    def peers(self) -> list[ReplicaInfo]:
        """The other alive replicas, freshest first."""
        return [info for info, _ in sorted(self._peers.values(), key=lambda p: -p[1])]

    def all(self) -> list[ReplicaInfo]:
        self._stats(self.me)
        return [self.me, *self.peers()]

    async def start(self) -> None:
        await self._bus.subscribe(self._bus.subject("beat"), self._heard)
        self.connected()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="replica-beat")

    async def stop(self, *, leaving: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if leaving:
            with contextlib.suppress(HatchwayError):
                await self._publish(leaving=True)

    def connected(self) -> None:
        """NATS is (again) reachable: listen before judging anybody."""
        now = time.monotonic()
        self._listening_since = now
        self._peers = {rid: (info, now) for rid, (info, _) in self._peers.items()}

    def disconnected(self) -> None:
        self._listening_since = None

    def suspect(self, replica_id: str) -> None:
        """``replica_id``'s subject had no responder: it is gone (once we are warm)."""
        if replica_id != self.me.replica_id and self.warm:
            self._declare_gone(replica_id, "its NATS subscriptions are gone")

    # ---- beats -----------------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            try:
                await self._publish(leaving=False)
            except HatchwayError as exc:
                log.debug("cannot announce this replica: %s", exc.message)
            now = time.monotonic()
            if self.warm:
                for rid, (_, heard) in list(self._peers.items()):
                    if now - heard > self._dead_after:
                        self._declare_gone(rid, f"not heard for {now - heard:.1f} s")
            await asyncio.sleep(self._interval)

    async def _publish(self, *, leaving: bool) -> None:
        self._stats(self.me)
        message = {"replica": asdict(self.me), "leaving": leaving}
        await self._bus.publish(self._bus.subject("beat"), Freshness.stamp(message, self._clock()))

    async def _heard(self, _subject: str, body: bytes, _reply: str | None) -> None:
        try:
            message = self._fresh.check(body)
            info = _info(message["replica"])
        except (RemoteProtocolError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignored a bad replica beat: %s", exc)
            return
        if info.replica_id == self.me.replica_id:
            return
        if message.get("leaving"):
            self._declare_gone(info.replica_id, "it left (drained)")
            return
        if info.replica_id in self._gone:
            log.info("replica %s is heard again", info.replica_id)
            self._gone.discard(info.replica_id)
        elif info.replica_id not in self._peers:
            log.info("replica %s joined (%s)", info.replica_id, info.address)
        self._peers[info.replica_id] = (info, time.monotonic())

    def _declare_gone(self, replica_id: str, why: str) -> None:
        if replica_id in self._gone:
            return
        self._gone.add(replica_id)
        self._peers.pop(replica_id, None)
        log.warning("replica %s is gone (%s); taking over what it held", replica_id, why)
        task = asyncio.get_running_loop().create_task(self._on_gone(replica_id))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)


def _info(raw: Any) -> ReplicaInfo:
    if not isinstance(raw, dict):
        raise TypeError("replica is not an object")
    info = ReplicaInfo(**{k: raw[k] for k in ReplicaInfo.__dataclass_fields__ if k in raw})
    if not isinstance(info.replica_id, str) or not info.replica_id:
        raise ValueError("replica without an id")
    return info
