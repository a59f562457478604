"""A session's output bytes cut into log events: whole lines where there are newlines.

Sans-I/O: :class:`LineSplitter` takes output bytes with the time they were relayed
(:meth:`~LineSplitter.feed`) and returns events, each a text chunk ending with its newline
(``\\r\\n`` from a terminal stays as it is, like every ANSI sequence), stamped with the time its
first byte arrived. Text without a newline yet waits at most ``flush_after`` seconds
(:meth:`~LineSplitter.poll`, :meth:`~LineSplitter.next_deadline`): a shell prompt appears in the
log without waiting for the next line. No event is larger than ``max_event_bytes`` of UTF-8
(CloudWatch Logs' limit: 256 KiB per event, 26 of them its own overhead); a longer line is cut
at a character boundary. So concatenating a stream's events gives back the output exactly.

Bytes are decoded as UTF-8 incrementally (a character split between two frames is decoded
whole); invalid bytes become U+FFFD, as in the recordings (``protocol.asciicast``).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final

__all__ = ["FLUSH_AFTER", "MAX_EVENT_BYTES", "LineSplitter", "LogLine", "cut_utf8"]

#: CloudWatch Logs' largest event: 256 KiB, of which 26 bytes are its per-event overhead.
MAX_EVENT_BYTES: Final = 256 * 1024 - 26
#: Seconds text without a newline waits for one before it becomes an event of its own.
FLUSH_AFTER: Final = 0.5


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log event: ``text`` (ending with its newline, unless flushed or cut) and ``time``,
    the wall-clock seconds at which its first byte was relayed."""

    time: float
    text: str


def cut_utf8(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes of UTF-8, cut at character boundaries."""
    data = text.encode()
    if len(data) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # inside a character
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


class LineSplitter:
    """Cuts one stream's output into :class:`LogLine` events (see the module docstring).

    Args:
        flush_after: seconds text without a newline waits before it is emitted.
        max_event_bytes: largest event, in bytes of UTF-8 (at least 4: one character).
    """

    def __init__(
        self, *, flush_after: float = FLUSH_AFTER, max_event_bytes: int = MAX_EVENT_BYTES
    ) -> None:
        if max_event_bytes < 4:
            raise ValueError("max_event_bytes must hold a character (4 bytes)")
        self._flush_after = flush_after
        self._max = max_event_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial: list[str] = []
        self._partial_bytes = 0
        self._since: float | None = None

    def feed(self, data: bytes, now: float) -> list[LogLine]:
        """Take output relayed at ``now``; returns the events it completes."""
        return self._take(self._decoder.decode(data), now)

    def poll(self, now: float) -> list[LogLine]:
        """Emit text that has waited ``flush_after`` seconds for its newline."""
        if self._since is not None and now - self._since >= self._flush_after:
            return self._emit_partial()
        return []

    def next_deadline(self) -> float | None:
        """When :meth:`poll` will next emit something (``None``: nothing waits)."""
        return None if self._since is None else self._since + self._flush_after

    def finish(self, now: float) -> list[LogLine]:
        """The output ended: everything still held (an incomplete character as U+FFFD)."""
        out = self._take(self._decoder.decode(b"", final=True), now)
        out.extend(self._emit_partial())
        return out

    @property
    def pending(self) -> bool:
        return self._since is not None

    def _take(self, text: str, now: float) -> list[LogLine]:
        out: list[LogLine] = []
        start = 0
        while start < len(text):
            newline = text.find("\n", start)
            if newline < 0:
                self._hold(text[start:], now, out)
                break
            self._hold(text[start : newline + 1], now, out)
            out.extend(self._emit_partial())
            start = newline + 1
        return out

    def _hold(self, piece: str, now: float, out: list[LogLine]) -> None:
        if not piece:
            return
        if self._since is None:
            self._since = now
        self._partial.append(piece)
        self._partial_bytes += len(piece.encode())
        if self._partial_bytes > self._max:
            *whole, rest = cut_utf8("".join(self._partial), self._max)
            out.extend(LogLine(self._since, text) for text in whole)
            self._partial = [rest]
            self._partial_bytes = len(rest.encode())
            self._since = now

    def _emit_partial(self) -> list[LogLine]:
        if self._since is None:
            return []
        text = "".join(self._partial)
        since = self._since
        self._partial, self._partial_bytes, self._since = [], 0, None
        return [LogLine(since, text)] if text else []
