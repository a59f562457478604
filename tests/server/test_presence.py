"""Node presence kept in memory and written in batches (``server.presence``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from hatchway.errors import StoreError
from hatchway.server.presence import CHANGE_DELAY, Presence, online_window
from hatchway.store.records import Heartbeat


def beat(node: str, at: float, host: str = "web") -> Heartbeat:
    return Heartbeat(node, at, host, "Linux", "Debian", "12", "10.0.0.1", "1.0")


@dataclass
class Recorder:
    """A ``PresenceStore`` that keeps each batch (or fails the next ``fail`` ones)."""

    batches: list[tuple[list[Heartbeat], list[tuple[str, float]]]] = field(default_factory=list)
    fail: int = 0

    async def record_presence(
        self,
        changed: Sequence[Heartbeat],
        pings: Sequence[tuple[str, float]],
        *,
        replica: str = "",
    ) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreError("database write failed: OperationalError")
        self.batches.append((list(changed), list(pings)))


def test_the_newest_beat_of_each_node_is_taken_once() -> None:
    p = Presence(Recorder())
    p.beat(beat("mi-1", 1.0))
    p.beat(beat("mi-1", 3.0))
    p.beat(beat("mi-1", 2.0))  # late, older: superseded
    p.beat(beat("mi-2", 1.0))
    batch = p.take()
    assert [b.at for b in batch.changed] == [3.0, 1.0] and batch.pings == ()
    assert len(p.take()) == 0


def test_facts_are_written_only_when_they_change() -> None:
    p = Presence(Recorder())
    p.beat(beat("mi-1", 1.0))
    assert len(p.take().changed) == 1
    p.beat(beat("mi-1", 11.0))
    assert p.take().pings == (("mi-1", 11.0),)
    p.beat(beat("mi-1", 21.0, host="renamed"))
    assert [b.computer_name for b in p.take().changed] == ["renamed"]


def test_a_failed_batch_is_kept_and_newer_beats_win() -> None:
    p = Presence(Recorder())
    p.beat(beat("mi-1", 1.0))
    p.take()
    p.beat(beat("mi-1", 11.0))
    p.beat(beat("mi-2", 11.0))
    failed = p.take()
    p.beat(beat("mi-2", 12.0))
    p.restore(failed)
    again = p.take()
    # mi-1's ping comes back; mi-2's facts are written again, with its newer beat.
    assert again.pings == (("mi-1", 11.0),)
    assert [(b.instance_id, b.at) for b in again.changed] == [("mi-2", 12.0)]


def test_a_forgotten_node_hands_back_its_beat_and_its_facts_are_written_next_time() -> None:
    p = Presence(Recorder())
    p.beat(beat("mi-1", 1.0))
    p.take()
    p.beat(beat("mi-1", 2.0))
    last = p.forget("mi-1")
    assert last is not None and last.at == 2.0 and len(p) == 0
    p.beat(beat("mi-1", 3.0))  # it reconnected
    assert len(p.take().changed) == 1


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_run_writes_a_batch_each_interval_and_close_writes_the_rest() -> None:
    store = Recorder(fail=1)
    p = Presence(store, write_interval=5.0)
    p.start()
    for i in range(100):
        p.beat(beat(f"mi-{i}", 0.0))
    await asyncio.sleep(0.5)  # new facts are written at once: that write failed, kept
    assert store.batches == [] and len(p) == 100
    await asyncio.sleep(5.0)  # the next write, an interval later
    assert len(store.batches) == 1 and len(store.batches[0][0]) == 100
    p.beat(beat("mi-0", 10.6))
    await asyncio.sleep(1.0)  # a ping with the same facts waits for the interval
    assert len(store.batches) == 1
    await p.close()
    assert store.batches[-1] == ([], [("mi-0", 10.6)])


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_new_node_is_written_at_once_pings_wait() -> None:
    store = Recorder()
    p = Presence(store, write_interval=5.0)
    p.start()
    await asyncio.sleep(0)
    p.beat(beat("mi-1", 1.0))
    await asyncio.sleep(CHANGE_DELAY + 0.05)
    assert [b.instance_id for b in store.batches[0][0]] == ["mi-1"]
    p.beat(beat("mi-1", 2.0))
    await asyncio.sleep(1.0)
    assert len(store.batches) == 1
    p.beat(beat("mi-1", 3.0, host="renamed"))
    await asyncio.sleep(CHANGE_DELAY + 0.05)
    assert [b.computer_name for b in store.batches[1][0]] == ["renamed"]
    await p.close()


def test_the_online_window_allows_for_the_write_interval() -> None:
    assert online_window(10.0, 5.0) == online_window(10.0, 0.0) + 5.0
