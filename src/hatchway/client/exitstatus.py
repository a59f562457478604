"""The CLI edge's exit statuses, in one table."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitStatus"]


class ExitStatus(IntEnum):
    """The CLI edge's one table of exit statuses (``start-session`` also exits with the
    remote shell's own status, as ``ssh`` does)."""

    OK = 0
    #: Any error: one line ``hatchway: …`` on stderr.
    ERROR = 1
    #: Bad command-line usage (click's own convention).
    USAGE = 2
    #: Interrupted (Ctrl-C), as shells report SIGINT.
    INTERRUPTED = 130
    #: The session ended without an exit status (terminated, node lost), as ``ssh`` does.
    SESSION_ENDED = 255
