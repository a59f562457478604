"""Frame encoding and decoding: golden vectors (docs/protocol.md §4.5) and malformed input."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import uuid

import pytest

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER_SIZE,
    HEADER_LENGTH,
    Frame,
    FrameHeader,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
    make_frame,
    peek_header,
    with_message_id,
)

MESSAGE_ID = uuid.UUID("dd01e56b-ff48-483e-a508-b5f073f31b16")
CREATED = 1503434274948
ACK_JSON = (
    b'{"AcknowledgedMessageType":"output_stream_data",'
    b'"AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16",'
    b'"AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}'
)

# docs/protocol.md §4.5, vector 1, field by field.
VECTOR_1 = bytes.fromhex(
    "00000074"
    + "696e7075745f73747265616d5f64617461"
    + "20" * 15
    + "00000001"
    + "0000015e0baa7884"
    + "0000000000000001"
    + "0000000000000002"
    + "a508b5f073f31b16dd01e56bff48483e"
    + "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5"
    + "00000001"
    + "00000007"
    + "7061796c6f6164"
)
FRAME_1 = Frame(
    message_type="input_stream_data",
    sequence_number=1,
    flags=2,
    message_id=MESSAGE_ID,
    payload_type=PayloadType.OUTPUT,
    payload=b"payload",
    created_date=CREATED,
)

# docs/protocol.md §4.5, vector 2.
VECTOR_2 = (
    bytes.fromhex(
        "00000074"
        + b"acknowledge".hex()
        + "20" * 21
        + "00000001"
        + "0000015e0baa7884"
        + "0000000000000000"
        + "0000000000000003"
        + "a508b5f073f31b16dd01e56bff48483e"
        + "713a0a17057de630213f7292907ce38462812ea213a29366f537f68c6ab60e85"
        + "00000000"
        + "000000b0"
    )
    + ACK_JSON
)
FRAME_2 = Frame(
    message_type="acknowledge",
    sequence_number=0,
    flags=3,
    message_id=MESSAGE_ID,
    payload_type=0,
    payload=ACK_JSON,
    created_date=CREATED,
)


def test_vector_1_encodes_byte_exact() -> None:
    assert len(VECTOR_1) == 127
    assert encode_frame(FRAME_1) == VECTOR_1


def test_vector_1_decodes() -> None:
    assert decode_frame(VECTOR_1) == FRAME_1


def test_vector_2_encodes_byte_exact() -> None:
    assert len(ACK_JSON) == 176
    assert len(VECTOR_2) == 296
    assert encode_frame(FRAME_2) == VECTOR_2


def test_vector_2_decodes() -> None:
    frame = decode_frame(VECTOR_2)
    assert frame == FRAME_2
    assert frame.message_type == MessageType.ACKNOWLEDGE


def test_peek_header_reads_fields_without_digest() -> None:
    corrupted = VECTOR_1[:-1] + b"X"
    assert peek_header(corrupted) == FrameHeader(
        message_type="input_stream_data",
        sequence_number=1,
        payload_type=1,
        payload_length=7,
        payload_size=7,
    )


def test_peek_header_measures_the_payload_not_the_header_claim() -> None:
    # PayloadLength says 7; the payload is everything after HeaderLength + 4 (§4.2).
    padded = VECTOR_1 + b"x" * 1000
    assert peek_header(padded).payload_length == 7
    assert peek_header(padded).payload_size == 1007
    lying = VECTOR_1[:116] + (2**32 - 1).to_bytes(4, "big") + VECTOR_1[120:]
    assert peek_header(lying).payload_size == 7


@pytest.mark.parametrize("header_length", [0, 115, 2**32 - 1])
def test_peek_header_rejects_a_header_length_that_does_not_fit(header_length: int) -> None:
    bad = header_length.to_bytes(4, "big") + VECTOR_1[4:]
    with pytest.raises(RemoteProtocolError, match="HeaderLength"):
        peek_header(bad)


def test_with_message_id_changes_only_the_message_id() -> None:
    other = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    replaced = with_message_id(VECTOR_1, other)
    assert replaced[64:80] == bytes.fromhex("8899aabbccddeeff0011223344556677")  # halves swapped
    assert decode_frame(replaced) == dataclasses.replace(FRAME_1, message_id=other)
    assert replaced[:64] == VECTOR_1[:64] and replaced[80:] == VECTOR_1[80:]
    with pytest.raises(LocalProtocolError, match="not a frame"):
        with_message_id(VECTOR_1[:119], other)


def test_decode_accepts_a_frame_of_exactly_the_limit() -> None:
    """docs/protocol.md §13.1: at most 1 MiB, header included."""
    payload = bytes(DEFAULT_MAX_FRAME_SIZE - FRAME_HEADER_SIZE)
    data = encode_frame(make_frame("output_stream_data", payload, now=1.0))
    assert len(data) == DEFAULT_MAX_FRAME_SIZE
    assert decode_frame(data).payload == payload
    with pytest.raises(RemoteProtocolError, match="too large: 1048577 bytes"):
        decode_frame(encode_frame(make_frame("output_stream_data", payload + b"x", now=1.0)))


def test_peek_header_rejects_short_data() -> None:
    with pytest.raises(RemoteProtocolError, match="too short"):
        peek_header(VECTOR_1[:119])


def test_make_frame_stamps_time_and_id() -> None:
    frame = make_frame(
        MessageType.OUTPUT_STREAM_DATA,
        b"x",
        now=1503434274.948,
        sequence_number=4,
        flags=1,
        payload_type=PayloadType.OUTPUT,
    )
    assert frame.created_date == CREATED
    assert frame.message_type == "output_stream_data"
    assert type(frame.message_type) is str
    assert frame.message_id.version == 4
    assert (frame.sequence_number, frame.flags, frame.payload_type) == (4, 1, 1)
    assert decode_frame(encode_frame(frame)) == frame


def test_unknown_message_type_survives_round_trip() -> None:
    frame = make_frame("agent_job", b"{}", now=1.0, message_id=MESSAGE_ID)
    assert decode_frame(encode_frame(frame)).message_type == "agent_job"


def test_constants() -> None:
    assert (HEADER_LENGTH, FRAME_HEADER_SIZE, DEFAULT_MAX_FRAME_SIZE) == (116, 120, 1 << 20)


# -- encode errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"payload": b""}, "empty payload"),
        ({"message_type": "x" * 33}, "longer than 32"),
        ({"message_type": ""}, "empty"),
        ({"message_type": "héllo"}, "not ASCII"),
        ({"sequence_number": 2**63}, "sequence_number"),
        ({"sequence_number": -(2**63) - 1}, "sequence_number"),
        ({"flags": -1}, "flags"),
        ({"flags": 2**64}, "flags"),
        ({"created_date": -1}, "created_date"),
        ({"payload_type": 2**32}, "payload_type"),
        ({"schema_version": -1}, "schema_version"),
    ],
)
def test_encode_rejects(changes: dict[str, object], match: str) -> None:
    fields = {
        "message_type": FRAME_1.message_type,
        "sequence_number": FRAME_1.sequence_number,
        "flags": FRAME_1.flags,
        "message_id": FRAME_1.message_id,
        "payload_type": FRAME_1.payload_type,
        "payload": FRAME_1.payload,
        "created_date": FRAME_1.created_date,
    }
    fields.update(changes)
    with pytest.raises(LocalProtocolError, match=match):
        encode_frame(Frame(**fields))  # type: ignore[arg-type]


def test_type_of_exactly_32_bytes_encodes() -> None:
    frame = make_frame("t" * 32, b"x", now=1.0)
    assert decode_frame(encode_frame(frame)).message_type == "t" * 32


# -- decode errors --------------------------------------------------------------------------


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short: 0 bytes"),
        (VECTOR_1[:119], "too short: 119 bytes"),
        (_patch(VECTOR_1, 0, struct.pack(">I", 0)), "HeaderLength is 0"),
        (_patch(VECTOR_1, 0, struct.pack(">I", 12)), "HeaderLength 12 is smaller than 116"),
        (_patch(VECTOR_1, 0, struct.pack(">I", 124)), "HeaderLength 124 points beyond"),
        (_patch(VECTOR_1, 4, b" " * 32), "message type is empty"),
        (_patch(VECTOR_1, 4, b"\x00" * 32), "message type is empty"),
        (_patch(VECTOR_1, 4, "é".encode()), "not ASCII"),
        (_patch(VECTOR_1, 40, bytes(8)), "CreatedDate 0"),
        (VECTOR_1[:-1] + b"X", "fails its SHA-256 payload digest"),
        (VECTOR_1 + b"trailing", "fails its SHA-256 payload digest"),
        (_patch(VECTOR_1, 80, bytes(32)), "fails its SHA-256 payload digest"),
    ],
)
def test_decode_rejects(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_frame(data)


def test_decode_rejects_frames_over_the_limit() -> None:
    with pytest.raises(RemoteProtocolError, match="too large: 127 bytes, the limit is 126"):
        decode_frame(VECTOR_1, max_size=126)
    big = encode_frame(make_frame("output_stream_data", bytes(DEFAULT_MAX_FRAME_SIZE), now=1.0))
    with pytest.raises(RemoteProtocolError, match="too large"):
        decode_frame(big)


def test_decode_without_digest_check_accepts_bad_digest() -> None:
    # AWS's agent never checks the digest (docs/protocol.md §4.4).
    frame = decode_frame(VECTOR_1[:-1] + b"X", verify_digest=False)
    assert frame.payload == b"payloaX"


def test_payload_is_everything_after_header_length() -> None:
    # PayloadLength is not used to slice (docs/protocol.md §4.2).
    data = _patch(VECTOR_1, 116, struct.pack(">I", 1))
    assert decode_frame(data).payload == b"payload"
    longer = _patch(VECTOR_1, 0, struct.pack(">I", 117))
    assert decode_frame(longer, verify_digest=False).payload == b"ayload"


def test_empty_payload_decodes_without_digest_check() -> None:
    assert decode_frame(VECTOR_1[:120]).payload == b""


def test_nul_and_space_padding_are_trimmed() -> None:
    nul_padded = _patch(VECTOR_1, 4, b"input_stream_data".ljust(32, b"\x00"))
    assert decode_frame(nul_padded).message_type == "input_stream_data"


@pytest.mark.parametrize("kind", ["start_publication", "pause_publication"])
def test_publication_frames_skip_date_and_digest_checks(kind: str) -> None:
    # The plugin skips validation for these two types (docs/protocol.md §4.4).
    good = encode_frame(make_frame(kind, b"{}", now=1.0))
    bad = _patch(_patch(good, 40, bytes(8)), 80, bytes(32))
    frame = decode_frame(bad)
    assert (frame.message_type, frame.created_date) == (kind, 0)


def test_digest_is_sha256_of_payload() -> None:
    data = encode_frame(make_frame("x", b"abc", now=1.0))
    assert data[80:112] == hashlib.sha256(b"abc").digest()
