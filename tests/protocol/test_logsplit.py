"""Output bytes cut into log events: lines, a flush of text without a newline, the size bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hatchway.protocol.logsplit import LineSplitter, LogLine, cut_utf8


def test_whole_lines_become_events_stamped_with_their_first_byte() -> None:
    s = LineSplitter(flush_after=0.5)
    assert s.feed(b"one\r\ntw", 1.0) == [LogLine(1.0, "one\r\n")]
    assert s.feed(b"o\r\nthree\r\nfo", 1.2) == [LogLine(1.0, "two\r\n"), LogLine(1.2, "three\r\n")]
    assert s.pending and s.next_deadline() == 1.7
    assert s.finish(2.0) == [LogLine(1.2, "fo")]
    assert not s.pending and s.next_deadline() is None


def test_text_without_a_newline_is_flushed_after_the_delay_not_before() -> None:
    s = LineSplitter(flush_after=0.5)
    assert s.feed(b"alice@host:~$ ", 10.0) == []
    assert s.poll(10.49) == []
    assert s.poll(10.5) == [LogLine(10.0, "alice@host:~$ ")]
    assert s.poll(20.0) == []
    # What follows starts a new event.
    assert s.feed(b"ls\r\n", 11.0) == [LogLine(11.0, "ls\r\n")]


def test_a_character_split_between_frames_is_decoded_whole_and_ansi_is_kept() -> None:
    s = LineSplitter()
    data = "\x1b[1;31mhé世\x1b[0m\n".encode()
    out = s.feed(data[:8], 1.0) + s.feed(data[8:], 1.1)
    assert out == [LogLine(1.0, "\x1b[1;31mhé世\x1b[0m\n")]
    assert s.finish(2.0) == []


def test_invalid_utf8_becomes_the_replacement_character() -> None:
    s = LineSplitter()
    assert s.feed(b"a\xffb\n", 1.0) == [LogLine(1.0, "a\ufffdb\n")]
    assert s.feed(b"\xe4\xb8", 1.0) == []
    assert s.finish(1.0) == [LogLine(1.0, "\ufffd")]


def test_no_event_is_larger_than_the_limit() -> None:
    s = LineSplitter(max_event_bytes=10)
    out = s.feed(("é" * 12 + "\n").encode(), 1.0)
    assert [len(line.text.encode()) for line in out] == [10, 10, 5]
    assert "".join(line.text for line in out) == "é" * 12 + "\n"


@given(
    chunks=st.lists(st.binary(max_size=40), max_size=20),
    limit=st.integers(min_value=4, max_value=64),
)
def test_the_events_give_back_the_output_exactly(chunks: list[bytes], limit: int) -> None:
    s = LineSplitter(flush_after=0.5, max_event_bytes=limit)
    events: list[LogLine] = []
    for i, chunk in enumerate(chunks):
        events += s.feed(chunk, float(i))
        events += s.poll(i + 0.25)
    events += s.finish(100.0)
    assert "".join(e.text for e in events) == b"".join(chunks).decode("utf-8", "replace")
    for e in events:
        assert 0 < len(e.text.encode()) <= limit
        assert "\n" not in e.text[:-1]  # a newline only ever ends an event
    assert [e.time for e in events] == sorted(e.time for e in events)


@given(st.text(max_size=200), st.integers(min_value=4, max_value=50))
def test_cut_utf8_cuts_at_character_boundaries(text: str, limit: int) -> None:
    pieces = cut_utf8(text, limit)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= limit for p in pieces)
