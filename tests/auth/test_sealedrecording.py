"""The encrypted recording format: sealed chunks that cannot be altered, reordered, moved or cut
without the reader noticing (at chunk granularity)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.auth.sealedrecording import (
    BOUNDARY,
    FINAL,
    MAGIC,
    MAX_PLAINTEXT,
    ChunkOpener,
    ChunkSealer,
    RecordingHeader,
    complete_length,
    parse_header,
)
from hatchway.errors import InvalidCiphertext

KEY = bytes(range(32))
HEADER = RecordingHeader(
    "alice-0123456789abcdef0",
    "arn:aws:kms:local:123456789012:key/6f1c2e0a-8a3b-4c1d-9e2f-0123456789ab",
    b"\x01wrapped-data-key",
    {"aws:ssm:SessionId": "alice-0123456789abcdef0"},
)
LINE = HEADER.to_line()


def sealed(*flushes: bytes, final: bool = True) -> bytes:
    sealer = ChunkSealer(KEY, LINE)
    body = b"".join(sealer.seal(f) for f in flushes[:-1])
    return LINE + body + sealer.seal(flushes[-1], final=final)


def chunk_spans(data: bytes, start: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        spans.append((pos, pos + 4 + length))
        pos += 4 + length
    return spans


def test_header_line_round_trips() -> None:
    assert LINE.startswith(MAGIC) and LINE.endswith(b"\n") and LINE.count(b"\n") == 1
    header, line = parse_header(LINE + b"\x00\x00rest")
    assert header == HEADER and line == LINE


@pytest.mark.parametrize("data", [b"", b'{"version": 2}\n', MAGIC + b"{}\n", MAGIC + b"{\n"])
def test_not_a_header(data: bytes) -> None:
    with pytest.raises(InvalidCiphertext):
        parse_header(data)


def test_round_trip_and_no_plaintext_on_disk() -> None:
    data = sealed(b"secret line one\n", b"secret two\n")
    assert b"secret" not in data
    opened = ChunkOpener(KEY, LINE).open(data[len(LINE) :])
    assert opened.plaintext == b"secret line one\nsecret two\n"
    assert opened.final and opened.chunks == 2 and opened.consumed == len(data) - len(LINE)


def test_big_flushes_are_split_and_only_their_last_chunk_is_a_boundary() -> None:
    data = sealed(b"x" * (2 * MAX_PLAINTEXT + 5))
    spans = chunk_spans(data, len(LINE))
    assert len(spans) == 3
    assert [data[a + 4] for a, _ in spans] == [0, 0, BOUNDARY | FINAL]
    assert ChunkOpener(KEY, LINE).open(data[len(LINE) :]).plaintext == b"x" * (
        2 * MAX_PLAINTEXT + 5
    )


def test_reading_stops_at_a_limit_and_goes_on_from_where_it_stopped() -> None:
    data = sealed(b"a\n", b"b\n", b"c\n")
    opener = ChunkOpener(KEY, LINE)
    first = opener.open(data[len(LINE) :], limit=1)
    assert (first.plaintext, first.chunks, first.final) == (b"a\n", 1, False)
    rest = opener.open(data[len(LINE) + first.consumed :])
    assert (rest.plaintext, rest.final) == (b"b\nc\n", True)


def test_a_partial_last_chunk_is_left_for_later() -> None:
    data = sealed(b"a\n", b"b\n", final=False)
    opened = ChunkOpener(KEY, LINE).open(data[len(LINE) : -3])
    assert (opened.plaintext, opened.final) == (b"a\n", False)


def test_truncation_at_a_chunk_boundary_lacks_the_final_chunk() -> None:
    data = sealed(b"a\n", b"b\n")
    last_start = chunk_spans(data, len(LINE))[-1][0]
    opened = ChunkOpener(KEY, LINE).open(data[len(LINE) : last_start])
    assert opened.plaintext == b"a\n" and not opened.final


def test_reordered_dropped_or_moved_chunks_fail() -> None:
    data = sealed(b"a\n", b"b\n", b"c\n")
    (a0, a1), (b0, b1), (c0, c1) = chunk_spans(data, len(LINE))
    swapped = data[a0:a1] + data[c0:c1] + data[b0:b1]
    with pytest.raises(InvalidCiphertext, match="chunk 1"):
        ChunkOpener(KEY, LINE).open(swapped)
    with pytest.raises(InvalidCiphertext, match="chunk 1"):
        ChunkOpener(KEY, LINE).open(data[a0:a1] + data[c0:c1])
    other = RecordingHeader("bob-0123456789abcdef0", HEADER.key_arn, HEADER.wrapped_key, {})
    with pytest.raises(InvalidCiphertext, match="chunk 0"):
        ChunkOpener(KEY, other.to_line()).open(data[len(LINE) :])


def test_a_forged_final_or_boundary_flag_fails() -> None:
    data = bytearray(sealed(b"a\n", b"b\n", final=False))
    start = chunk_spans(bytes(data), len(LINE))[0][0]
    data[start + 4] |= FINAL
    with pytest.raises(InvalidCiphertext):
        ChunkOpener(KEY, LINE).open(bytes(data[len(LINE) :]))


def test_data_after_the_final_chunk_fails() -> None:
    data = sealed(b"a\n")
    extra = ChunkSealer(KEY, LINE, 1).seal(b"b\n")
    with pytest.raises(InvalidCiphertext, match="after its final chunk"):
        ChunkOpener(KEY, LINE).open(data[len(LINE) :] + extra)


@given(st.data())
def test_any_altered_byte_fails_or_leaves_the_recording_unfinished(draw: st.DataObject) -> None:
    data = bytearray(sealed(b"first line\n", b"second line\n"))
    position = draw.draw(st.integers(len(LINE), len(data) - 1))
    data[position] ^= draw.draw(st.integers(1, 255))
    body = bytes(data[len(LINE) :])
    try:
        opened = ChunkOpener(KEY, LINE).open(body)
    except InvalidCiphertext:
        return
    # Only a length made longer gets past: the chunk then looks partial, never read.
    assert not opened.final and opened.consumed < len(body)


def test_impossible_lengths_fail() -> None:
    with pytest.raises(InvalidCiphertext, match="impossible length"):
        ChunkOpener(KEY, LINE).open(struct.pack(">I", 2**31) + b"\x00" * 40)


def test_complete_length_cuts_back_to_the_last_flush() -> None:
    sealer = ChunkSealer(KEY, LINE)
    one = sealer.seal(b"a\n")
    two = sealer.seal(b"y" * (MAX_PLAINTEXT + 1))  # two chunks, the second a boundary
    data = LINE + one + two
    first_of_two = chunk_spans(data, len(LINE))[1][1]
    assert complete_length(data, len(LINE)) == (len(data), 3)
    assert complete_length(data[: first_of_two + 10], len(LINE)) == (len(LINE) + len(one), 1)
    assert complete_length(data[:first_of_two], len(LINE)) == (len(LINE) + len(one), 1)
    assert complete_length(LINE, len(LINE)) == (len(LINE), 0)


def test_key_material_is_not_in_reprs() -> None:
    assert KEY.hex() not in repr(ChunkSealer(KEY, LINE))
    assert "wrapped" not in repr(HEADER)
