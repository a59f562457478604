"""Which replicas are alive (``server.cluster.replicas``), in process over an in-memory NATS.

``Replicas`` judges on the real monotonic clock (not the loop's), so these tests run on real
time with short intervals, and wait for beats and verdicts with time-outs, never for a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field

import pytest

from hatchway.server.cluster.envelope import Freshness
from hatchway.server.cluster.replicas import ReplicaInfo, Replicas
from tests.fakes import MemoryBus, MemoryNats

pytestmark = pytest.mark.asyncio

INTERVAL = 0.05
SHORT = 1.0  # dead_after when a test wants verdicts (a busy machine stalls the loop less)
LONG = 3600.0  # dead_after when a test wants none (never warm)
WAIT = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (checked after every loop turn that had something to do)."""
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(INTERVAL / 2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


@dataclass
class Member:
    """One replica's ``Replicas`` on its own bus, with the verdicts it reached."""

    replicas: Replicas
    bus: MemoryBus
    gone: list[str] = field(default_factory=list)
    stats_calls: int = 0

    @property
    def id(self) -> str:
        return self.replicas.me.replica_id

    def beats_sent(self) -> int:
        """Beats this member published so far (``Replicas`` publishes one per interval)."""
        beat = self.bus.subject("beat")
        return sum(
            1
            for subject, data in self.bus.nats.published
            if subject == beat and self.id.encode() in data
        )

    async def beats(self, count: int) -> None:
        """Wait until this member has published ``count`` more beats (and so judged as often)."""
        target = self.beats_sent() + count
        await until(lambda: self.beats_sent() >= target, f"{self.id} beat {count} more times")


class Cluster:
    def __init__(self) -> None:
        self.nats = MemoryNats()
        self.members: list[Member] = []

    async def member(self, replica_id: str, dead_after: float, *, start: bool = True) -> Member:
        bus = MemoryBus(self.nats)
        member: Member

        def stats(me: ReplicaInfo) -> None:
            member.stats_calls += 1
            me.sessions = 7

        async def on_gone(replica: str) -> None:
            member.gone.append(replica)

        info = ReplicaInfo(replica_id, f"10.0.0.{len(self.members) + 1}:8443", "1.2.3", 1.0)
        replicas = Replicas(bus, info, stats, on_gone, interval=INTERVAL, dead_after=dead_after)
        member = Member(replicas, bus)
        self.members.append(member)
        if start:
            await replicas.start()
        return member

    async def close(self) -> None:
        for member in self.members:
            await member.replicas.stop(leaving=False)
            await member.bus.close()
            assert not member.bus.failures


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()


async def test_a_peer_heard_is_alive_with_what_it_said() -> None:
    async with cluster() as c:
        a = await c.member("a", LONG)
        b = await c.member("b", LONG)
        await until(lambda: [p.replica_id for p in a.replicas.peers()] == ["b"], "a hears b")
        await until(lambda: [p.replica_id for p in b.replicas.peers()] == ["a"], "b hears a")
        assert a.replicas.alive("b") and a.replicas.alive("a")
        heard = a.replicas.peers()[0]
        assert (heard.address, heard.version, heard.sessions) == ("10.0.0.2:8443", "1.2.3", 7)
        assert [r.replica_id for r in a.replicas.all()] == ["a", "b"]  # itself first
        assert b.stats_calls > 0


async def test_a_peer_not_heard_for_dead_after_is_gone_exactly_once() -> None:
    async with cluster() as c:
        a = await c.member("a", SHORT)
        b = await c.member("b", SHORT)
        await until(lambda: a.replicas.alive("b") and a.replicas.warm, "a is warm and hears b")
        await b.replicas.stop(leaving=False)  # dies: no goodbye
        await until(lambda: a.gone == ["b"], "a declares b gone")
        assert not a.replicas.alive("b") and a.replicas.peers() == []
        await a.beats(round(2 * SHORT / INTERVAL))
        assert a.gone == ["b"]
        a.replicas.suspect("b")  # already gone: not again
        await a.beats(2)
        assert a.gone == ["b"]


async def test_a_peer_heard_again_after_it_was_gone_is_alive() -> None:
    async with cluster() as c:
        a = await c.member("a", SHORT)
        b = await c.member("b", SHORT)
        await until(lambda: a.replicas.alive("b") and a.replicas.warm, "a is warm and hears b")
        await b.replicas.stop(leaving=False)
        await until(lambda: a.gone == ["b"], "a declares b gone")
        await b.replicas.start()  # it was only cut off
        await until(lambda: a.replicas.alive("b"), "a hears b again")
        await b.replicas.stop(leaving=False)
        await until(lambda: a.gone == ["b", "b"], "a declares b gone again")


async def test_a_leaving_peer_is_gone_at_once() -> None:
    async with cluster() as c:
        a = await c.member("a", LONG)  # never warm: only the goodbye can say b is gone
        b = await c.member("b", LONG)
        await until(lambda: [p.replica_id for p in a.replicas.peers()] == ["b"], "a hears b")
        await b.replicas.stop(leaving=True)
        await until(lambda: a.gone == ["b"], "a declares b gone")
        assert not a.replicas.alive("b")


async def test_nobody_is_judged_before_the_replica_is_warm() -> None:
    async with cluster() as c:
        a = await c.member("a", LONG)
        b = await c.member("b", LONG)
        await until(lambda: [p.replica_id for p in a.replicas.peers()] == ["b"], "a hears b")
        assert not a.replicas.warm
        assert a.replicas.alive("never-heard-of")  # it may have joined a moment ago
        assert not a.replicas.alive("")
        a.replicas.suspect("b")
        a.replicas.suspect("never-heard-of")
        await b.replicas.stop(leaving=False)
        await a.beats(10)
        assert a.gone == [] and a.replicas.alive("b")


async def test_an_unknown_replica_is_gone_once_warm() -> None:
    async with cluster() as c:
        a = await c.member("a", SHORT)
        await until(lambda: a.replicas.warm, "a is warm")
        assert not a.replicas.alive("never-heard-of")
        assert a.replicas.alive("a")


async def test_suspicion_counts_once_warm() -> None:
    async with cluster() as c:
        a = await c.member("a", SHORT)
        await c.member("b", LONG)
        await until(lambda: a.replicas.alive("b") and a.replicas.warm, "a is warm and hears b")
        a.replicas.suspect("a")  # never itself
        a.replicas.suspect("b")
        a.replicas.suspect("b")
        await until(lambda: a.gone == ["b"], "a declares b gone")
        await a.beats(2)
        assert a.gone == ["b"] and a.replicas.alive("a")


async def test_after_an_outage_a_replica_listens_before_it_judges() -> None:
    async with cluster() as c:
        a = await c.member("a", SHORT)
        b = await c.member("b", SHORT)
        await until(lambda: a.replicas.alive("b") and a.replicas.warm, "a is warm and hears b")
        a.replicas.disconnected()  # what Cluster wires to the bus's on_disconnected
        assert not a.replicas.warm
        assert a.replicas.alive("never-heard-of")
        a.replicas.suspect("b")
        await b.replicas.stop(leaving=False)  # not heard from now on
        await a.beats(round(3 * SHORT / INTERVAL))  # a judges at every beat
        assert a.gone == [] and a.replicas.alive("b")
        a.replicas.connected()  # NATS is back
        assert not a.replicas.warm and a.replicas.alive("b")
        await until(lambda: a.gone == ["b"], "a declares b gone, once it has listened")


async def test_forged_stale_and_malformed_beats_are_ignored() -> None:
    async with cluster() as c:
        a = await c.member("a", LONG)
        subject = a.bus.subject("beat")
        genuine = MemoryBus(c.nats)
        forger = MemoryBus(c.nats, key=b"f" * 32)
        c.members.append(Member(a.replicas, genuine))  # closed with the others
        c.members.append(Member(a.replicas, forger))

        def beat(replica: object, *, at: float | None = None, leaving: bool = False) -> bytes:
            now = time.time() if at is None else at
            return Freshness.stamp({"replica": replica, "leaving": leaving}, now)

        x = asdict(ReplicaInfo("x", "10.9.9.9:1", "0", 1.0))
        await forger.publish(subject, beat(x))
        await genuine.publish(subject, beat(x, at=time.time() - 3600))  # stale
        await genuine.publish(subject, beat(x, at=time.time() + 3600))  # from the future
        await genuine.publish(subject, b"not json")
        await genuine.publish(subject, beat("not an object"))
        await genuine.publish(subject, beat({**x, "replica_id": ""}))
        await genuine.publish(subject, beat({**x, "replica_id": 12}))
        await genuine.publish(subject, beat({"address": "no id"}))
        await until(lambda: len(a.bus.dropped) == 1, "a drops the forgery")
        await a.beats(3)
        assert a.replicas.peers() == []

        # a goodbye that is forged, stale or replayed does not make anybody gone
        await genuine.publish(subject, beat(x))
        await until(lambda: a.replicas.alive("x") and len(a.replicas.peers()) == 1, "a hears x")
        await forger.publish(subject, beat(x, leaving=True))
        await genuine.publish(subject, beat(x, at=time.time() - 3600, leaving=True))
        await until(lambda: len(a.bus.dropped) == 2, "a drops the forged goodbye")
        first = beat(x)
        await genuine.publish(subject, first)
        await genuine.publish(subject, first)  # replayed
        await a.beats(3)
        assert a.gone == [] and a.replicas.alive("x")
        # its own beats, echoed back, are not a peer
        assert "a" not in {p.replica_id for p in a.replicas.peers()}
