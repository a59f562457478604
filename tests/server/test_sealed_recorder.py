"""The recorder writing an encrypted recording: sealed flush by flush, resumable after a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hatchway.auth.sealedrecording import ChunkOpener, RecordingHeader, parse_header
from hatchway.protocol.asciicast import parse_event
from hatchway.protocol.asciicast import parse_header as parse_cast_header
from hatchway.protocol.frames import PayloadType
from hatchway.server.recorder import Sealing, SessionRecorder
from tests.server.test_recorder import SID, Clock, feed, size

KEY = bytes(range(32))
SEALING = Sealing(
    RecordingHeader(SID, "arn:aws:kms:local:1:key/k", b"wrapped", {"aws:ssm:SessionId": SID}),
    KEY,
)


def decrypted(path: Path) -> tuple[bytes, bool]:
    data = path.read_bytes()
    _, line = parse_header(data)
    opened = ChunkOpener(KEY, line).open(data[len(line) :])
    assert opened.consumed == len(data) - len(line), "a partial chunk at the end"
    return opened.plaintext, opened.final


def output_text(plain: bytes) -> str:
    events = map(parse_event, plain.splitlines()[1:])
    return "".join(e.data for e in events if e.code == "o")


def recorder(tmp_path: Path, clock: Clock) -> SessionRecorder:
    return SessionRecorder.create(SID, tmp_path / f"{SID}.cast", clock=clock, sealing=SEALING)


@pytest.mark.asyncio
async def test_an_encrypted_recording_holds_no_plaintext_and_decrypts_to_asciicast(
    tmp_path: Path,
) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, True, 0, size(100, 40), PayloadType.SIZE)
    feed(rec, False, 0, b"top secret output ")
    await rec.flush()
    plain, final = decrypted(rec.path)
    assert output_text(plain) == "top secret output " and not final
    clock.now += 1
    feed(rec, False, 1, b"more")
    length = await rec.close()
    assert length == rec.path.stat().st_size
    data = rec.path.read_bytes()
    assert b"secret" not in data and b"version" not in data
    plain, final = decrypted(rec.path)
    assert final and output_text(plain) == "top secret output more"
    assert parse_cast_header(plain.splitlines()[0]).width == 100
    assert not rec.path.with_name(rec.path.name + ".state").exists()


@pytest.mark.asyncio
async def test_resume_after_a_crash_cuts_to_the_state(tmp_path: Path) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, False, 0, b"one ")
    feed(rec, False, 1, b"two ")
    await rec.flush()
    with rec.path.open("ab") as f:  # killed in the middle of the next chunk
        f.write(b"\x00\x00\x00\x40\x02garbage")
    clock.now += 5
    again = SessionRecorder.resume(SID, rec.path, clock=clock, sealing=SEALING)
    feed(again, False, 1, b"two ")  # re-sent: already there
    feed(again, False, 2, b"three")
    await again.close()
    plain, final = decrypted(rec.path)
    assert final and output_text(plain) == "one two three"
    assert parse_event(plain.splitlines()[-1]).time == pytest.approx(5.0)


@pytest.mark.asyncio
async def test_resume_without_state_keeps_whole_flushes(tmp_path: Path) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, False, 0, b"kept")
    await rec.flush()
    good = rec.path.stat().st_size
    feed(rec, False, 1, b" lost" * 30000)  # one flush of several chunks
    await rec.flush()
    state = rec.path.with_name(rec.path.name + ".state")
    state.unlink()
    os.truncate(rec.path, rec.path.stat().st_size - 10)  # the flush's last chunk is cut
    again = SessionRecorder.resume(SID, rec.path, clock=clock, sealing=SEALING)
    assert again.length == good
    feed(again, False, 40, b" more")
    await again.close()
    plain, final = decrypted(rec.path)
    assert final and output_text(plain) == "kept more"


@pytest.mark.asyncio
async def test_a_damaged_file_is_kept_aside_and_the_recording_starts_again(
    tmp_path: Path,
) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"before")
    await rec.flush()
    data = bytearray(rec.path.read_bytes())
    data[-3] ^= 0xFF
    rec.path.write_bytes(bytes(data))
    again = SessionRecorder.resume(SID, rec.path, clock=Clock(), sealing=SEALING)
    feed(again, False, 1, b"after")
    await again.close()
    assert rec.path.with_name(rec.path.name + ".damaged").read_bytes() == bytes(data)
    plain, final = decrypted(rec.path)
    assert final and output_text(plain) == "after"


@pytest.mark.asyncio
async def test_a_recording_finished_before_the_crash_takes_no_more_chunks(
    tmp_path: Path,
) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"all")
    size_closed = await rec.close()
    again = SessionRecorder.resume(SID, rec.path, clock=Clock(), sealing=SEALING)
    assert again.closed
    assert await again.close() == size_closed == rec.path.stat().st_size
    plain, final = decrypted(rec.path)
    assert final and output_text(plain) == "all"
