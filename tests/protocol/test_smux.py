"""smux v1 and v2 (docs/protocol.md §8.5): golden bytes, stream life cycle, credit, bad input."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.smux import (
    HEADER_SIZE,
    MAX_FRAME_DATA,
    Cmd,
    Mux,
    MuxEvent,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamWritable,
    encode_frame,
)

# Hand-computed (docs/protocol.md §8.5): ver 01, cmd, uint16 LE length, uint32 LE stream id.
SYN_3 = bytes.fromhex("01 00 0000 03000000")
PSH_3_HELLO = bytes.fromhex("01 02 0500 03000000") + b"hello"
FIN_3 = bytes.fromhex("01 01 0000 03000000")
NOP = bytes.fromhex("01 03 0000 00000000")
# Stream 0x01020305 carrying 0x0102 (258) bytes: both fields little-endian.
PSH_BIG_HEADER = bytes.fromhex("01 02 0201 05030201")


def _pair() -> tuple[Mux, Mux]:
    return Mux(client=True), Mux(client=False)


# -- golden vectors --------------------------------------------------------------------------


def test_client_frames_match_golden_bytes() -> None:
    client = Mux(client=True)
    assert client.open_stream() == 3
    client.send(3, b"hello")
    client.finish(3)
    client.nop()
    assert client.pending() == 4 * HEADER_SIZE + 5
    assert client.data_to_send() == SYN_3 + PSH_3_HELLO + FIN_3 + NOP
    assert client.pending() == 0
    assert client.data_to_send() == b""


def test_encode_frame_matches_golden_bytes() -> None:
    assert encode_frame(Cmd.SYN, 3) == SYN_3
    assert encode_frame(Cmd.PSH, 3, b"hello") == PSH_3_HELLO
    assert encode_frame(Cmd.FIN, 3) == FIN_3
    assert encode_frame(Cmd.NOP, 0) == NOP
    assert encode_frame(Cmd.PSH, 0x01020305, bytes(258))[:HEADER_SIZE] == PSH_BIG_HEADER


def test_encode_frame_refuses_what_the_header_cannot_hold() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Cmd.PSH, 1, bytes(65536))
    with pytest.raises(LocalProtocolError):
        encode_frame(Cmd.SYN, 2**32)


def test_server_decodes_golden_bytes() -> None:
    server = Mux(client=False)
    assert server.receive(SYN_3 + PSH_3_HELLO + NOP + FIN_3) == [
        StreamOpened(3),
        StreamData(3, b"hello"),
        StreamFinished(3),
    ]
    assert server.dropped_frames == 0


def test_little_endian_length_and_id_are_decoded() -> None:
    server = Mux(client=False)
    payload = bytes(range(256)) + b"xy"
    events = server.receive(
        encode_frame(Cmd.SYN, 0x01020305) + PSH_BIG_HEADER + payload + b"\x01\x03"
    )
    assert events == [StreamOpened(0x01020305), StreamData(0x01020305, payload)]
    # The trailing two bytes start a NOP; completing it yields nothing.
    assert server.receive(bytes(6)) == []


# -- ids and life cycle ----------------------------------------------------------------------


def test_client_ids_are_odd_from_three_and_server_ids_even_from_two() -> None:
    client, server = _pair()
    assert [client.open_stream() for _ in range(3)] == [3, 5, 7]
    assert [server.open_stream() for _ in range(2)] == [2, 4]


def test_stream_closes_when_both_sides_finish() -> None:
    client, server = _pair()
    sid = client.open_stream()
    assert client.is_open(sid)
    assert server.receive(client.data_to_send()) == [StreamOpened(sid)]
    client.finish(sid)
    assert client.is_open(sid) and not client.can_send(sid)
    assert server.receive(client.data_to_send()) == [StreamFinished(sid)]
    # Half-closed: the server still sends, the client still receives.
    assert server.is_open(sid) and server.can_send(sid)
    server.send(sid, b"late reply")
    server.finish(sid)
    assert not server.is_open(sid)
    assert client.receive(server.data_to_send()) == [
        StreamData(sid, b"late reply"),
        StreamFinished(sid),
    ]
    assert not client.is_open(sid)
    client.forget(sid)
    server.forget(sid)
    assert not client.is_open(sid) and not server.is_open(sid)


def test_finish_is_idempotent() -> None:
    client = Mux(client=True)
    sid = client.open_stream()
    client.finish(sid)
    client.finish(sid)
    assert client.data_to_send() == SYN_3 + FIN_3


def test_local_misuse_raises_local_protocol_error() -> None:
    client = Mux(client=True)
    with pytest.raises(LocalProtocolError):
        client.send(3, b"x")  # never opened
    with pytest.raises(LocalProtocolError):
        client.finish(3)
    sid = client.open_stream()
    client.finish(sid)
    with pytest.raises(LocalProtocolError):
        client.send(sid, b"x")  # after our FIN


def test_empty_send_queues_nothing() -> None:
    client = Mux(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"")
    assert client.pending() == 0


def test_large_send_is_split_at_max_frame_data() -> None:
    client, server = _pair()
    sid = client.open_stream()
    data = bytes(range(256)) * 300  # 76800 bytes: 32768 + 32768 + 11264
    client.send(sid, data)
    wire = client.data_to_send()
    assert len(wire) == 4 * HEADER_SIZE + len(data)
    events = server.receive(wire)
    sizes = [len(e.data) for e in events if isinstance(e, StreamData)]
    assert sizes == [MAX_FRAME_DATA, MAX_FRAME_DATA, len(data) - 2 * MAX_FRAME_DATA]
    assert b"".join(e.data for e in events if isinstance(e, StreamData)) == data


def test_stream_id_space_runs_out() -> None:
    client = Mux(client=True)
    client._next_id = 2**32 - 3  # the last odd id, 2**32 - 1, is next
    assert client.open_stream() == 2**32 - 1
    with pytest.raises(LocalProtocolError):
        client.open_stream()


# -- what smux drops (and we count) ----------------------------------------------------------


def test_duplicate_syn_is_dropped_and_counted() -> None:
    server = Mux(client=False)
    assert server.receive(SYN_3 + SYN_3) == [StreamOpened(3)]
    assert server.dropped_frames == 1


def test_data_for_unknown_stream_is_dropped_and_counted() -> None:
    server = Mux(client=False)
    assert server.receive(PSH_3_HELLO + FIN_3) == []
    assert server.dropped_frames == 2


def test_data_after_peer_fin_is_dropped_and_counted() -> None:
    server = Mux(client=False)
    server.receive(SYN_3 + FIN_3)
    assert server.receive(PSH_3_HELLO + FIN_3) == []
    assert server.dropped_frames == 2


def test_frames_for_a_forgotten_stream_are_dropped_and_a_new_syn_reopens() -> None:
    server = Mux(client=False)
    server.receive(SYN_3)
    server.forget(3)
    assert server.receive(PSH_3_HELLO) == []
    assert server.dropped_frames == 1
    assert server.receive(SYN_3 + PSH_3_HELLO) == [StreamOpened(3), StreamData(3, b"hello")]


def test_empty_psh_and_nop_yield_nothing() -> None:
    server = Mux(client=False)
    server.receive(SYN_3)
    assert server.receive(encode_frame(Cmd.PSH, 3) + NOP) == []
    assert server.dropped_frames == 0


# -- malformed input kills the mux -----------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(bytes.fromhex("02 00 0000 03000000"), id="version-2"),
        pytest.param(bytes.fromhex("00 02 0000 03000000"), id="version-0"),
        pytest.param(bytes.fromhex("01 04 0800 03000000"), id="upd-is-v2-only"),
        pytest.param(bytes.fromhex("01 ff 0000 03000000"), id="unknown-cmd"),
        pytest.param(bytes.fromhex("01 00 0100 03000000") + b"x", id="syn-with-length"),
        pytest.param(bytes.fromhex("01 01 0100 03000000") + b"x", id="fin-with-length"),
        pytest.param(bytes.fromhex("01 03 0100 00000000") + b"x", id="nop-with-length"),
    ],
)
def test_malformed_frame_raises_and_the_mux_stays_dead(frame: bytes) -> None:
    server = Mux(client=False)
    with pytest.raises(RemoteProtocolError):
        server.receive(SYN_3 + frame)
    with pytest.raises(RemoteProtocolError):
        server.receive(NOP)


def test_bad_version_is_detected_from_the_header_alone() -> None:
    server = Mux(client=False)
    with pytest.raises(RemoteProtocolError):
        server.receive(bytes.fromhex("02 02 ffff 03000000"))  # no payload needed to know


def test_partial_header_waits() -> None:
    server = Mux(client=False)
    assert server.receive(SYN_3[:7]) == []
    assert server.receive(SYN_3[7:]) == [StreamOpened(3)]


# -- properties ------------------------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.just(0), st.just(b"")),
        st.tuples(st.just("send"), st.integers(0, 7), st.binary(max_size=70000)),
        st.tuples(st.just("finish"), st.integers(0, 7), st.just(b"")),
        st.tuples(st.just("nop"), st.just(0), st.just(b"")),
    ),
    max_size=30,
)


def _drive(ops: list[tuple[str, int, bytes]]) -> tuple[bytes, list[MuxEvent]]:
    """Apply ``ops`` to a client; return its bytes and the events a server should see."""
    client = Mux(client=True)
    opened: list[int] = []
    expected: list[MuxEvent] = []
    for op, index, data in ops:
        if op == "open":
            opened.append(client.open_stream())
            expected.append(StreamOpened(opened[-1]))
        elif op == "nop":
            client.nop()
        elif opened:
            sid = opened[index % len(opened)]
            if not client.can_send(sid):
                continue
            if op == "send":
                client.send(sid, data)
                for start in range(0, len(data), MAX_FRAME_DATA):
                    expected.append(StreamData(sid, data[start : start + MAX_FRAME_DATA]))
            else:
                client.finish(sid)
                expected.append(StreamFinished(sid))
    return client.data_to_send(), expected


@settings(max_examples=60, deadline=None)
@given(ops=_ops, cuts=st.lists(st.integers(0, 2**31), max_size=40))
def test_any_split_of_the_wire_decodes_to_the_same_events(
    ops: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    wire, expected = _drive(ops)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    server = Mux(client=False)
    events: list[MuxEvent] = []
    for start, end in itertools.pairwise(points):
        events.extend(server.receive(wire[start:end]))
    assert events == expected
    assert server.dropped_frames == 0


@settings(max_examples=40, deadline=None)
@given(
    streams=st.lists(st.lists(st.binary(max_size=5000), max_size=6), min_size=1, max_size=6),
    chunk=st.integers(1, 50000),
)
def test_round_trip_over_many_streams_both_ways(streams: list[list[bytes]], chunk: int) -> None:
    client, server = _pair()
    ids = [client.open_stream() for _ in streams]
    for sid, pieces in zip(ids, streams, strict=True):
        for piece in pieces:
            client.send(sid, piece)
        client.finish(sid)
    got: dict[int, bytearray] = {}
    wire = client.data_to_send()
    for start in range(0, len(wire), chunk):
        for event in server.receive(wire[start : start + chunk]):
            if isinstance(event, StreamOpened):
                got[event.stream_id] = bytearray()
            elif isinstance(event, StreamData):
                got[event.stream_id] += event.data
            else:
                # Echo back reversed, then finish: the server's half of each stream.
                server.send(event.stream_id, bytes(got[event.stream_id][::-1]))
                server.finish(event.stream_id)
    assert {sid: bytes(data) for sid, data in got.items()} == {
        sid: b"".join(pieces) for sid, pieces in zip(ids, streams, strict=True)
    }
    echoed: dict[int, bytearray] = {sid: bytearray() for sid in ids}
    finished: set[int] = set()
    for event in client.receive(server.data_to_send()):
        if isinstance(event, StreamData):
            echoed[event.stream_id] += event.data
        elif isinstance(event, StreamFinished):
            finished.add(event.stream_id)
    assert finished == set(ids)
    assert all(not client.is_open(sid) and not server.is_open(sid) for sid in ids)
    assert {sid: bytes(d) for sid, d in echoed.items()} == {
        sid: b"".join(pieces)[::-1] for sid, pieces in zip(ids, streams, strict=True)
    }


@given(st.binary(max_size=300))
def test_garbage_fails_only_with_remote_protocol_error(data: bytes) -> None:
    server = Mux(client=False)
    with contextlib.suppress(RemoteProtocolError):
        server.receive(data)


# -- version 2: per-stream credit (docs/protocol.md §8.5, §7.6) ------------------------------

# ver 02, UPD 04, length 8, stream 3; consumed 0x00010000, window 0x00020000.
UPD_3 = bytes.fromhex("02 04 0800 03000000 00000100 00000200")


def _pair_v2(window: int) -> tuple[Mux, Mux]:
    return Mux(client=True, window=window), Mux(client=False, window=window)


def _deliver(src: Mux, dst: Mux) -> list[MuxEvent]:
    return dst.receive(src.data_to_send())


def _data(events: list[MuxEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, StreamData))


def test_v2_update_matches_golden_bytes() -> None:
    assert encode_frame(Cmd.UPD, 3, bytes.fromhex("00000100 00000200"), version=2) == UPD_3
    client, server = _pair_v2(0x20000)
    server.receive(encode_frame(Cmd.SYN, 3, version=2))
    server.consumed(3, 0x10000)  # half the window: an update leaves
    assert server.data_to_send() == UPD_3
    assert client.version == 2 and Mux(client=True).version == 1


def test_v2_sender_stops_at_the_window_and_resumes_on_update() -> None:
    client, server = _pair_v2(1000)
    sid = client.open_stream()
    client.send(sid, bytes(2500))
    assert client.backlog(sid) == 1500
    events = _deliver(client, server)
    assert len(_data(events)) == 1000  # never more than the window unconsumed
    server.consumed(sid, 400)  # below half a window: no update yet
    assert server.data_to_send() == b""
    server.consumed(sid, 1000)
    assert _deliver(server, client) == []  # credit, but 1500 still > one window
    assert client.backlog(sid) == 500
    assert len(_data(_deliver(client, server))) == 1000
    server.consumed(sid, 2000)
    assert _deliver(server, client) == [StreamWritable(sid)]
    assert client.backlog(sid) == 0
    assert len(_data(_deliver(client, server))) == 500


def test_v2_fin_waits_behind_the_backlog() -> None:
    client, server = _pair_v2(100)
    sid = client.open_stream()
    client.send(sid, b"x" * 150)
    client.finish(sid)
    events = _deliver(client, server)
    assert not any(isinstance(e, StreamFinished) for e in events)
    server.consumed(sid, 100)
    _deliver(server, client)
    events = _deliver(client, server)
    assert _data(events) == b"x" * 50
    assert events[-1] == StreamFinished(sid)


def test_v2_streams_have_their_own_credit() -> None:
    client, server = _pair_v2(100)
    slow, fast = client.open_stream(), client.open_stream()
    client.send(slow, bytes(300))
    server.receive(client.data_to_send())  # the slow stream's reader takes nothing
    for n in range(1, 6):
        client.send(fast, bytes(100))
        assert client.backlog(fast) == 0
        server.receive(client.data_to_send())
        server.consumed(fast, 100 * n)
        client.receive(server.data_to_send())
    assert client.backlog(slow) == 200


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(Cmd.UPD, 3, bytes(8)),  # UPD in version 1
        encode_frame(Cmd.PSH, 3, b"x"),  # a version 1 frame to a version 2 mux
        encode_frame(Cmd.UPD, 3, bytes(4), version=2),  # UPD of the wrong length
    ],
)
def test_v2_version_mismatch_and_bad_updates_are_fatal(frame: bytes) -> None:
    mux = Mux(client=False, window=0 if frame[0] == 1 and frame[1] == Cmd.UPD else 64)
    with pytest.raises(RemoteProtocolError):
        mux.receive(frame)


def test_v2_update_for_unknown_stream_or_unsent_bytes_is_dropped() -> None:
    client, server = _pair_v2(100)
    sid = client.open_stream()
    client.send(sid, bytes(150))
    server.receive(client.data_to_send())
    bogus = encode_frame(Cmd.UPD, sid, (5000).to_bytes(4, "little") + bytes(4), version=2)
    assert client.receive(encode_frame(Cmd.UPD, 99, bytes(8), version=2) + bogus) == []
    assert client.dropped_frames == 2
    assert client.backlog(sid) == 50


def test_v2_counters_wrap_at_32_bits() -> None:
    client, server = _pair_v2(1000)
    sid = client.open_stream()
    server.receive(client.data_to_send())
    near = (1 << 32) - 300
    for mux in (client, server):  # as if 2**32 - 300 bytes had gone before
        stream = mux._streams[sid]
        stream.sent = stream.peer_consumed = stream.consumed = stream.reported = near
    client.send(sid, bytes(1500))
    assert len(_data(_deliver(client, server))) == 1000
    server.consumed(sid, near + 1000)  # past 2**32: reported as 700
    assert _deliver(server, client) == [StreamWritable(sid)]
    assert client.backlog(sid) == 0
    assert len(_data(_deliver(client, server))) == 500


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=20),
    take=st.integers(32, 3000),
    window=st.integers(64, 4096),
)
def test_v2_unconsumed_never_exceeds_the_window_and_everything_arrives(
    sizes: list[int], take: int, window: int
) -> None:
    client, server = _pair_v2(window)
    sid = client.open_stream()
    sent = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    client.send(sid, sent)
    client.finish(sid)
    received = bytearray()
    consumed = 0
    finished = False
    for _ in range(len(sent) // 32 + 10):
        events = _deliver(client, server)
        received += _data(events)
        finished = finished or any(isinstance(e, StreamFinished) for e in events)
        assert len(received) - consumed <= window
        if finished:
            break
        consumed = min(len(received), consumed + take)
        server.consumed(sid, consumed)
        _deliver(server, client)
    assert finished and bytes(received) == sent


@pytest.mark.parametrize("window", [0, 100])
def test_abandoned_stream_drops_and_credits_peer_data_then_is_forgotten(window: int) -> None:
    client, server = Mux(client=True, window=window), Mux(client=False, window=window)
    sid = client.open_stream()
    server.receive(client.data_to_send())
    server.send(sid, b"reply")
    server.abandon(sid)  # e.g. the destination reset: FIN goes, the client's data is dropped
    events = _deliver(server, client)
    assert events == [StreamData(sid, b"reply"), StreamFinished(sid)]
    client.send(sid, bytes(250))  # the client had not heard yet; more than one window
    assert server.receive(client.data_to_send()) == []
    assert server.is_open(sid)
    for _ in range(5):  # credit keeps coming for what was dropped: the client is never stuck
        client.receive(server.data_to_send())
        assert server.receive(client.data_to_send()) == []
    assert client.backlog(sid) == 0
    client.finish(sid)
    assert server.receive(client.data_to_send()) == []
    assert not server.is_open(sid)
    assert server.backlog(sid) == 0 and sid not in server._streams
