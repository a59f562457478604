"""asciicast v2, the session recording format (https://docs.asciinema.org/manual/asciicast/v2/).

A recording is newline-delimited JSON: a header object, then one ``[time, code, data]`` array
per event, ``time`` in seconds since the header's ``timestamp``. Codes used here: ``o`` (output
of the terminal), ``i`` (what was typed, only when input recording is on) and ``r`` (a resize,
``"COLSxROWS"``).

Sans-I/O, both ways: :class:`Encoder` turns the bytes of the session's streams into complete
lines (its UTF-8 decoders are incremental, so a character split between two frames is decoded
whole; invalid bytes become U+FFFD), and :func:`parse_header`/:func:`parse_event` read them
back. :func:`complete_length` finds how much of a file that was being written when its writer
died is made of whole lines: a recording is always read up to its last newline.
"""

from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from hatchway.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_TERM",
    "DEFAULT_WIDTH",
    "Encoder",
    "Event",
    "EventCode",
    "Header",
    "complete_length",
    "parse_event",
    "parse_header",
]

DEFAULT_WIDTH: Final = 80
DEFAULT_HEIGHT: Final = 24
#: The agent's login environment sets this TERM for PTY sessions (agent/runas.py).
DEFAULT_TERM: Final = "xterm-256color"
#: Sizes past this are not a terminal's; the header and resize events clamp to it.
MAX_DIMENSION: Final = 10_000


class EventCode(StrEnum):
    """The event codes Hatchway writes."""

    OUTPUT = "o"
    INPUT = "i"
    RESIZE = "r"


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a recording.

    Attributes:
        width, height: the terminal size when the recording starts.
        timestamp: Unix seconds at which event time 0 lies.
        title: shown by players; Hatchway puts the session id there.
        term: the terminal type the session's programs saw.
    """

    width: int
    height: int
    timestamp: int
    title: str = ""
    term: str = DEFAULT_TERM

    def to_line(self) -> bytes:
        body = {
            "version": 2,
            "width": _dimension(self.width),
            "height": _dimension(self.height),
            "timestamp": self.timestamp,
            "env": {"TERM": self.term},
            "title": self.title,
        }
        return _line(body)


@dataclass(frozen=True, slots=True)
class Event:
    """One event line: seconds since the header's timestamp, its code and its text."""

    time: float
    code: str
    data: str

    def to_line(self) -> bytes:
        return _line([round(self.time, 6), self.code, self.data])


class Encoder:
    """Makes event lines out of a session's stream bytes.

    One incremental UTF-8 decoder per stream (output and input), so a multibyte character
    split over two frames comes out whole, in the event of the frame that completed it. Times
    are clamped to never go backwards (a wall clock may step back).
    """

    def __init__(self) -> None:
        self._decoders = {
            EventCode.OUTPUT: codecs.getincrementaldecoder("utf-8")(errors="replace"),
            EventCode.INPUT: codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._last_time = 0.0

    def _time(self, t: float) -> float:
        self._last_time = max(self._last_time, t if math.isfinite(t) else 0.0)
        return self._last_time

    def data(self, code: EventCode, t: float, data: bytes | memoryview) -> bytes:
        """The line for ``data`` on the ``code`` stream (``o`` or ``i``), or ``b""`` while
        only part of a character has arrived."""
        text = self._decoders[code].decode(data)
        if not text:
            return b""
        return Event(self._time(t), code.value, text).to_line()

    def resize(self, t: float, cols: int, rows: int) -> bytes:
        size = f"{_dimension(cols)}x{_dimension(rows)}"
        return Event(self._time(t), EventCode.RESIZE.value, size).to_line()

    def finish(self, t: float) -> bytes:
        """Lines for bytes still held by the decoders (an unfinished character: U+FFFD)."""
        out = b""
        for code, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                out += Event(self._time(t), code.value, text).to_line()
        return out

    @property
    def last_time(self) -> float:
        return self._last_time

    def restart_at(self, t: float) -> None:
        """Continue a recording whose last event was at ``t`` (after a server restart)."""
        self._last_time = max(self._last_time, t)


def complete_length(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole lines (up to and including the last
    newline): what is left of a recording whose writer was killed mid-line is cut there."""
    return data.rfind(b"\n") + 1


def parse_header(line: bytes) -> Header:
    """Read a recording's first line.

    Raises:
        RemoteProtocolError: not an asciicast v2 header.
    """
    obj = _loads(line, "header")
    if not isinstance(obj, dict) or obj.get("version") != 2:
        raise RemoteProtocolError("not an asciicast v2 recording (its header has no version 2)")
    width, height = obj.get("width"), obj.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        raise RemoteProtocolError("the recording's header has no valid width and height")
    timestamp = obj.get("timestamp", 0)
    env = obj.get("env") if isinstance(obj.get("env"), dict) else {}
    assert isinstance(env, dict)
    term = env.get("TERM", DEFAULT_TERM)
    title = obj.get("title", "")
    return Header(
        width=width,
        height=height,
        timestamp=int(timestamp) if isinstance(timestamp, int | float) else 0,
        title=title if isinstance(title, str) else "",
        term=term if isinstance(term, str) else DEFAULT_TERM,
    )


def parse_event(line: bytes) -> Event:
    """Read one event line.

    Raises:
        RemoteProtocolError: not a ``[time, code, data]`` array.
    """
    obj = _loads(line, "event")
    if (
        not isinstance(obj, list)
        or len(obj) != 3
        or not isinstance(obj[0], int | float)
        or isinstance(obj[0], bool)
        or not isinstance(obj[1], str)
        or not isinstance(obj[2], str)
    ):
        raise RemoteProtocolError(f"not an asciicast event: {line[:60]!r}")
    return Event(float(obj[0]), obj[1], obj[2])


def _loads(line: bytes, what: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise RemoteProtocolError(f"the recording's {what} is not JSON: {line[:60]!r}") from exc


def _line(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": ")).encode() + b"\n"


def _dimension(value: int) -> int:
    return min(max(int(value), 1), MAX_DIMENSION)
