"""Events an :class:`~hatchway.protocol.reliability.Endpoint` returns from ``receive()``.

Each is a frozen record; drivers dispatch on the class (``match event: case StreamData(...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hatchway.protocol.payloads import ChannelClosedPayload, NoticePayload

__all__ = [
    "ChannelClosedEvent",
    "Event",
    "Notice",
    "PublicationPaused",
    "PublicationStarted",
    "SessionStateChanged",
    "StreamData",
    "UnknownMessage",
]


@dataclass(frozen=True, slots=True)
class StreamData:
    """One stream frame from the peer, delivered in order and exactly once (docs/protocol.md
    §6.3)."""

    payload_type: int
    payload: bytes
    sequence_number: int


@dataclass(frozen=True, slots=True)
class ChannelClosedEvent:
    """The service closed the channel (docs/protocol.md §9.1)."""

    payload: ChannelClosedPayload


@dataclass(frozen=True, slots=True)
class PublicationPaused:
    """``pause_publication``: the other end is away; sending is held back (docs/protocol.md
    §6.7)."""


@dataclass(frozen=True, slots=True)
class PublicationStarted:
    """``start_publication``: sending resumes (docs/protocol.md §6.7)."""


@dataclass(frozen=True, slots=True)
class SessionStateChanged:
    """``agent_session_state``: ``Connected`` or ``Terminating`` (docs/protocol.md §9.2)."""

    state: str


@dataclass(frozen=True, slots=True)
class Notice:
    """``hatchway_notice``: news from the gateway about the other end (docs/protocol.md §9.6)."""

    payload: NoticePayload


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A frame of a type this endpoint does not handle; the caller may log and ignore it."""

    message_type: str


Event = (
    StreamData
    | ChannelClosedEvent
    | PublicationPaused
    | PublicationStarted
    | SessionStateChanged
    | Notice
    | UnknownMessage
)
