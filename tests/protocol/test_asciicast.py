"""asciicast v2 lines: header, events, incremental UTF-8, reading back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.asciicast import (
    Encoder,
    EventCode,
    Header,
    complete_length,
    parse_event,
    parse_header,
)


def test_header_line_is_asciicast_v2() -> None:
    line = Header(120, 40, 1_700_000_000, "alice-0123456789abcdef0").to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert obj == {
        "version": 2,
        "width": 120,
        "height": 40,
        "timestamp": 1_700_000_000,
        "env": {"TERM": "xterm-256color"},
        "title": "alice-0123456789abcdef0",
    }
    assert parse_header(line) == Header(120, 40, 1_700_000_000, "alice-0123456789abcdef0")


def test_output_input_and_resize_events() -> None:
    enc = Encoder()
    assert json.loads(enc.data(EventCode.OUTPUT, 0.5, b"hello\r\n")) == [0.5, "o", "hello\r\n"]
    assert json.loads(enc.data(EventCode.INPUT, 0.75, b"ls\r")) == [0.75, "i", "ls\r"]
    assert json.loads(enc.resize(1.0, 100, 30)) == [1.0, "r", "100x30"]


def test_multibyte_character_split_over_frames_comes_out_whole() -> None:
    enc = Encoder()
    euro = "€".encode()  # 3 bytes
    assert enc.data(EventCode.OUTPUT, 1.0, b"a" + euro[:1]) == b'[1.0, "o", "a"]\n'
    assert enc.data(EventCode.OUTPUT, 1.1, euro[1:2]) == b""  # still incomplete: no event
    assert parse_event(enc.data(EventCode.OUTPUT, 1.2, euro[2:] + b"b")).data == "€b"


def test_invalid_bytes_become_replacement_characters() -> None:
    enc = Encoder()
    assert parse_event(enc.data(EventCode.OUTPUT, 0, b"x\xff\xfey")).data == "x\ufffd\ufffdy"
    enc.data(EventCode.OUTPUT, 1, "é".encode()[:1])
    assert parse_event(enc.finish(2)).data == "\ufffd"


def test_decoders_of_output_and_input_are_separate() -> None:
    enc = Encoder()
    e = "é".encode()
    assert enc.data(EventCode.OUTPUT, 0, e[:1]) == b""
    assert parse_event(enc.data(EventCode.INPUT, 0, b"k")).data == "k"
    assert parse_event(enc.data(EventCode.OUTPUT, 0, e[1:])).data == "é"


def test_times_never_go_backwards() -> None:
    enc = Encoder()
    enc.data(EventCode.OUTPUT, 5.0, b"a")
    assert parse_event(enc.data(EventCode.OUTPUT, 4.0, b"b")).time == 5.0


def test_control_characters_and_escapes_survive_a_round_trip() -> None:
    text = '\x1b[1;31mred\x1b[0m\t"quoted" \\ \x00'
    line = Encoder().data(EventCode.OUTPUT, 0.123456789, text.encode())
    event = parse_event(line)
    assert event.data == text and event.time == 0.123457


@given(st.lists(st.binary(max_size=20), max_size=20))
def test_any_split_decodes_as_the_whole(chunks: list[bytes]) -> None:
    enc = Encoder()
    lines = [enc.data(EventCode.OUTPUT, 0, c) for c in chunks] + [enc.finish(0)]
    text = "".join(parse_event(line).data for line in b"".join(lines).splitlines())
    assert text == b"".join(chunks).decode("utf-8", errors="replace")


def test_complete_length_cuts_a_partial_last_line() -> None:
    whole = b'{"version": 2}\n[0.1, "o", "a"]\n'
    assert complete_length(whole + b'[0.2, "o", "b') == len(whole)
    assert complete_length(whole) == len(whole)
    assert complete_length(b"no newline") == 0
    assert complete_length(b"") == 0


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1, 2]", b'{"version": 1, "width": 80, "height": 24}', b'{"version": 2}'],
)
def test_bad_header_is_refused(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_header(line)


@pytest.mark.parametrize("line", [b"{}", b'[1, "o"]', b'["x", "o", "a"]', b'[true, "o", "a"]'])
def test_bad_event_is_refused(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_event(line)
