"""The 120-byte-header binary frame shared by client, agent and gateway.

Layout, parsing rules, validation and golden vectors are in docs/protocol.md §4; message and
payload types in §5.
This module only turns :class:`Frame` records into bytes and back. It knows nothing about
sequencing (see :mod:`hatchway.protocol.reliability`) or payload contents (see
:mod:`hatchway.protocol.payloads`).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

from hatchway.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FLAG_FIN",
    "FLAG_SYN",
    "FRAME_HEADER_SIZE",
    "HEADER_LENGTH",
    "FlagValue",
    "Frame",
    "FrameHeader",
    "MessageType",
    "PayloadType",
    "decode_frame",
    "encode_frame",
    "make_frame",
    "peek_header",
    "with_message_id",
]


class MessageType(StrEnum):
    """Frame ``MessageType`` strings (docs/protocol.md §5.1, §5.2), Hatchway's own included."""

    INPUT_STREAM_DATA = "input_stream_data"
    OUTPUT_STREAM_DATA = "output_stream_data"
    ACKNOWLEDGE = "acknowledge"
    CHANNEL_CLOSED = "channel_closed"
    START_PUBLICATION = "start_publication"
    PAUSE_PUBLICATION = "pause_publication"
    AGENT_SESSION_STATE = "agent_session_state"
    INTERACTIVE_SHELL = "interactive_shell"
    AGENT_TASK_COMPLETE = "agent_task_complete"
    AGENT_TASK_ACKNOWLEDGE = "agent_task_acknowledge"
    #: Hatchway's own control-channel heartbeat (docs/protocol.md §10.7).
    AGENT_HEARTBEAT = "agent_heartbeat"
    #: Hatchway's own data-channel notice from the gateway to the client (docs/protocol.md §9.6);
    #: AWS's plugin logs an unknown message type and ignores it.
    HATCHWAY_NOTICE = "hatchway_notice"
    #: Hatchway's own control message: the agent reports the TCP connections a port session
    #: carried, for the session's record (docs/protocol.md §10.8).
    HATCHWAY_CONNECTIONS = "hatchway_connections"


class PayloadType(IntEnum):
    """Frame ``PayloadType`` values (docs/protocol.md §5.3)."""

    NONE = 0
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


class FlagValue(IntEnum):
    """Values carried by a ``PayloadType.FLAG`` payload (docs/protocol.md §5.4)."""

    DISCONNECT_TO_PORT = 1
    TERMINATE_SESSION = 2
    CONNECT_TO_PORT_ERROR = 3
    #: Hatchway's own, sent only to a Hatchway agent (HatchwayExtensions negotiated): the
    #: client's input has ended. A command's stdin is closed after what came before it; a
    #: stdio port session half-closes its destination (docs/protocol.md §5.4).
    END_OF_INPUT = 4


#: Value of the HeaderLength field: the offset of PayloadLength (docs/protocol.md §4.1).
HEADER_LENGTH: Final = 116
#: Bytes before the payload: the header plus the PayloadLength field.
FRAME_HEADER_SIZE: Final = 120
#: Hatchway's frame size limit, header included and inclusive (docs/protocol.md §13.1); AWS
#: defines none.
DEFAULT_MAX_FRAME_SIZE: Final = 1024 * 1024
#: Flags bits (docs/protocol.md §4.3). Receivers ignore them.
FLAG_SYN: Final = 1
FLAG_FIN: Final = 2

_TYPE_FIELD_SIZE: Final = 32
_MESSAGE_ID_OFFSET: Final = 64
# HeaderLength, MessageType, SchemaVersion, CreatedDate, SequenceNumber, Flags, MessageId,
# PayloadDigest, PayloadType, PayloadLength.
_HEADER: Final = struct.Struct(">I32sIQqQ16s32sII")
assert _HEADER.size == FRAME_HEADER_SIZE

_UINT32_MAX: Final = 2**32 - 1
_UINT64_MAX: Final = 2**64 - 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# docs/protocol.md §4.4: the plugin skips every check for these two types.
_UNCHECKED_TYPES: Final = frozenset({MessageType.START_PUBLICATION, MessageType.PAUSE_PUBLICATION})


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame (docs/protocol.md §4.1).

    ``message_type`` stays a plain ``str`` so that unknown types survive a round trip; compare it
    with :class:`MessageType` members, which are ``str`` too.
    """

    message_type: str
    sequence_number: int
    flags: int
    message_id: uuid.UUID
    payload_type: int
    payload: bytes
    created_date: int  # Unix epoch milliseconds
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The header fields a relay needs, read without checking the digest (docs/protocol.md §4.4).

    ``payload_length`` is what the header claims; ``payload_size`` is what the receivers take
    as the payload (everything after HeaderLength + 4, docs/protocol.md §4.2). Count bytes with
    ``payload_size``: the claim can lie.
    """

    message_type: str
    sequence_number: int
    payload_type: int
    payload_length: int
    payload_size: int


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LocalProtocolError(f"frame {name} {value} is outside [{low}, {high}]")


def _swap_halves(raw: bytes) -> bytes:
    # docs/protocol.md §4.1: MessageId is written as bytes 8..15 of the UUID, then bytes 0..7.
    return raw[8:] + raw[:8]


#: PayloadDigest of a frame sent without one: only between Hatchway's own ends, once both
#: agreed (HatchwayExtensions ``NoPayloadDigest``, docs/protocol.md §7.6). TLS already
#: protects every hop; the digest is AWS's, and costs a SHA-256 of every byte on each end.
_NO_DIGEST: Final = bytes(32)


def encode_frame(frame: Frame, *, digest: bool = True) -> bytes:
    """Serialise ``frame`` exactly as AWS's plugin and agent do (docs/protocol.md §4.1, §4.2).

    The type is space-padded, the MessageId halves are swapped and the digest is SHA-256 of the
    payload (zeros with ``digest=False``, between Hatchway's own ends only).

    Raises:
        LocalProtocolError: empty payload (neither AWS peer can handle one), a message type that
            is empty, non-ASCII or longer than 32 bytes, or an integer field out of range.
    """
    if not frame.payload:
        raise LocalProtocolError("cannot encode an empty payload (docs/protocol.md §4.2)")
    try:
        type_bytes = frame.message_type.encode("ascii")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"message type {frame.message_type!r} is not ASCII") from exc
    if not type_bytes:
        raise LocalProtocolError("message type is empty")
    if len(type_bytes) > _TYPE_FIELD_SIZE:
        raise LocalProtocolError(
            f"message type {frame.message_type!r} is longer than {_TYPE_FIELD_SIZE} bytes"
        )
    _check_range("schema_version", frame.schema_version, 0, _UINT32_MAX)
    _check_range("created_date", frame.created_date, 0, _UINT64_MAX)
    _check_range("sequence_number", frame.sequence_number, _INT64_MIN, _INT64_MAX)
    _check_range("flags", frame.flags, 0, _UINT64_MAX)
    _check_range("payload_type", frame.payload_type, 0, _UINT32_MAX)
    _check_range("payload length", len(frame.payload), 1, _UINT32_MAX)
    header = _HEADER.pack(
        HEADER_LENGTH,
        type_bytes.ljust(_TYPE_FIELD_SIZE, b" "),
        frame.schema_version,
        frame.created_date,
        frame.sequence_number,
        frame.flags,
        _swap_halves(frame.message_id.bytes),
        hashlib.sha256(frame.payload).digest() if digest else _NO_DIGEST,
        frame.payload_type,
        len(frame.payload),
    )
    return header + frame.payload


def with_message_id(data: bytes, message_id: uuid.UUID) -> bytes:
    """An encoded frame with its MessageId replaced, everything else (digest included) kept.

    Raises:
        LocalProtocolError: ``data`` is shorter than a frame header.
    """
    if len(data) < FRAME_HEADER_SIZE:
        raise LocalProtocolError(f"not a frame: {len(data)} bytes")
    return (
        data[:_MESSAGE_ID_OFFSET] + _swap_halves(message_id.bytes) + data[_MESSAGE_ID_OFFSET + 16 :]
    )


def _decode_type(raw: bytes) -> str:
    # docs/protocol.md §4.2: trim NULs, then whitespace.
    trimmed = raw.strip(b"\x00").strip()
    try:
        text = trimmed.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"frame message type {raw!r} is not ASCII") from exc
    if not text:
        raise RemoteProtocolError("frame message type is empty")
    return text


def decode_frame(
    data: bytes, *, verify_digest: bool = True, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> Frame:
    """Parse one frame (docs/protocol.md §4.2, §4.4).

    As in both AWS implementations, the payload is everything from HeaderLength+4 to the end;
    PayloadLength is not used to slice. Validation follows the plugin's table: HeaderLength and
    the type must be set, CreatedDate must be non-zero and, when ``verify_digest`` is true and the
    payload is non-empty, the digest must match. The plugin skips CreatedDate and digest checks
    for ``start_publication``/``pause_publication``, and so do we.

    Raises:
        RemoteProtocolError: the frame is malformed; the message says how.
    """
    size = len(data)
    if size < FRAME_HEADER_SIZE:
        raise RemoteProtocolError(
            f"frame too short: {size} bytes, a frame needs at least {FRAME_HEADER_SIZE}"
        )
    if size > max_size:
        raise RemoteProtocolError(f"frame too large: {size} bytes, the limit is {max_size}")
    (
        header_length,
        raw_type,
        schema_version,
        created_date,
        sequence_number,
        flags,
        raw_id,
        digest,
        payload_type,
        _payload_length,
    ) = _HEADER.unpack_from(data)
    if header_length == 0:
        raise RemoteProtocolError("frame HeaderLength is 0")
    if header_length < HEADER_LENGTH:
        # The fixed-offset fields would overlap the payload; no real peer writes this.
        raise RemoteProtocolError(
            f"frame HeaderLength {header_length} is smaller than {HEADER_LENGTH}"
        )
    if header_length + 4 > size:
        raise RemoteProtocolError(
            f"frame HeaderLength {header_length} points beyond the {size}-byte frame"
        )
    message_type = _decode_type(raw_type)
    payload = bytes(data[header_length + 4 :])
    checked = message_type not in _UNCHECKED_TYPES
    if checked and created_date == 0:
        raise RemoteProtocolError(f"{message_type} frame has CreatedDate 0")
    if checked and verify_digest and payload and hashlib.sha256(payload).digest() != digest:
        raise RemoteProtocolError(
            f"{message_type} frame (seq {sequence_number}) fails its SHA-256 payload digest"
        )
    return Frame(
        message_type=message_type,
        sequence_number=sequence_number,
        flags=flags,
        message_id=uuid.UUID(bytes=_swap_halves(raw_id)),
        payload_type=payload_type,
        payload=payload,
        created_date=created_date,
        schema_version=schema_version,
    )


def peek_header(data: bytes) -> FrameHeader:
    """Read a frame's type, sequence number and payload fields without any other checks.

    Meant for a gateway that relays frames unchanged (docs/protocol.md §1.1): it costs no hashing.

    Raises:
        RemoteProtocolError: fewer than 120 bytes, a HeaderLength below 116 or beyond the end
            of the frame, or a non-ASCII/empty type.
    """
    size = len(data)
    if size < FRAME_HEADER_SIZE:
        raise RemoteProtocolError(
            f"frame too short: {size} bytes, a frame needs at least {FRAME_HEADER_SIZE}"
        )
    fields = _HEADER.unpack_from(data)
    header_length = fields[0]
    if header_length < HEADER_LENGTH or header_length + 4 > size:
        raise RemoteProtocolError(
            f"frame HeaderLength {header_length} does not fit a {size}-byte frame"
        )
    return FrameHeader(
        message_type=_decode_type(fields[1]),
        sequence_number=fields[4],
        payload_type=fields[8],
        payload_length=fields[9],
        payload_size=size - header_length - 4,
    )


def make_frame(
    message_type: str,
    payload: bytes,
    *,
    now: float,
    sequence_number: int = 0,
    flags: int = 0,
    payload_type: int = 0,
    message_id: uuid.UUID | None = None,
) -> Frame:
    """Build a :class:`Frame` stamped with ``now`` (Unix seconds) and a fresh random id."""
    return Frame(
        message_type=str(message_type),
        sequence_number=sequence_number,
        flags=flags,
        message_id=message_id if message_id is not None else uuid.uuid4(),
        payload_type=int(payload_type),
        payload=bytes(payload),
        created_date=int(now * 1000),
    )
