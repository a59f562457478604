"""The log repository's contract (groups, streams, events, retention), on SQLite and PostgreSQL
(the ``url`` fixture); and the recordings repository's retention queries."""

from __future__ import annotations

import pytest

from hatchway.errors import Conflict
from hatchway.store.logs import StreamBatch, StreamOrder
from hatchway.store.recordings import Recording, RecordingState, Storage
from hatchway.store.records import SessionStatus
from hatchway.store.store import Store
from tests.fakes import session_record
from tests.store.conftest import with_store

DAY = 86_400


def test_groups_are_created_once_listed_by_name_and_deleted_with_everything(url: str) -> None:
    async def body(store: Store) -> None:
        logs = store.logs
        a = await logs.create_group("team/a", 10.0)
        with pytest.raises(Conflict):
            await logs.create_group("team/a", 11.0)
        assert await logs.ensure_group("team/a", 12.0) == a
        b = await logs.ensure_group("team/b", 13.0)
        await logs.ensure_group("other", 14.0)
        assert [g.name for g in await logs.list_groups(limit=10)] == ["other", "team/a", "team/b"]
        assert [g.name for g in await logs.list_groups(prefix="team/", limit=1)] == ["team/a"]
        assert [g.name for g in await logs.list_groups(after="team/a", limit=5)] == ["team/b"]
        assert [g.name for g in await logs.list_groups(prefix="tea%", limit=5)] == []  # literal
        stream = await logs.open_stream(b.group_id, "s-1", 20.0)
        await logs.append([StreamBatch(stream.stream_id, [(1000, "héllo\n")])], 2000)
        (listed,) = await logs.list_groups(prefix="team/b", limit=5)
        assert listed.stored_bytes == len("héllo\n".encode())
        assert await logs.set_retention("team/b", 7)
        assert (await logs.get_group("team/b")).retention_days == 7  # type: ignore[union-attr]
        assert not await logs.set_retention("nope", 7)
        assert await logs.delete_group("team/b")
        assert not await logs.delete_group("team/b")
        assert await logs.get_group("team/b") is None
        # Its stream and events went with it; a late batch for the stream is skipped.
        assert await logs.append([StreamBatch(stream.stream_id, [(1, "late\n")])], 3000) == 0

    with_store(url, body)


def test_events_append_in_batches_and_page_both_ways(url: str) -> None:
    async def body(store: Store) -> None:
        logs = store.logs
        group = await logs.create_group("g", 1.0)
        s1 = await logs.open_stream(group.group_id, "alice-1", 1.0)
        s2 = await logs.open_stream(group.group_id, "bob-2", 2.0)
        stored = await logs.append(
            [
                StreamBatch(s1.stream_id, [(1000 + i, f"line {i}\n") for i in range(5)], 7),
                StreamBatch(s2.stream_id, [(1500, "bob's ERROR\n")], 3, dropped_bytes=42),
            ],
            now_ms=5000,
        )
        assert stored == 6
        stream = await logs.get_stream(group.group_id, "alice-1")
        assert stream is not None
        assert (stream.first_event_ms, stream.last_event_ms, stream.last_ingestion_ms) == (
            1000,
            1004,
            5000,
        )
        assert stream.next_sequence == 7 and stream.stored_bytes == 5 * len("line 0\n")
        bob = await logs.get_stream(group.group_id, "bob-2")
        assert bob is not None and bob.dropped_bytes == 42
        head = await logs.events(stream_id=s1.stream_id, limit=2, max_bytes=10_000)
        assert [e.message for e in head.events] == ["line 0\n", "line 1\n"] and head.more
        rest = await logs.events(
            stream_id=s1.stream_id, after=head.events[-1].event_id, limit=10, max_bytes=10_000
        )
        assert [e.message for e in rest.events] == ["line 2\n", "line 3\n", "line 4\n"]
        tail = await logs.events(stream_id=s1.stream_id, from_head=False, limit=2, max_bytes=99)
        assert [e.message for e in tail.events] == ["line 3\n", "line 4\n"]
        before = await logs.events(
            stream_id=s1.stream_id,
            before=tail.events[0].event_id,
            from_head=False,
            limit=10,
            max_bytes=99,
        )
        assert [e.message for e in before.events] == ["line 0\n", "line 1\n", "line 2\n"]
        timed = await logs.events(
            stream_id=s1.stream_id, start_ms=1001, end_ms=1002, limit=10, max_bytes=99
        )
        assert [e.timestamp_ms for e in timed.events] == [1001, 1002]
        small = await logs.events(stream_id=s1.stream_id, limit=10, max_bytes=10)
        assert len(small.events) == 1 and small.more  # at least one event, then the byte cap
        # Filtering: group-wide in storage order, by stream, by case-sensitive substring.
        everything = await logs.filter(group_id=group.group_id, limit=100, max_bytes=10_000)
        assert [e.stream_name for e in everything.events] == ["alice-1"] * 5 + ["bob-2"]
        found = await logs.filter(
            group_id=group.group_id, pattern="ERROR", limit=100, max_bytes=10_000
        )
        assert [e.message for e in found.events] == ["bob's ERROR\n"]
        assert not (
            await logs.filter(group_id=group.group_id, pattern="error", limit=9, max_bytes=99)
        ).events
        assert not (
            await logs.filter(group_id=group.group_id, pattern="%", limit=9, max_bytes=99)
        ).events
        only = await logs.filter(
            group_id=group.group_id,
            stream_ids=[s2.stream_id],
            after=0,
            limit=100,
            max_bytes=10_000,
        )
        assert [e.stream_name for e in only.events] == ["bob-2"]
        ids = await logs.stream_ids(group.group_id, ["bob-2", "nobody"])
        assert ids == {"bob-2": s2.stream_id}
        by_last = await logs.list_streams(
            group.group_id, order=StreamOrder.LAST_EVENT, descending=True, limit=10
        )
        assert [s.name for s in by_last] == ["bob-2", "alice-1"]
        page = await logs.list_streams(group.group_id, offset=1, limit=10)
        assert [s.name for s in page] == ["bob-2"]

    with_store(url, body)


def test_open_streams_are_found_at_a_restart_and_ended(url: str) -> None:
    async def body(store: Store) -> None:
        logs = store.logs
        group = await logs.create_group("g", 1.0)
        s1 = await logs.open_stream(group.group_id, "a-1", 1.0)
        s2 = await logs.open_stream(group.group_id, "b-2", 1.0)
        await logs.end_stream(s2.stream_id, 5.0)
        assert [(s.name, s.group_name) for s in await logs.open_streams()] == [("a-1", "g")]
        again = await logs.open_stream(group.group_id, "b-2", 6.0)  # same stream, open again
        assert again.stream_id == s2.stream_id and again.ended_at is None
        assert {s.stream_id for s in await logs.open_streams()} == {s1.stream_id, s2.stream_id}

    with_store(url, body)


def test_expire_deletes_by_each_groups_retention_or_the_default(url: str) -> None:
    async def body(store: Store) -> None:
        logs = store.logs
        now = 100 * DAY
        own = await logs.create_group("own", 0.0)
        default = await logs.create_group("default", 0.0)
        await logs.set_retention("own", 1)
        old_ms, new_ms = (now - 3 * DAY) * 1000, (now - 0.5 * DAY) * 1000
        streams = {}
        for group in (own, default):
            ended = await logs.open_stream(group.group_id, "ended", 0.0)
            await logs.end_stream(ended.stream_id, now - 3 * DAY)
            live = await logs.open_stream(group.group_id, "live", 0.0)
            streams[group.name] = (ended, live)
            await logs.append(
                [
                    StreamBatch(ended.stream_id, [(int(old_ms), "old\n")]),
                    StreamBatch(live.stream_id, [(int(old_ms), "old\n"), (int(new_ms), "new\n")]),
                ],
                int(now * 1000),
            )
        # No default: only "own" (1 day) expires.
        assert await logs.expire(default_days=None, now=now, chunk=1) == {"own": 2}
        assert await logs.get_stream(own.group_id, "ended") is None  # ended, nothing left
        live = await logs.get_stream(own.group_id, "live")
        assert live is not None  # still open: kept, with its new event
        page = await logs.events(stream_id=live.stream_id, limit=9, max_bytes=99)
        assert [e.message for e in page.events] == ["new\n"]
        # A default of 2 days reaches "default"; nothing more to do for "own".
        assert await logs.expire(default_days=2, now=now) == {"default": 2}
        assert await logs.expire(default_days=2, now=now) == {}

    with_store(url, body)


def _recording(sid: str, state: RecordingState, ended: float | None) -> Recording:
    return Recording(
        session_id=sid,
        storage=Storage.LOCAL,
        location=f"/data/recordings/{sid}.cast",
        spool_path=f"/data/recordings/{sid}.cast",
        state=state,
        size=10,
        started_at=0.0,
        ended_at=ended,
    )


def test_expired_recordings_are_complete_ones_of_ended_sessions_only(url: str) -> None:
    async def body(store: Store) -> None:
        cases = {
            "a-old": (SessionStatus.TERMINATED, 10.0, RecordingState.COMPLETE, 10.0),
            "b-new": (SessionStatus.TERMINATED, 90.0, RecordingState.COMPLETE, 90.0),
            "c-pending": (SessionStatus.TERMINATED, 10.0, RecordingState.PENDING_UPLOAD, 10.0),
            # The row says complete, the session still runs (a restart in between): kept.
            "d-active": (SessionStatus.CONNECTED, None, RecordingState.COMPLETE, 10.0),
        }
        for sid, (status, end, state, ended) in cases.items():
            record = session_record(sid, "mi-0123456789abcdef0", status=status)
            await store.sessions.create(record, sid, 0.0)
            if end is not None:
                await store.sessions.set_status(sid, status, now=end, only_if=None)
            await store.recordings.create(_recording(sid, state, ended))
        assert [r.session_id for r in await store.recordings.expired(50.0)] == ["a-old"]
        assert await store.recordings.delete("a-old")
        assert not await store.recordings.delete("a-old")
        assert await store.recordings.get("a-old") is None
        assert await store.recordings.expired(50.0) == []

    with_store(url, body)
