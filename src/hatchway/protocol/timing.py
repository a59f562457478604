"""Periods both ends of a channel must agree on, defined once (docs/protocol.md §13.1).

Time-outs that only one process uses stay with that process; these are the ones a peer's
behaviour depends on.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEARTBEAT_INTERVAL", "MISSED_HEARTBEATS", "PING_INTERVAL", "liveness_window"]

#: Seconds between two ``agent_heartbeat`` messages on a control channel.
HEARTBEAT_INTERVAL: Final = 10.0
#: A node whose last heartbeat is older than this many periods (plus 1 s of slack) is
#: ``ConnectionLost``.
MISSED_HEARTBEATS: Final = 2
#: Seconds between WebSocket pings on data channels (client and agent), so a dead link is
#: noticed and resumed quickly; a pong must come back within the same period.
PING_INTERVAL: Final = 20.0


def liveness_window(heartbeat_interval: float = HEARTBEAT_INTERVAL) -> float:
    """How old the last heartbeat may be for the node to count as ``Online``."""
    return MISSED_HEARTBEATS * heartbeat_interval + 1.0
