"""Sealed messages between replicas (``server.cluster.envelope``): no I/O, a fake clock."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import RemoteProtocolError
from hatchway.server.cluster.envelope import (
    MAC_SIZE,
    MAGIC,
    MAX_AGE,
    Freshness,
    PipeFrame,
    Sealer,
    pack_pipe,
    unpack_pipe,
)
from tests.fakes import FakeClock

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SUBJECT = "hatchway.r.0123abcd.rpc"

# NATS subjects: printable ASCII without spaces, tokens separated by dots.
subjects = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=".*>"),
            min_size=1, max_size=12),
    min_size=1, max_size=6,
).map(".".join)  # fmt: skip
bodies = st.binary(max_size=512)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Sealer(b"k" * 31)


def test_seal_then_open_gives_the_body_back() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(SUBJECT, b"hello")
    assert sealed.startswith(MAGIC) and len(sealed) == len(MAGIC) + MAC_SIZE + 5
    assert sealer.open(SUBJECT, sealed) == b"hello"
    assert sealer.open(SUBJECT, sealer.seal(SUBJECT, b"")) == b""


def test_every_flipped_bit_is_refused() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(SUBJECT, b'{"op": "open"}')
    for index in range(len(sealed)):
        for bit in range(8):
            altered = bytearray(sealed)
            altered[index] ^= 1 << bit
            with pytest.raises(RemoteProtocolError):
                sealer.open(SUBJECT, bytes(altered))


def test_another_subject_another_key_or_truncation_is_refused() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(SUBJECT, b"body")
    with pytest.raises(RemoteProtocolError, match="bad MAC"):
        sealer.open(SUBJECT + "x", sealed)
    with pytest.raises(RemoteProtocolError, match="bad MAC"):
        sealer.open(SUBJECT + "#reply", sealed)  # a request is not its own answer
    with pytest.raises(RemoteProtocolError, match="bad MAC"):
        Sealer(OTHER_KEY).open(SUBJECT, sealed)
    for size in range(len(sealed)):
        with pytest.raises(RemoteProtocolError):
            sealer.open(SUBJECT, sealed[:size])
    with pytest.raises(RemoteProtocolError, match="not a cluster message"):
        sealer.open(SUBJECT, b"")
    with pytest.raises(RemoteProtocolError, match="not a cluster message"):
        sealer.open(SUBJECT, b"H2" + sealed[2:])


@given(subject=subjects, body=bodies)
def test_open_inverts_seal(subject: str, body: bytes) -> None:
    sealer = Sealer(KEY)
    assert sealer.open(subject, sealer.seal(subject, body)) == body


@settings(max_examples=200)
@given(subject=subjects, other=subjects, body=bodies)
def test_a_message_moved_to_another_subject_is_refused(
    subject: str, other: str, body: bytes
) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(subject, body)
    if other == subject:
        assert sealer.open(other, sealed) == body
    else:
        with pytest.raises(RemoteProtocolError):
            sealer.open(other, sealed)


@given(subject=subjects, body=bodies, key=st.binary(min_size=32, max_size=64))
def test_only_the_key_opens(subject: str, body: bytes, key: bytes) -> None:
    sealed = Sealer(key).seal(subject, body)
    if key == KEY:
        assert Sealer(KEY).open(subject, sealed) == body
    else:
        with pytest.raises(RemoteProtocolError):
            Sealer(KEY).open(subject, sealed)


@given(subject=subjects, body=bodies, data=st.binary(max_size=600))
def test_opening_garbage_fails_only_with_remote_protocol_error(
    subject: str, body: bytes, data: bytes
) -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(subject, body)
    try:
        opened = sealer.open(subject, data)
    except RemoteProtocolError:
        return
    assert data == sealed and opened == body  # no other input opens


# ---- freshness ----------------------------------------------------------------------------


def test_a_fresh_message_is_accepted_once() -> None:
    clock = FakeClock()
    fresh = Freshness(clock)
    body = Freshness.stamp({"op": "open", "session": "s"}, clock())
    message = fresh.check(body)
    assert message["op"] == "open" and message["session"] == "s"
    assert message["at"] == clock() and isinstance(message["id"], str)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        fresh.check(body)
    assert fresh.check(Freshness.stamp({"op": "open"}, clock()))  # another id is fine


def test_stamps_have_random_ids() -> None:
    ids = {json.loads(Freshness.stamp({}, 1.0))["id"] for _ in range(100)}
    assert len(ids) == 100


def test_stale_messages_are_refused() -> None:
    clock = FakeClock()
    fresh = Freshness(clock)
    with pytest.raises(RemoteProtocolError, match="old"):
        fresh.check(Freshness.stamp({}, clock() - MAX_AGE - 1))
    with pytest.raises(RemoteProtocolError, match="old"):
        fresh.check(Freshness.stamp({}, clock() + MAX_AGE + 1))  # from the future
    fresh.check(Freshness.stamp({}, clock() - MAX_AGE + 1))
    fresh.check(Freshness.stamp({}, clock() + MAX_AGE - 1))


def test_a_replay_after_the_window_is_stale() -> None:
    clock = FakeClock()
    fresh = Freshness(clock)
    body = Freshness.stamp({}, clock())
    fresh.check(body)
    clock.advance(MAX_AGE + 1)
    with pytest.raises(RemoteProtocolError, match="old"):
        fresh.check(body)


def test_ids_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    fresh = Freshness(clock, max_age=10.0)
    for _ in range(50):
        fresh.check(Freshness.stamp({}, clock()))
        clock.advance(1.0)
    # Only the ids of the last window are kept (memory stays bounded by the rate).
    assert 0 < len(fresh._seen) <= 11


def test_a_message_from_the_near_future_cannot_be_replayed_later() -> None:
    """A message stamped ahead of this replica's clock (clocks differ a little) stays fresh
    for longer than MAX_AGE after it first arrived: its id must be kept as long."""
    clock = FakeClock()
    fresh = Freshness(clock)
    body = Freshness.stamp({"op": "open"}, clock() + MAX_AGE - 1)
    fresh.check(body)
    for _ in range(3):
        clock.advance(MAX_AGE / 2)
        fresh.check(Freshness.stamp({}, clock()))  # traffic that prunes the seen ids
        with pytest.raises(RemoteProtocolError):
            fresh.check(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"at": 1700000000.0}',
        b'{"id": "abc"}',
        b'{"at": "1700000000", "id": "abc"}',
        b'{"at": 1700000000.0, "id": 12}',
        b'{"at": null, "id": "abc"}',
    ],
)
def test_malformed_messages_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Freshness(FakeClock()).check(body)


@given(st.binary(max_size=200))
def test_checking_garbage_fails_only_with_remote_protocol_error(body: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        Freshness(FakeClock()).check(body)


# ---- pipe messages ------------------------------------------------------------------------


@given(
    seq=st.integers(0, 2**64 - 1),
    kind=st.sampled_from([PipeFrame.DATA, PipeFrame.TEXT, PipeFrame.CLOSE]),
    payload=st.binary(max_size=300),
)
def test_unpack_inverts_pack(seq: int, kind: bytes, payload: bytes) -> None:
    assert unpack_pipe(pack_pipe(seq, kind, payload)) == (seq, kind, payload)


@pytest.mark.parametrize("body", [b"", b"\x00" * 8, b"\x00" * 7 + b"D"])
def test_short_pipe_messages_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="short"):
        unpack_pipe(body)


@pytest.mark.parametrize("kind", [b"X", b"d", b"\x00", b"\xff"])
def test_unknown_pipe_kinds_are_refused(kind: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="kind"):
        unpack_pipe(b"\x00" * 7 + b"\x01" + kind + b"payload")


@given(st.binary(max_size=40))
def test_unpacking_garbage_fails_only_with_remote_protocol_error(body: bytes) -> None:
    try:
        seq, kind, _ = unpack_pipe(body)
    except RemoteProtocolError:
        return
    assert kind in (PipeFrame.DATA, PipeFrame.TEXT, PipeFrame.CLOSE) and seq >= 0
