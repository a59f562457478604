"""Removing terminal control sequences from text (``hatchway logs … --strip-ansi``).

What is removed, after ECMA-48 (section 5) and xterm's ctlseqs:

* CSI sequences: ``ESC [`` (or the C1 ``U+009B``), parameter bytes ``0x30–0x3F``, intermediate
  bytes ``0x20–0x2F`` and one final byte ``0x40–0x7E`` (colours, cursor moves, modes);
* control strings: OSC (``ESC ]``/``U+009D``: titles, hyperlinks), DCS (``ESC P``), SOS
  (``ESC X``), PM (``ESC ^``) and APC (``ESC _``), up to their terminator: ST (``ESC \\`` or
  ``U+009C``), or BEL for OSC, as xterm accepts;
* other escape sequences: ``ESC``, intermediates ``0x20–0x2F``, a final ``0x30–0x7E``
  (``ESC ( B``, ``ESC =``, ``ESC 7``).

CAN and SUB (``0x18``, ``0x1A``) cancel a sequence under way and are removed with it; any other
control character inside a CSI or escape sequence is kept (terminals execute it there), and
the sequence goes on. Everything else — text, newlines, carriage returns, tabs — is kept.

:class:`AnsiStripper` is incremental, so a sequence cut between two log events is still removed
whole; :func:`strip_ansi` does one complete text.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

__all__ = ["AnsiStripper", "strip_ansi"]

ESC: Final = "\x1b"
BEL: Final = "\x07"
_CANCEL: Final = frozenset("\x18\x1a")
_STRING_STARTS: Final = frozenset("]PX^_")
_C1_STRINGS: Final = frozenset("\x9d\x90\x98\x9e\x9f")
CSI_C1: Final = "\x9b"
ST_C1: Final = "\x9c"


class _State(Enum):
    TEXT = auto()
    ESCAPE = auto()  # after ESC
    ESCAPE_INTERMEDIATE = auto()  # ESC and intermediates: waiting for the final byte
    CSI = auto()
    STRING = auto()  # OSC/DCS/SOS/PM/APC body
    STRING_ESCAPE = auto()  # ESC inside a string: ST if a backslash follows


class AnsiStripper:
    """Removes control sequences from text fed in pieces (see the module docstring)."""

    def __init__(self) -> None:
        self._state = _State.TEXT
        self._osc = False  # the string under way is an OSC (BEL ends it too)

    def feed(self, text: str) -> str:
        """The text of ``text`` with every complete or begun sequence removed."""
        out: list[str] = []
        state = self._state
        run_start = 0
        i = 0
        n = len(text)
        while i < n:
            char = text[i]
            if state is _State.TEXT:
                if char in (ESC, CSI_C1, ST_C1) or char in _C1_STRINGS:
                    out.append(text[run_start:i])
                    if char == ESC:
                        state = _State.ESCAPE
                    elif char == CSI_C1:
                        state = _State.CSI
                    elif char in _C1_STRINGS:
                        state = _State.STRING
                        self._osc = char == "\x9d"
                    # A stray ST is dropped.
                    run_start = i + 1
                i += 1
                continue
            code = ord(char)
            if char in _CANCEL:
                state = _State.TEXT
            elif state is _State.ESCAPE:
                if char == "[":
                    state = _State.CSI
                elif char in _STRING_STARTS:
                    state = _State.STRING
                    self._osc = char == "]"
                elif char == ESC:
                    state = _State.ESCAPE
                elif 0x20 <= code <= 0x2F:
                    state = _State.ESCAPE_INTERMEDIATE
                elif 0x30 <= code <= 0x7E:
                    state = _State.TEXT
                elif code < 0x20:
                    out.append(char)  # executed by terminals; the sequence goes on
                elif code == 0x7F:
                    pass
                else:  # not a sequence after all: ESC dropped, the character read as text
                    state = _State.TEXT
                    run_start = i
                    continue
            elif state is _State.ESCAPE_INTERMEDIATE:
                if 0x20 <= code <= 0x2F:
                    pass
                elif 0x30 <= code <= 0x7E:
                    state = _State.TEXT
                elif char == ESC:
                    state = _State.ESCAPE
                elif code < 0x20:
                    out.append(char)
                elif code != 0x7F:
                    state = _State.TEXT
                    run_start = i
                    continue
            elif state is _State.CSI:
                if 0x40 <= code <= 0x7E:
                    state = _State.TEXT
                elif 0x20 <= code <= 0x3F or code == 0x7F:
                    pass
                elif char == ESC:
                    state = _State.ESCAPE
                elif code < 0x20:
                    out.append(char)
                else:  # not a CSI byte: the sequence is malformed; the character is text
                    state = _State.TEXT
                    run_start = i
                    continue
            elif state is _State.STRING:
                if char == ESC:
                    state = _State.STRING_ESCAPE
                elif char == ST_C1 or (self._osc and char == BEL):
                    state = _State.TEXT
            elif state is _State.STRING_ESCAPE:
                if char == "\\":
                    state = _State.TEXT
                elif char != ESC:
                    # ESC then something else ends the string and starts a new escape.
                    state = _State.ESCAPE
                    continue  # the character is read again in ESCAPE
            i += 1
            run_start = i
        if state is _State.TEXT:
            out.append(text[run_start:])
        self._state = state
        return "".join(out)


def strip_ansi(text: str) -> str:
    """``text`` without its terminal control sequences (an unfinished one at the end too)."""
    return AnsiStripper().feed(text)
