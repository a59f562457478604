"""Hatchway's sans-I/O wire protocol, compatible with AWS Session Manager (docs/protocol.md §4-§11).

This package owns everything that is bytes on a WebSocket and nothing that touches one:

* :mod:`~hatchway.protocol.frames`: the 120-byte-header frame, message and payload types;
* :mod:`~hatchway.protocol.payloads`: the JSON (and tiny binary) payloads inside frames;
* :mod:`~hatchway.protocol.handshake`: the data-channel handshake and Hatchway's extensions;
* :mod:`~hatchway.protocol.reliability`: sequencing, acks and retransmission (:class:`Endpoint`);
* :mod:`~hatchway.protocol.control`: encoders for acks and other non-stream frames;
* :mod:`~hatchway.protocol.events`: what an :class:`Endpoint` reports.

It imports only the standard library and :mod:`hatchway.errors`; it never reads the clock,
sleeps or does I/O (``tests/test_layering.py`` enforces this). Time comes in as ``now``.
Hatchway's extensions are negotiated in the handshake (docs/protocol.md §7.6).
"""

from hatchway.protocol.control import ack_for, control_frame, session_state_frame
from hatchway.protocol.events import (
    ChannelClosedEvent,
    Event,
    PublicationPaused,
    PublicationStarted,
    SessionStateChanged,
    StreamData,
    UnknownMessage,
)
from hatchway.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FLAG_FIN,
    FLAG_SYN,
    FRAME_HEADER_SIZE,
    HEADER_LENGTH,
    FlagValue,
    Frame,
    FrameHeader,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
    make_frame,
    peek_header,
)
from hatchway.protocol.handshake import (
    AGENT_VERSION,
    CLIENT_VERSION,
    HATCHWAY_MAX_PAYLOAD,
    HATCHWAY_STREAM_WINDOW,
    ActionStatus,
    ActionType,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    ProcessedClientAction,
    RequestedClientAction,
    SessionType,
    answer_request,
    build_request,
    negotiated_from_response,
    response_failed,
)
from hatchway.protocol.payloads import (
    AcknowledgeContent,
    AgentHeartbeat,
    AgentSessionState,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosedPayload,
    MGSPayload,
    OpenDataChannelInput,
    SizePayload,
    decode_exit_code,
    decode_flag,
    encode_exit_code,
    encode_flag,
)
from hatchway.protocol.reliability import Endpoint, Role

__all__ = [
    "AGENT_VERSION",
    "CLIENT_VERSION",
    "DEFAULT_MAX_FRAME_SIZE",
    "FLAG_FIN",
    "FLAG_SYN",
    "FRAME_HEADER_SIZE",
    "HATCHWAY_MAX_PAYLOAD",
    "HATCHWAY_STREAM_WINDOW",
    "HEADER_LENGTH",
    "AcknowledgeContent",
    "ActionStatus",
    "ActionType",
    "AgentHeartbeat",
    "AgentSessionState",
    "AgentTaskAcknowledge",
    "AgentTaskComplete",
    "AgentTaskPayload",
    "ChannelClosedEvent",
    "ChannelClosedPayload",
    "Endpoint",
    "Event",
    "Extensions",
    "FlagValue",
    "Frame",
    "FrameHeader",
    "HandshakeComplete",
    "HandshakeRequest",
    "HandshakeResponse",
    "MGSPayload",
    "MessageType",
    "OpenDataChannelInput",
    "PayloadType",
    "ProcessedClientAction",
    "PublicationPaused",
    "PublicationStarted",
    "RequestedClientAction",
    "Role",
    "SessionStateChanged",
    "SessionType",
    "SizePayload",
    "StreamData",
    "UnknownMessage",
    "ack_for",
    "answer_request",
    "build_request",
    "control_frame",
    "decode_exit_code",
    "decode_flag",
    "decode_frame",
    "encode_exit_code",
    "encode_flag",
    "encode_frame",
    "make_frame",
    "negotiated_from_response",
    "peek_header",
    "response_failed",
    "session_state_frame",
]
