"""Recording in the gateway, in process: what the relay hands the recorder, and the
recordings service over a real SQLite store (begin, flush, finish, read in pages, restore)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import pytest_asyncio

from hatchway.auth.tokens import hash_token, new_token
from hatchway.errors import InvalidNextToken, NotFound
from hatchway.protocol.asciicast import parse_event, parse_header
from hatchway.protocol.frames import (
    MessageType,
    PayloadType,
    encode_frame,
    make_frame,
    peek_header,
)
from hatchway.protocol.payloads import SizePayload
from hatchway.server.recorder import SessionRecorder
from hatchway.server.recordings import RecordingService
from hatchway.server.recordingstorage import Destination, RecordingStorages, S3Location
from hatchway.server.settings import ServerSettings
from hatchway.store.database import sqlite_url
from hatchway.store.recordings import RecordingState, Storage
from hatchway.store.store import Store
from tests.fakes import session_record
from tests.server.test_gateway import Harness, input_frame, output_frame

pytestmark = pytest.mark.asyncio

SID = "alice-0123456789abcdef0"


def size_frame(seq: int, cols: int, rows: int) -> bytes:
    return encode_frame(
        make_frame(
            MessageType.INPUT_STREAM_DATA,
            SizePayload(cols, rows).to_json(),
            now=1_700_000_000,
            sequence_number=seq,
            payload_type=PayloadType.SIZE,
        )
    )


def ack_frame() -> bytes:
    return encode_frame(
        make_frame(MessageType.ACKNOWLEDGE, b"{}", now=1_700_000_000, sequence_number=0)
    )


def outputs(path: Path) -> list[tuple[str, str]]:
    return [(e.code, e.data) for e in map(parse_event, path.read_bytes().splitlines()[1:])]


async def test_the_relay_feeds_stream_frames_and_relays_while_recording(tmp_path: Path) -> None:
    async with Harness() as h:
        client, agent = await h.joined(SID)
        rec = SessionRecorder.create(SID, tmp_path / "r.cast", clock=lambda: 1_700_000_001.0)
        assert h.gateway.attach_recorder(SID, rec)
        assert await client.peer.send(size_frame(0, 120, 40))
        assert await client.peer.send(input_frame(1, b"ls\r"))
        assert await client.peer.send(ack_frame())  # not a stream frame: not recorded
        for frame in (
            output_frame(0, b"ls\r\n"),
            output_frame(0, b"ls\r\n"),
            output_frame(1, b"a"),
        ):
            assert await agent.peer.send(frame)
        for _ in range(3):
            await client.frame_of(MessageType.OUTPUT_STREAM_DATA)  # relayed, duplicates too
        await agent.frame_of(MessageType.INPUT_STREAM_DATA)
        await rec.close()
    header = parse_header(rec.path.read_bytes().splitlines()[0])
    assert (header.width, header.height) == (120, 40)
    assert outputs(rec.path) == [("o", "ls\r\n"), ("o", "a")]  # input not recorded by default


async def test_a_failing_recording_never_stops_the_relay(tmp_path: Path) -> None:
    async with Harness() as h:
        client, agent = await h.joined(SID)
        rec = SessionRecorder.create(SID, tmp_path / "r.cast", clock=lambda: 0.0)
        h.gateway.attach_recorder(SID, rec)
        rec.path.unlink()
        rec.path.mkdir()  # the spool file cannot be opened for writing any more (even by root)
        for round_ in range(3):
            for seq in range(20):
                assert await agent.peer.send(output_frame(round_ * 20 + seq, b"x" * 100))
            for _ in range(20):
                await client.frame_of(MessageType.OUTPUT_STREAM_DATA)
            with pytest.raises(OSError):
                await rec.flush()


# ---- the service over a real store ----------------------------------------------------------


@pytest_asyncio.fixture
async def service(tmp_path: Path):
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    settings = ServerSettings(data_dir=tmp_path)
    storages = RecordingStorages(settings.recordings_dir, Destination(Storage.LOCAL))
    svc = RecordingService(store, settings, lambda: 1_700_000_000.0, storages, flush_interval=0.05)
    await store.sessions.create(
        session_record(SID, "mi-0123456789abcdef0"), hash_token(new_token()), 0
    )
    svc.start()
    try:
        yield svc, store
    finally:
        await svc.stop()
        await store.close()


async def test_begin_records_only_terminal_sessions(service) -> None:
    svc, store = service
    assert await svc.begin(SID, "Port") is None
    assert await svc.begin(SID, "NonInteractiveCommands") is None
    assert await store.recordings.get(SID) is None
    rec = await svc.begin(SID, "Standard_Stream")
    assert rec is not None
    row = await store.recordings.get(SID)
    assert row is not None and row.state is RecordingState.RECORDING


async def test_the_preferences_bucket_and_prefix_choose_the_destination(service) -> None:
    svc, store = service  # the server's default is local storage
    rec = await svc.begin(SID, "Standard_Stream", s3_bucket="prefs-bucket", s3_prefix="team/b")
    assert rec is not None
    row = await store.recordings.get(SID)
    assert row is not None and row.location == f"s3://prefs-bucket/team/b/{SID}.cast"


async def test_a_session_that_moves_before_any_output_is_recorded_where_it_went(
    service, tmp_path: Path
) -> None:
    """Scale-out: the session moved to another replica before either end came; the first
    replica's empty spool goes, the other records the whole session in its own spool, same
    row (its location follows the spool for local storage)."""
    svc, store = service
    first = await svc.begin(SID, "Standard_Stream")
    assert first is not None and first.path.exists()
    await svc.let_go(SID)
    assert not first.path.exists() and svc.recorder(SID) is None
    settings = ServerSettings(data_dir=tmp_path / "other")
    storages = RecordingStorages(settings.recordings_dir, Destination(Storage.LOCAL))
    other = RecordingService(store, settings, lambda: 1_700_000_000.0, storages)
    attached: list[SessionRecorder] = []
    assert await other.take(SID, lambda _sid, rec: attached.append(rec) is None)
    [rec] = attached
    assert rec.path.is_relative_to(settings.recordings_dir)
    await _fill(rec, 2)
    await other.finish(SID)
    row = await store.recordings.get(SID)
    assert row is not None and row.state is RecordingState.COMPLETE
    assert row.spool_path == row.location == str(rec.path)
    assert [text for _, text in outputs(rec.path)] == ["line 00000\r\n", "line 00001\r\n"]
    assert not await other.take(SID, lambda _sid, _rec: True)  # finished: nothing to take


async def _fill(rec: SessionRecorder, n: int) -> None:
    for seq in range(n):
        data = output_frame(seq, f"line {seq:05d}\r\n".encode())
        rec.feed(False, peek_header(data), data)


async def test_the_flusher_writes_without_being_asked(service) -> None:
    svc, _ = service
    rec = await svc.begin(SID, "Standard_Stream")
    await _fill(rec, 3)
    async with asyncio.timeout(10):
        while rec.length == 0:
            await asyncio.sleep(0.02)
    assert outputs(rec.path)[-1] == ("o", "line 00002\r\n")


async def test_get_recording_pages_through_the_exact_bytes(service) -> None:
    svc, store = service
    rec = await svc.begin(SID, "InteractiveCommands")
    await _fill(rec, 500)
    live = await svc.get_recording({"SessionId": SID, "MaxBytes": 1 << 20})
    assert b"line 00499" in base64.b64decode(live["Data"])  # read while live: flushed first
    await svc.finish(SID)
    row = await store.recordings.get(SID)
    assert row.state is RecordingState.COMPLETE and row.size == rec.path.stat().st_size
    got, token, pages = b"", None, 0
    while True:
        body = {"SessionId": SID, "MaxBytes": 1000}
        if token:
            body["NextToken"] = token
        page = await svc.get_recording(body)
        got += base64.b64decode(page["Data"])
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert got == rec.path.read_bytes() and pages == -(-len(got) // 1000)
    assert (await svc.summary(SID)) == {"State": "Complete", "Storage": "local", "Size": len(got)}


async def test_get_recording_errors(service) -> None:
    svc, _ = service
    with pytest.raises(NotFound, match="has no recording"):
        await svc.get_recording({"SessionId": SID})
    with pytest.raises(NotFound, match="does not exist"):
        await svc.get_recording({"SessionId": "bob-0123456789abcdef0"})
    await svc.begin(SID, "Standard_Stream")
    for bad in ("x", "-1", "9" * 40):
        with pytest.raises(InvalidNextToken):
            await svc.get_recording({"SessionId": SID, "NextToken": bad})
    past = await svc.get_recording({"SessionId": SID, "NextToken": "999999"})
    assert past["Data"] == "" and "NextToken" not in past


async def test_restore_goes_on_with_live_sessions_and_finishes_the_rest(service) -> None:
    svc, store = service
    rec = await svc.begin(SID, "Standard_Stream")
    await _fill(rec, 5)
    await svc.stop()  # a server shutdown: the recording stays Recording
    assert (await store.recordings.get(SID)).state is RecordingState.RECORDING
    attached: list[str] = []
    await svc.restore({SID}, lambda sid, r: attached.append(sid) or True)
    assert attached == [SID] and svc.recorder(SID) is not None
    await svc.stop()
    await svc.restore(set(), lambda sid, r: True)  # the session ended while we were away
    assert (await store.recordings.get(SID)).state is RecordingState.COMPLETE
    assert [d for _, d in outputs(rec.path)] == [f"line {i:05d}\r\n" for i in range(5)]
    svc.start()  # the fixture stops it again


async def test_an_upload_without_its_spool_file_is_kept_pending_with_the_reason(
    tmp_path: Path,
) -> None:
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    settings = ServerSettings(data_dir=tmp_path)
    s3 = Destination(Storage.S3, S3Location("bucket", "prefix"))
    storages = RecordingStorages(settings.recordings_dir, s3, endpoint_url="http://127.0.0.1:9")
    svc = RecordingService(store, settings, lambda: 0.0, storages, retry_initial=0.01)
    await store.sessions.create(
        session_record(SID, "mi-0123456789abcdef0"), hash_token(new_token()), 0
    )
    svc.start()
    try:
        rec = await svc.begin(SID, "Standard_Stream")
        assert rec is not None
        row = await store.recordings.get(SID)
        assert row is not None and row.location == f"s3://bucket/prefix/{SID}.cast"
        rec.path.unlink()
        await svc.finish(SID)
        async with asyncio.timeout(10):
            while not (row := await store.recordings.get(SID)) or not row.last_error:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # no further attempts: retrying cannot help
        row = await store.recordings.get(SID)
        assert row is not None and row.state is RecordingState.PENDING_UPLOAD
        assert row.upload_attempts == 1 and "missing" in row.last_error
    finally:
        await svc.stop()
        await store.close()


async def test_the_record_input_setting_reaches_the_recorder(tmp_path: Path) -> None:
    store = Store.open(sqlite_url(tmp_path / "db.sqlite"))
    settings = ServerSettings(data_dir=tmp_path, record_input=True)
    storages = RecordingStorages(settings.recordings_dir, Destination(Storage.LOCAL))
    svc = RecordingService(store, settings, lambda: 0.0, storages)
    await store.sessions.create(
        session_record(SID, "mi-0123456789abcdef0"), hash_token(new_token()), 0
    )
    try:
        rec = await svc.begin(SID, "Standard_Stream")
        assert rec is not None and rec.record_input
        data = input_frame(0, b"secret\r")
        rec.feed(True, peek_header(data), data)
        await svc.finish(SID)
        assert outputs(rec.path) == [("i", "secret\r")]
    finally:
        await svc.stop()
        await store.close()
