"""The local terminal during an interactive session: raw mode and window size."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios
import tty
from collections.abc import Iterator

DEFAULT_SIZE = (24, 80)


def window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``; $LINES/$COLUMNS or 24×80 if not a terminal."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        if rows and cols:
            return rows, cols
    except OSError:
        pass
    try:
        return int(os.environ["LINES"]), int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        return DEFAULT_SIZE


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Raw mode for the session, restored on exit.

    TCSANOW, not TCSAFLUSH: input typed ahead before the session opened is kept and sent.
    """
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
