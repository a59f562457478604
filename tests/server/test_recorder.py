"""The gateway's recorder of one session: sequencing, events, the spool file, resuming."""

from __future__ import annotations

import asyncio
import json
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.protocol.asciicast import parse_event, parse_header
from hatchway.protocol.frames import MessageType, PayloadType, encode_frame, make_frame, peek_header
from hatchway.protocol.payloads import SizePayload
from hatchway.server.recorder import SessionRecorder, StreamSequencer

SID = "alice-0123456789abcdef0"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def frame(to_agent: bool, seq: int, payload: bytes, ptype: int = PayloadType.OUTPUT) -> bytes:
    kind = MessageType.INPUT_STREAM_DATA if to_agent else MessageType.OUTPUT_STREAM_DATA
    return encode_frame(make_frame(kind, payload, now=T0, sequence_number=seq, payload_type=ptype))


def feed(rec: SessionRecorder, to_agent: bool, seq: int, payload: bytes, ptype: int = 1) -> None:
    data = frame(to_agent, seq, payload, ptype)
    rec.feed(to_agent, peek_header(data), data)


def size(cols: int, rows: int) -> bytes:
    return SizePayload(cols, rows).to_json()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def output_text(path: Path) -> str:
    return "".join(e.data for e in map(parse_event, lines(path)[1:]) if e.code == "o")


# ---- the sequencer ------------------------------------------------------------------------


def test_sequencer_passes_each_number_once_in_order() -> None:
    s: StreamSequencer[int] = StreamSequencer()
    assert s.push(0, 0, 0) == [0]
    assert s.push(2, 2, 0) == []  # waits for 1
    assert s.push(0, 0, 0) == []  # a re-send
    assert s.push(2, 2, 0) == []
    assert s.push(1, 1, 0) == [1, 2]
    assert s.expected == 3 and s.duplicates == 2


def test_sequencer_skips_a_gap_after_the_timeout_or_when_too_much_waits() -> None:
    s: StreamSequencer[int] = StreamSequencer(max_pending=3, gap_timeout=10)
    assert s.push(5, 5, 0) == []
    assert s.expire(9.9) == []
    assert s.expire(10) == [5]
    assert s.skipped == 5
    for n in (7, 8, 9):
        assert s.push(n, n, 11) == []
    assert s.push(10, 10, 11) == [7, 8, 9, 10]  # over max_pending: 6 is given up
    assert s.skip_all() == []


def test_a_sequencer_without_state_starts_at_the_first_frame_it_sees() -> None:
    s: StreamSequencer[int] = StreamSequencer(None)
    assert s.push(41, 41, 0) == [41]
    assert s.push(40, 40, 0) == []


@given(st.integers(1, 60), st.randoms(use_true_random=False))
def test_sequencer_under_duplication_and_reordering(n: int, rng: random.Random) -> None:
    arrivals = list(range(n)) + [rng.randrange(n) for _ in range(n)]  # each at least once
    rng.shuffle(arrivals)  # in any order, re-sends among them
    s: StreamSequencer[int] = StreamSequencer()
    out: list[int] = []
    for seq in arrivals:
        out += s.push(seq, seq, 0)
    assert out == list(range(n))


# ---- the recorder -------------------------------------------------------------------------


def recorder(tmp_path: Path, clock: Clock, **kw: bool) -> SessionRecorder:
    return SessionRecorder.create(SID, tmp_path / "rec" / f"{SID}.cast", clock=clock, **kw)


@pytest.mark.asyncio
async def test_output_is_recorded_once_per_sequence_number(tmp_path: Path) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, True, 0, b"{}", PayloadType.HANDSHAKE_RESPONSE)
    feed(rec, True, 1, size(132, 43), PayloadType.SIZE)
    feed(rec, False, 0, b"{}", PayloadType.HANDSHAKE_REQUEST)
    clock.now += 0.25
    feed(rec, False, 1, b"$ ")
    feed(rec, False, 1, b"$ ")  # re-sent after a reconnect
    feed(rec, False, 3, b"!")  # ahead of 2
    feed(rec, False, 2, b"ls")
    await rec.flush()
    clock.now += 1
    feed(rec, False, 2, b"ls")
    feed(rec, True, 2, size(80, 25), PayloadType.SIZE)
    assert await rec.close() == rec.path.stat().st_size
    header, *events = lines(rec.path)
    h = parse_header(header)
    assert (h.width, h.height, h.timestamp, h.title) == (132, 43, int(T0), SID)
    parsed = [parse_event(e) for e in events]
    assert [(e.code, e.data) for e in parsed] == [("o", "$ "), ("o", "ls"), ("o", "!"),
                                                    ("r", "80x25")]  # fmt: skip
    assert parsed[0].time == pytest.approx(0.25)
    assert parsed[3].time == pytest.approx(1.25)
    assert not rec.path.with_name(rec.path.name + ".state").exists()


@pytest.mark.asyncio
async def test_files_are_private(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"x")
    await rec.close()
    assert stat.S_IMODE(rec.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(rec.path.parent.stat().st_mode) == 0o700


@pytest.mark.asyncio
async def test_input_is_recorded_only_when_asked(tmp_path: Path) -> None:
    for record_input, expected in ((False, ["o"]), (True, ["i", "o"])):
        rec = SessionRecorder.create(
            SID, tmp_path / f"{record_input}.cast", clock=Clock(), record_input=record_input
        )
        feed(rec, True, 0, b"ls\r")
        feed(rec, False, 0, b"ls\r\n")
        await rec.close()
        assert [parse_event(e).code for e in lines(rec.path)[1:]] == expected


@pytest.mark.asyncio
async def test_split_utf8_across_frames(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    data = "héllo wörld €".encode()
    for i, b in enumerate(data):
        feed(rec, False, i, bytes([b]))
    await rec.close()
    assert output_text(rec.path) == "héllo wörld €"


@pytest.mark.asyncio
async def test_without_a_size_the_header_says_80x24(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"x")
    await rec.close()
    h = parse_header(lines(rec.path)[0])
    assert (h.width, h.height) == (80, 24)


@pytest.mark.asyncio
async def test_a_bad_size_payload_is_ignored(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, True, 0, b"not json", PayloadType.SIZE)
    feed(rec, False, 0, b"x")
    await rec.close()
    assert [parse_event(e).data for e in lines(rec.path)[1:]] == ["x"]


@pytest.mark.asyncio
async def test_flush_writes_incrementally(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"first")
    await rec.flush()
    assert output_text(rec.path) == "first"
    feed(rec, False, 1, b" second")
    await rec.flush()
    assert output_text(rec.path) == "first second"
    assert rec.length == rec.path.stat().st_size


@pytest.mark.asyncio
async def test_resume_after_a_crash_cuts_to_the_state_and_skips_what_was_written(
    tmp_path: Path,
) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, False, 0, b"one ")
    feed(rec, False, 1, b"two ")
    await rec.flush()
    # Killed after writing lines the state file does not vouch for, mid-line at that.
    with rec.path.open("ab") as f:
        f.write(b'[9.0, "o", "three "]\n[9.1, "o", "fo')
    clock.now += 5
    again = SessionRecorder.resume(SID, rec.path, clock=clock)
    feed(again, False, 1, b"two ")  # re-sent after the restart: already there
    feed(again, False, 2, b"three ")
    await again.close()
    assert output_text(rec.path) == "one two three "
    assert parse_event(lines(rec.path)[-1]).time == pytest.approx(5.0)


@pytest.mark.asyncio
async def test_resume_without_state_keeps_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / f"{SID}.cast"
    path.write_bytes(
        b'{"version": 2, "width": 90, "height": 30, "timestamp": 1700000000}\n'
        b'[1.5, "o", "kept"]\n[1.6, "o", "cut'
    )
    clock = Clock()
    rec = SessionRecorder.resume(SID, path, clock=clock)
    feed(rec, False, 17, b" more")  # whatever number the stream is at
    await rec.close()
    assert output_text(path) == "kept more"
    assert parse_header(lines(path)[0]).width == 90
    assert all(json.loads(line) for line in lines(path))


@pytest.mark.asyncio
async def test_resume_of_a_missing_file_starts_a_new_recording(tmp_path: Path) -> None:
    rec = SessionRecorder.resume(SID, tmp_path / "gone.cast", clock=Clock())
    feed(rec, False, 0, b"x")
    await rec.close()
    assert output_text(rec.path) == "x"


@pytest.mark.asyncio
async def test_close_is_idempotent_and_later_frames_are_ignored(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    feed(rec, False, 0, b"x")
    size1 = await rec.close()
    feed(rec, False, 1, b"y")
    assert await rec.close() == size1
    assert output_text(rec.path) == "x"


@pytest.mark.asyncio
async def test_flushes_run_one_at_a_time(tmp_path: Path) -> None:
    rec = recorder(tmp_path, Clock())
    for i in range(200):
        feed(rec, False, i, f"{i},".encode())
        if i % 20 == 0:
            asyncio.get_running_loop().create_task(rec.flush())
    await asyncio.sleep(0)
    await rec.close()
    assert output_text(rec.path) == "".join(f"{i}," for i in range(200))
