"""WebSocket close codes: the one table for both channels and every end (docs/protocol.md §11.1).

Codes below 4000 are those of RFC 6455 §7.4.1; 4000-4999 are Hatchway's own. Close reasons are
short human-readable text (at most 123 bytes on the wire).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["MAX_REASON_BYTES", "CloseCode", "close_reason"]

#: RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
MAX_REASON_BYTES = 123


class CloseCode(IntEnum):
    """Why a data-channel or control-channel WebSocket was closed."""

    #: The end closed normally.
    NORMAL = 1000
    #: The server is shutting down (or restarting); reconnect and resume.
    GOING_AWAY = 1001
    #: A malformed frame (header, payload or digest); the sender should not send it again.
    BAD_DATA = 1007
    #: Refused: bad or missing token, failed authentication, or a misbehaving peer.
    POLICY = 1008
    #: A message larger than the frame limit.
    TOO_BIG = 1009
    #: The server failed; reconnect and resume.
    INTERNAL_ERROR = 1011
    #: A newer connection took over this end of the session (or this node's control channel).
    REPLACED = 4000
    #: The session has ended; do not reconnect.
    ENDED = 4001
    #: The peer did not read what was sent to it within the send time-out.
    STALLED = 4002
    #: The node was deregistered; the agent must stop.
    DEREGISTERED = 4003
    #: A newer agent process took over this node's identity; this one must stop.
    SUPERSEDED = 4004
    #: Nothing arrived for longer than the liveness window (two missed heartbeats); reconnect.
    UNRESPONSIVE = 4005

    @classmethod
    def describe(cls, code: int | None) -> str:
        """A short name for ``code`` (``"REPLACED (4000)"``), also for codes not in the table."""
        if code is None:
            return "no close code"
        try:
            return f"{cls(code).name} ({code})"
        except ValueError:
            return f"close code {code}"


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame (at most :data:`MAX_REASON_BYTES` UTF-8 bytes)."""
    raw = text.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."
