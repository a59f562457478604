"""The recordings repository's contract, on SQLite and PostgreSQL (the ``url`` fixture)."""

from __future__ import annotations

import pytest

from hatchway.errors import Conflict
from hatchway.store.recordings import MAX_ERROR, Recording, RecordingState, Storage
from hatchway.store.store import Store
from tests.fakes import session_record
from tests.store.conftest import with_store

SID = "alice-0123456789abcdef0"


def recording(sid: str = SID, storage: Storage = Storage.S3, started: float = 10.0) -> Recording:
    return Recording(
        session_id=sid,
        storage=storage,
        location=f"s3://bucket/prefix/{sid}.cast",
        spool_path=f"/data/recordings/{sid}.cast",
        state=RecordingState.RECORDING,
        size=0,
        started_at=started,
    )


async def _with_sessions(store: Store, *sids: str) -> None:
    for sid in sids:
        await store.sessions.create(session_record(sid, "mi-0123456789abcdef0"), sid, 0.0)


def test_a_recording_goes_from_recording_to_pending_to_complete(url: str) -> None:
    async def body(store: Store) -> None:
        await _with_sessions(store, SID)
        await store.recordings.create(recording())
        assert await store.recordings.get(SID) == recording()
        assert await store.recordings.get("bob-0123456789abcdef0") is None
        await store.recordings.finish(
            SID, state=RecordingState.PENDING_UPLOAD, size=12345, ended_at=20.0
        )
        await store.recordings.upload_failed(SID, "x" * 2000)
        await store.recordings.upload_failed(SID, "the store is away")
        row = await store.recordings.get(SID)
        assert row is not None
        assert (row.state, row.size, row.ended_at) == (RecordingState.PENDING_UPLOAD, 12345, 20.0)
        assert (row.upload_attempts, row.last_error) == (2, "the store is away")
        await store.recordings.uploaded(SID)
        row = await store.recordings.get(SID)
        assert row is not None and row.state is RecordingState.COMPLETE and row.last_error == ""

    with_store(url, body)


def test_long_errors_are_cut(url: str) -> None:
    async def body(store: Store) -> None:
        await _with_sessions(store, SID)
        await store.recordings.create(recording())
        await store.recordings.upload_failed(SID, "é" * 2000)
        row = await store.recordings.get(SID)
        assert row is not None and row.last_error == "é" * MAX_ERROR

    with_store(url, body)


def test_in_state_lists_oldest_first_and_one_row_per_session(url: str) -> None:
    async def body(store: Store) -> None:
        sids = [f"alice-{i:017x}" for i in range(3)]
        await _with_sessions(store, *sids)
        for i, sid in enumerate(sids):
            await store.recordings.create(recording(sid, started=30.0 - i))
        await store.recordings.finish(sids[1], state=RecordingState.COMPLETE, size=1, ended_at=40.0)
        live = await store.recordings.in_state(RecordingState.RECORDING)
        assert [r.session_id for r in live] == [sids[2], sids[0]]
        assert await store.recordings.in_state(RecordingState.PENDING_UPLOAD) == []
        with pytest.raises(Conflict):
            await store.recordings.create(recording(sids[0]))

    with_store(url, body)
