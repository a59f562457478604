"""The reliable stream (docs/protocol.md §6) driven frame by frame through a Pair."""

from __future__ import annotations

import pytest

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.control import ack_for, control_frame, session_state_frame
from hatchway.protocol.events import (
    ChannelClosedEvent,
    PublicationPaused,
    PublicationStarted,
    SessionStateChanged,
    StreamData,
    UnknownMessage,
)
from hatchway.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FLAG_SYN,
    FRAME_HEADER_SIZE,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
    make_frame,
)
from hatchway.protocol.payloads import AcknowledgeContent, ChannelClosedPayload, SizePayload
from hatchway.protocol.reliability import (
    INITIAL_RTO,
    MAX_IGNORED_RESENDS,
    MAX_RTO,
    MIN_RTO,
    Endpoint,
    Role,
)

from .pair import T0, WALL0, Pair, counting_ids, fixed_wall

OUTPUT = PayloadType.OUTPUT
START = control_frame("start_publication", b"{}", now=WALL0)
PAUSE = control_frame("pause_publication", b"{}", now=WALL0)


def _agent(**kwargs: object) -> Endpoint:
    return Endpoint(Role.AGENT, wall_clock=fixed_wall(), id_factory=counting_ids(0xA), **kwargs)  # type: ignore[arg-type]


def _client(**kwargs: object) -> Endpoint:
    return Endpoint(Role.CLIENT, wall_clock=fixed_wall(), id_factory=counting_ids(0xC), **kwargs)  # type: ignore[arg-type]


def _ack(seq: int, kind: str = MessageType.OUTPUT_STREAM_DATA) -> bytes:
    frame = make_frame(kind, b"x", now=WALL0, sequence_number=seq)
    return ack_for(frame, now=WALL0)


def _ack_of(data: bytes) -> bytes:
    """The peer's ack of one frame we sent, echoing its MessageId."""
    return ack_for(decode_frame(data), now=WALL0)


def _stream(seq: int, payload: bytes = b"x", kind: str = "output_stream_data") -> bytes:
    return encode_frame(
        make_frame(kind, payload, now=WALL0, sequence_number=seq, payload_type=OUTPUT)
    )


def _seqs(frames: list[bytes]) -> list[int]:
    """Sequence numbers of the stream frames among ``frames``."""
    decoded = (decode_frame(d) for d in frames)
    return [f.sequence_number for f in decoded if f.message_type.endswith("_stream_data")]


# -- basic flow -----------------------------------------------------------------------------


def test_both_directions_deliver_and_ack() -> None:
    pair = Pair()
    pair.client.send(OUTPUT, b"ls\r", now=pair.now)
    pair.agent.send(OUTPUT, b"hello", now=pair.now)
    pair.deliver()
    assert pair.stream(Role.AGENT) == [StreamData(OUTPUT, b"ls\r", 0)]
    assert pair.stream(Role.CLIENT) == [StreamData(OUTPUT, b"hello", 0)]
    assert pair.client.all_acked and pair.agent.all_acked
    assert pair.client.unacked_count == pair.agent.unacked_count == 0
    assert pair.client.next_deadline() is None


def test_frames_carry_the_right_type_and_flags() -> None:
    agent, client = _agent(), _client()
    agent.send(OUTPUT, b"ab", now=T0)
    agent.send(OUTPUT, b"cd", now=T0)
    client.send(OUTPUT, b"ef", now=T0)
    first, second = (decode_frame(d) for d in agent.data_to_send())
    assert (first.message_type, first.sequence_number, first.flags) == (
        "output_stream_data",
        0,
        FLAG_SYN,
    )
    assert (second.sequence_number, second.flags) == (1, 0)
    (from_client,) = (decode_frame(d) for d in client.data_to_send())
    assert (from_client.message_type, from_client.flags) == ("input_stream_data", 0)


def test_output_is_chunked_other_types_are_not() -> None:
    agent = _agent(max_payload_size=4)
    agent.send(OUTPUT, b"0123456789", now=T0)
    frames = [decode_frame(d) for d in agent.data_to_send()]
    assert [f.payload for f in frames] == [b"0123", b"4567", b"89"]
    assert [f.sequence_number for f in frames] == [0, 1, 2]
    agent.send(PayloadType.STDERR, b"abcde", now=T0)
    assert len(agent.data_to_send()) == 2
    agent.send(PayloadType.HANDSHAKE_REQUEST, b'{"AgentVersion":"3.3.1802.0"}', now=T0)
    (handshake,) = (decode_frame(d) for d in agent.data_to_send())
    assert handshake.sequence_number == 5


def test_max_payload_size_is_settable_and_checked() -> None:
    client = _client()
    client.max_payload_size = 65536
    client.send(OUTPUT, bytes(70000), now=T0)
    assert [len(decode_frame(d).payload) for d in client.data_to_send()] == [65536, 4464]
    for bad in (0, -1, (1 << 20) - 119):
        with pytest.raises(LocalProtocolError, match="max_payload_size"):
            client.max_payload_size = bad


def test_ack_frame_format() -> None:
    client = _client()
    client.receive(_stream(0), now=T0 + 1)
    (data,) = client.data_to_send()
    ack = decode_frame(data)
    assert (ack.message_type, ack.sequence_number, ack.flags, ack.payload_type) == (
        "acknowledge",
        0,
        3,
        0,
    )
    assert ack.created_date == int(WALL0 * 1000)
    content = AcknowledgeContent.from_json(ack.payload)
    assert content.acknowledged_message_type == "output_stream_data"
    assert content.acknowledged_sequence_number == 0
    assert content.is_sequential_message


def test_timers_use_now_and_created_date_uses_the_wall_clock() -> None:
    """Timers and RTT samples run on the caller's monotonic ``now``; CreatedDate on wall time."""
    wall = [1_700_000_123.5]
    agent = Endpoint(Role.AGENT, wall_clock=lambda: wall[0])
    agent.send(OUTPUT, b"x", now=5.0)  # a monotonic clock: seconds since boot
    (frame,) = (decode_frame(d) for d in agent.data_to_send())
    assert frame.created_date == 1_700_000_123_500
    assert agent.next_deadline() == pytest.approx(5.0 + INITIAL_RTO)
    wall[0] -= 3600  # the wall clock is set back an hour: timers do not care
    agent.receive(_ack(0, "input_stream_data"), now=5.25)
    assert agent.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.25)
    agent.receive(_stream(0, kind="input_stream_data"), now=6.0)
    wall[0] = 1_700_000_200.0
    (ack,) = agent.data_to_send()
    assert decode_frame(ack).created_date == 1_700_000_200_000  # stamped when it leaves


# -- receiver -------------------------------------------------------------------------------


def test_out_of_order_frames_are_buffered_acked_once_and_delivered_in_order() -> None:
    client = _client()
    assert client.receive(_stream(2, b"c"), now=T0) == []
    assert client.receive(_stream(1, b"b"), now=T0) == []
    assert len(client.data_to_send()) == 2  # acked on arrival
    events = client.receive(_stream(0, b"a"), now=T0)
    assert events == [StreamData(1, b"a", 0), StreamData(1, b"b", 1), StreamData(1, b"c", 2)]
    assert len(client.data_to_send()) == 1  # only frame 0 is acked now
    assert client.expected_sequence_number == 3


def test_duplicates_are_reacked_not_redelivered() -> None:
    client = _client()
    client.receive(_stream(0), now=T0)
    client.data_to_send()
    assert client.receive(_stream(0), now=T0) == []
    (ack,) = client.data_to_send()
    assert AcknowledgeContent.from_json(decode_frame(ack).payload).acknowledged_sequence_number == 0
    client.receive(_stream(5), now=T0)
    client.data_to_send()
    assert client.receive(_stream(5), now=T0) == []
    assert len(client.data_to_send()) == 1


def test_full_reorder_buffer_drops_without_ack() -> None:
    client = _client(receive_capacity=1)
    client.receive(_stream(1), now=T0)
    assert len(client.data_to_send()) == 1
    assert client.receive(_stream(2), now=T0) == []
    assert client.data_to_send() == []
    events = client.receive(_stream(0), now=T0)
    assert [e.sequence_number for e in events if isinstance(e, StreamData)] == [0, 1]
    assert len(events) == 2


@pytest.mark.parametrize(
    ("endpoint", "kind"),
    [(_client, "input_stream_data"), (_agent, "output_stream_data")],
)
def test_wrong_direction_is_a_remote_error(endpoint: object, kind: str) -> None:
    with pytest.raises(RemoteProtocolError, match="only it may send"):
        endpoint().receive(_stream(0, kind=kind), now=T0)  # type: ignore[operator]


def test_negative_sequence_number_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="negative"):
        _client().receive(_stream(-1), now=T0)


def test_malformed_input_is_a_remote_error() -> None:
    client = _client()
    with pytest.raises(RemoteProtocolError, match="too short"):
        client.receive(b"junk", now=T0)
    with pytest.raises(RemoteProtocolError, match="acknowledge payload"):
        client.receive(control_frame("acknowledge", b"{}", now=WALL0), now=T0)
    with pytest.raises(RemoteProtocolError, match="digest"):
        client.receive(_stream(0)[:-1] + b"y", now=T0)


def test_digest_check_can_be_disabled() -> None:
    agent = _agent(verify_digest=False)
    (event,) = agent.receive(_stream(0, kind="input_stream_data")[:-1] + b"y", now=T0)
    assert event == StreamData(OUTPUT, b"y", 0)


def test_frames_over_the_limit_are_rejected() -> None:
    client = _client(max_frame_size=200, max_payload_size=50)
    with pytest.raises(RemoteProtocolError, match="too large"):
        client.receive(_stream(0, bytes(100)), now=T0)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        client.send(PayloadType.SIZE, bytes(100), now=T0)


def test_a_frame_of_exactly_one_mebibyte_is_produced_and_accepted() -> None:
    """docs/protocol.md §13.1: "at most 1 MiB", header included; one byte more is refused."""
    largest = DEFAULT_MAX_FRAME_SIZE - FRAME_HEADER_SIZE
    agent = _agent(max_payload_size=largest)
    agent.send(OUTPUT, bytes(largest), now=T0)
    (frame,) = agent.data_to_send()
    assert len(frame) == DEFAULT_MAX_FRAME_SIZE
    client = _client()
    (event,) = client.receive(frame, now=T0)
    assert event == StreamData(OUTPUT, bytes(largest), 0)

    with pytest.raises(LocalProtocolError, match="exceeds the 1048576-byte limit"):
        agent.send(PayloadType.HANDSHAKE_REQUEST, bytes(largest + 1), now=T0)
    assert agent.next_sequence_number == 1  # nothing queued
    with pytest.raises(RemoteProtocolError, match="too large: 1048577 bytes"):
        client.receive(_stream(1, bytes(largest + 1)), now=T0)


def test_control_messages_become_events() -> None:
    client = _client()
    closed = ChannelClosedPayload("m", "1", "i-1", "s-1", output="bye")
    assert client.receive(control_frame("channel_closed", closed.to_json(), now=WALL0), now=T0) == [
        ChannelClosedEvent(closed)
    ]
    state = session_state_frame("Terminating", "s-1", now=WALL0)
    assert decode_frame(state).flags == 3
    assert client.receive(state, now=T0) == [SessionStateChanged("Terminating")]
    assert client.receive(control_frame("agent_job", b"{}", now=WALL0), now=T0) == [
        UnknownMessage("agent_job")
    ]
    assert client.data_to_send() == []  # non-stream frames are never acked


# -- sender: acks, RTT, timers --------------------------------------------------------------


def test_acks_match_by_sequence_number_only() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    agent.receive(_ack(7, "input_stream_data"), now=T0)  # unknown seq: ignored
    assert agent.unacked_count == 1
    agent.receive(_ack(0, "something_else"), now=T0)
    assert agent.all_acked


def test_rtt_sample_updates_srtt_and_the_rto_keeps_its_floor() -> None:
    agent = _agent()
    assert (agent.rto, agent.srtt) == (INITIAL_RTO, None)
    agent.send(OUTPUT, b"x", now=T0)
    agent.receive(_ack(0, "input_stream_data"), now=T0 + 0.05)
    # docs/protocol.md §6.5, from the seeds RTT 0.1, RTTV 0.
    assert agent.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.05)
    assert agent.rto == MIN_RTO  # AWS's formula would give 0.11 s


def test_a_slow_path_raises_the_rto_above_its_floor() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    agent.receive(_ack(0), now=T0 + 2.0)
    srtt = 0.875 * 0.1 + 0.125 * 2.0
    rttvar = 0.25 * (2.0 - 0.1)
    assert agent.srtt == pytest.approx(srtt)
    assert agent.rto == pytest.approx(srtt + 4 * rttvar)
    assert MIN_RTO < agent.rto < MAX_RTO


def test_rto_never_exceeds_its_cap() -> None:
    agent = _agent()
    for seq in range(20):
        agent.send(OUTPUT, b"x", now=T0 + 100 * seq)
        agent.receive(_ack(seq), now=T0 + 100 * seq + 50)
    assert agent.rto == MAX_RTO


def test_a_short_stall_on_a_fast_path_resends_nothing() -> None:
    """Issue 5: with 10 ms of slack, a 15 ms pause on a loaded agent fired resends."""
    agent = _agent()
    for seq in range(20):  # a fast path: 5 ms round trips
        agent.send(OUTPUT, b"x", now=T0 + seq)
        agent.receive(_ack(seq), now=T0 + seq + 0.005)
    agent.send(OUTPUT, b"y", now=T0 + 100)
    agent.data_to_send()
    deadline = agent.next_deadline()
    assert deadline is not None and deadline - (T0 + 100) == pytest.approx(MIN_RTO)
    agent.handle_timer(T0 + 100.5)  # half a second later the event loop gets to the timer
    assert agent.data_to_send() == []


def test_timer_resends_one_frame_per_rto_lowest_first_and_backs_off() -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"abc", now=T0)
    agent.data_to_send()
    agent.handle_timer(T0 + 1)  # all three are due; only the lowest goes
    assert _seqs(agent.data_to_send()) == [0]
    assert agent.rto == pytest.approx(2)
    # Frames 1 and 2 are overdue from T0 + 2, but the next expiry is one backed-off RTO away.
    assert agent.next_deadline() == pytest.approx(T0 + 3)
    agent.handle_timer(T0 + 2.5)
    assert agent.data_to_send() == []
    agent.receive(_ack(0), now=T0 + 1.2)
    agent.handle_timer(T0 + 3)
    assert _seqs(agent.data_to_send()) == [1]
    assert agent.rto == pytest.approx(4)
    assert agent.next_deadline() == pytest.approx(T0 + 7)
    agent.handle_timer(T0 + 7)
    # Frame 1's send time was updated (the plugin's bug, docs/protocol.md §6.5); it comes first.
    assert _seqs(agent.data_to_send()) == [1]
    assert agent.rto == MAX_RTO  # capped
    assert agent.retransmissions == 3


def test_backoff_is_capped() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    for _ in range(6):
        deadline = agent.next_deadline()
        assert deadline is not None
        agent.handle_timer(deadline)
    assert agent.rto == MAX_RTO
    assert len(agent.data_to_send()) == 7


def test_karn_no_sample_from_retransmitted_frame() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    agent.handle_timer(T0 + 1)
    agent.receive(_ack(0), now=T0 + 1.05)
    assert agent.srtt is None
    assert agent.rto == pytest.approx(2)


def test_an_answered_resend_lets_the_next_overdue_frame_go() -> None:
    """Ack clocking: one overdue frame per ack of a resend, lowest first, no back-off."""
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"abcd", now=T0)
    agent.data_to_send()
    agent.handle_timer(T0 + 1)
    (resent,) = agent.data_to_send()
    agent.receive(_ack_of(resent), now=T0 + 2.5)  # frames 1-3 are 2.5 s old, over the RTO
    (resent,) = agent.data_to_send()
    assert _seqs([resent]) == [1]
    agent.receive(_ack_of(resent), now=T0 + 2.6)
    (resent,) = agent.data_to_send()
    assert _seqs([resent]) == [2]
    assert agent.rto == pytest.approx(2)
    agent.receive(_ack_of(resent), now=T0 + 2.6)
    assert _seqs(agent.data_to_send()) == [3]


def test_ack_clocking_waits_for_overdue_frames() -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"ab", now=T0)
    agent.send(OUTPUT, b"cd", now=T0 + 1.5)
    first = agent.data_to_send()
    agent.receive(_ack_of(first[0]), now=T0 + 0.5)  # a first send acked: nothing to clock out
    assert agent.data_to_send() == []
    agent.handle_timer(T0 + 1.5)
    (resent,) = agent.data_to_send()
    assert _seqs([resent]) == [1]
    agent.receive(_ack_of(resent), now=T0 + 1.6)  # frames 2 and 3 are not overdue
    assert agent.data_to_send() == []


@pytest.mark.parametrize("answered", ["resend", "first send"])
def test_ack_clocking_does_not_chase_a_slow_path(answered: str) -> None:
    """Each send has a MessageId of its own and acks echo it: an ack of the first send after a
    resend means the path is slow, not refusing, and more resends would only lengthen its
    queue; on a path slower than the RTO every ack would clock out another resend."""
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"abc", now=T0)
    first = agent.data_to_send()
    agent.handle_timer(T0 + 1)
    (resent,) = agent.data_to_send()
    assert decode_frame(resent).message_id != decode_frame(first[0]).message_id
    assert decode_frame(resent).payload == decode_frame(first[0]).payload
    ack = _ack_of(resent if answered == "resend" else first[0])
    agent.receive(ack, now=T0 + 3)  # frames 1 and 2 are overdue
    assert _seqs(agent.data_to_send()) == ([1] if answered == "resend" else [])


def test_retransmit_all_resends_everything_in_order() -> None:
    pair = Pair(agent={"max_payload_size": 2})
    pair.agent.send(OUTPUT, b"abcdefgh", now=pair.now)
    originals = [decode_frame(d) for d in pair.agent.data_to_send()]  # lost with the connection
    pair.agent.retransmit_all(pair.now)
    resent = pair.agent.data_to_send()
    again = [decode_frame(d) for d in resent]
    assert [(f.sequence_number, f.payload) for f in again] == [
        (f.sequence_number, f.payload) for f in originals
    ]
    assert not {f.message_id for f in again} & {f.message_id for f in originals}
    pair.in_flight.extend((Role.CLIENT, data) for data in resent)
    pair.deliver()
    assert pair.received(Role.CLIENT) == b"abcdefgh"
    assert pair.agent.all_acked


def test_start_publication_resends_everything_even_when_not_paused() -> None:
    """The gateway sends start_publication when an end (re)joins: the path changed."""
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"abc", now=T0)
    agent.data_to_send()  # lost at the gateway: the client had gone
    agent.receive(_ack(1), now=T0 + 0.1)
    assert not agent.paused
    assert agent.receive(START, now=T0 + 0.2) == [PublicationStarted()]
    assert _seqs(agent.data_to_send()) == [0, 2]
    assert agent.next_deadline() == pytest.approx(T0 + 0.2 + MIN_RTO)


def test_a_path_change_forgets_the_back_off() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    agent.handle_timer(T0 + 1)
    agent.handle_timer(T0 + 3)
    assert agent.rto == MAX_RTO
    agent.retransmit_all(T0 + 5)
    assert agent.rto == INITIAL_RTO


# -- flow control ---------------------------------------------------------------------------


def test_pause_holds_back_new_and_old_frames() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"before", now=T0)
    agent.data_to_send()
    events = agent.receive(PAUSE, now=T0)
    assert events == [PublicationPaused()] and agent.paused
    agent.send(OUTPUT, b"during", now=T0 + 0.1)
    assert agent.data_to_send() == []
    assert agent.next_deadline() is None
    agent.handle_timer(T0 + 5)
    assert agent.data_to_send() == []
    assert agent.unacked_count == 2 and not agent.all_acked

    events = agent.receive(START, now=T0 + 6)
    assert events == [PublicationStarted()] and not agent.paused
    frames = [decode_frame(d) for d in agent.data_to_send()]
    assert [(f.sequence_number, f.payload) for f in frames] == [(0, b"before"), (1, b"during")]
    assert agent.next_deadline() == pytest.approx(T0 + 6 + INITIAL_RTO)


@pytest.mark.parametrize("resume", ["stream", "ack"])
def test_incoming_stream_data_or_ack_ends_a_pause(resume: str) -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"ab", now=T0)
    agent.data_to_send()
    agent.receive(PAUSE, now=T0)
    agent.send(OUTPUT, b"c", now=T0)
    if resume == "stream":
        agent.receive(_stream(0, kind="input_stream_data"), now=T0 + 1)
    else:
        agent.receive(_ack(0), now=T0 + 1)
    assert not agent.paused
    assert _seqs(agent.data_to_send()) == ([0, 1, 2] if resume == "stream" else [1, 2])


def test_retransmit_all_ends_a_pause() -> None:
    client = _client()
    client.receive(PAUSE, now=T0)
    client.send(OUTPUT, b"x", now=T0)
    assert client.data_to_send() == []
    client.retransmit_all(T0 + 1)
    assert not client.paused
    assert len(client.data_to_send()) == 1


def test_send_window_overflow_raises_and_queues_nothing() -> None:
    client = _client(send_capacity=3, max_payload_size=1)
    assert client.send_window() == 3
    with pytest.raises(LocalProtocolError, match="send buffer full"):
        client.send(OUTPUT, b"abcd", now=T0)
    assert client.unacked_count == 0 and client.data_to_send() == []
    assert client.next_sequence_number == 0
    client.send(OUTPUT, b"abc", now=T0)
    assert client.send_window() == 0
    with pytest.raises(LocalProtocolError, match="send buffer full"):
        client.send(OUTPUT, b"d", now=T0)
    client.receive(_ack(0, "input_stream_data"), now=T0)
    assert client.send_window() == 1
    client.send(OUTPUT, b"d", now=T0)


def test_send_window_is_bounded_in_bytes_too() -> None:
    agent = _agent(max_payload_size=1000, send_buffer_bytes=10_000)
    assert agent.send_window() == 10_000 // (1000 + FRAME_HEADER_SIZE)
    agent.send(OUTPUT, b"y" * 5000, now=T0)  # five full frames
    assert agent.send_window() == (10_000 - 5 * (1000 + FRAME_HEADER_SIZE)) // 1120
    agent.send(OUTPUT, b"z" * 3000, now=T0)
    assert agent.send_window() == 0  # full by bytes, far from full by count


def test_send_enforces_the_byte_budget_it_advertises() -> None:
    agent = _agent(max_payload_size=1000, send_buffer_bytes=10_000)
    agent.send(OUTPUT, b"y" * 8000, now=T0)  # 8 960 bytes with headers: 1 040 left
    agent.data_to_send()
    with pytest.raises(LocalProtocolError, match="send buffer full: 1120 bytes"):
        agent.send(OUTPUT, b"z" * 1000, now=T0)
    with pytest.raises(LocalProtocolError, match="send buffer full"):
        agent.send(PayloadType.EXIT_CODE, b"E" * 1000, now=T0)
    assert agent.next_sequence_number == 8 and agent.unacked_count == 8  # nothing queued
    assert agent.data_to_send() == []
    agent.send(PayloadType.EXIT_CODE, b"EXIT_CODE: 0", now=T0)  # 132 bytes still fit
    agent.receive(_ack(0), now=T0 + 0.1)
    agent.send(OUTPUT, b"z" * 1000, now=T0)


def test_send_rejects_empty_data() -> None:
    with pytest.raises(LocalProtocolError, match="empty"):
        _client().send(OUTPUT, b"", now=T0)


def test_close_is_idempotent_and_stops_everything() -> None:
    client = _client()
    client.send(OUTPUT, b"x", now=T0)
    client.receive(_stream(0), now=T0)
    client.close()
    client.close()
    assert client.closed
    assert len(client.data_to_send()) == 2  # already produced: data and the ack
    assert client.receive(_stream(1), now=T0) == []
    assert client.next_deadline() is None
    client.handle_timer(T0 + 10)
    client.retransmit_all(T0 + 10)
    assert client.data_to_send() == []
    with pytest.raises(LocalProtocolError, match="closed"):
        client.send(OUTPUT, b"y", now=T0)


def test_constructor_validation() -> None:
    with pytest.raises(LocalProtocolError):
        _client(send_capacity=0)
    with pytest.raises(LocalProtocolError):
        _client(receive_capacity=-1)
    with pytest.raises(LocalProtocolError):
        _client(max_frame_size=120)


def test_size_message_goes_through_whole() -> None:
    pair = Pair(client={"max_payload_size": 3})
    pair.client.send(PayloadType.SIZE, SizePayload(80, 24).to_json(), now=pair.now)
    pair.deliver()
    (event,) = pair.stream(Role.AGENT)
    assert SizePayload.from_json(event.payload) == SizePayload(80, 24)
    assert event.payload_type == PayloadType.SIZE


def test_out_of_order_buffer_is_bounded_in_bytes() -> None:
    agent = _agent(receive_buffer_bytes=3000)

    def far_ahead(seq: int) -> bytes:
        return _stream(seq, b"x" * 1000, kind="input_stream_data")

    for seq in range(1, 6):
        assert agent.receive(far_ahead(seq), now=T0) == []
    acked = [decode_frame(f) for f in agent.data_to_send()]
    assert len(acked) == 3  # only what fits in 3000 bytes was buffered (and acknowledged)
    events = agent.receive(far_ahead(0), now=T0)
    assert [e.sequence_number for e in events if isinstance(e, StreamData)] == [0, 1, 2, 3]
    agent.data_to_send()
    assert len(agent.receive(far_ahead(4), now=T0)) == 1  # room again once drained


# -- receive-side backpressure --------------------------------------------------------------


def test_refused_input_is_not_acked_and_arrives_by_retransmission() -> None:
    client, agent = _client(), _agent()
    agent.accepting = False  # the agent's PTY is far behind
    client.send(OUTPUT, b"abc", now=T0)
    for frame in client.data_to_send():
        assert agent.receive(frame, now=T0) == []
    assert agent.data_to_send() == []  # no ack: the client keeps the frame
    assert client.unacked_count == 1
    agent.accepting = True
    deadline = client.next_deadline()
    assert deadline is not None
    client.handle_timer(deadline)
    events = [e for f in client.data_to_send() for e in agent.receive(f, now=deadline)]
    assert [e.payload for e in events if isinstance(e, StreamData)] == [b"abc"]
    for ack in agent.data_to_send():
        client.receive(ack, now=deadline)
    assert client.all_acked


def test_a_receiver_that_refused_input_is_refilled_without_a_resend_storm() -> None:
    """The agent refuses input for 30 s, then takes it again: everything arrives in order,
    and each unacknowledged frame was re-sent about once, not once per RTO."""
    pair = Pair(client={"max_payload_size": 1})
    data = bytes(range(50))
    pair.agent.accepting = False
    pair.client.send(OUTPUT, data, now=pair.now)
    while pair.now < T0 + 30:
        pair.deliver()
        assert pair.advance()
    refused_rounds = pair.client.retransmissions
    assert refused_rounds <= 30 / MAX_RTO + 3  # one frame per (backed-off) RTO
    pair.agent.accepting = True
    pair.run_until_acked()
    assert pair.received(Role.AGENT) == data
    assert [e.sequence_number for e in pair.stream(Role.AGENT)] == list(range(50))
    assert pair.client.retransmissions <= refused_rounds + 50 + 3
    assert pair.now - T0 < 30 + 3 * MAX_RTO  # refilled per round trip, not per RTO


# -- cumulative acknowledgements (AWS's plugin) ---------------------------------------------


def _lose_acks_and_reconnect(pair: Pair, data: bytes) -> None:
    """The agent's output reaches AWS's plugin, the acks are lost with the client's connection
    (an RST while output streams), and the plugin reconnects."""
    pair.agent.send(OUTPUT, data, now=pair.now)
    for frame in pair.agent.data_to_send():
        pair.events[Role.CLIENT] += pair.client.receive(frame, now=pair.now)
    pair.client.data_to_send()  # its acks are lost
    pair.reconnect(Role.CLIENT)
    pair.deliver()  # the re-sent frames are duplicates now: the plugin drops them, unacked
    assert pair.received(Role.CLIENT) == data


@pytest.mark.parametrize("cumulative", [True, False])
def test_aws_plugin_dropping_duplicates_after_a_cut(cumulative: bool) -> None:
    """Issue 5: the agent resent such frames forever and waited 150 s at exit."""
    pair = Pair(client_drops_duplicates=True, agent={"max_payload_size": 4})
    pair.agent.cumulative_acks = cumulative
    _lose_acks_and_reconnect(pair, b"line one\r\n")
    assert pair.duplicates_dropped == 3 and pair.agent.unacked_count == 3
    pair.agent.send(OUTPUT, b"$ ", now=pair.now)  # the session goes on
    pair.deliver()
    assert pair.received(Role.CLIENT) == b"line one\r\n$ "
    assert pair.agent.all_acked is cumulative
    assert pair.agent.unacked_count == (0 if cumulative else 3)


def test_our_client_reacks_duplicates_after_a_cut() -> None:
    pair = Pair(agent={"max_payload_size": 4})
    _lose_acks_and_reconnect(pair, b"line one\r\n")
    assert pair.agent.all_acked


def test_frames_lost_on_the_old_path_are_not_inferred_from_acks_on_the_new_one() -> None:
    """Frames 2 and 3 are lost with the client's old connection; frame 4, sent before the
    agent hears of the new one, reaches the new connection and is acked there. The gateway
    sends start_publication before relaying that ack, so 2 and 3 were sent again by then."""
    agent = _agent(max_payload_size=1, cumulative_acks=True)
    client = _client()
    agent.send(OUTPUT, b"abcd", now=T0)
    old_path = agent.data_to_send()
    for frame in old_path[:2]:
        client.receive(frame, now=T0)
    for ack in client.data_to_send():
        agent.receive(ack, now=T0 + 0.01)
    assert agent.unacked_count == 2  # frames 2 and 3 die with the connection
    agent.send(OUTPUT, b"e", now=T0 + 0.5)  # the client has reconnected meanwhile
    (to_new_path,) = agent.data_to_send()
    assert client.receive(to_new_path, now=T0 + 0.5) == []  # buffered: 2 and 3 are missing
    ack_of_4 = client.data_to_send()
    assert agent.receive(START, now=T0 + 0.6) == [PublicationStarted()]  # first, then the ack
    resent = agent.data_to_send()
    assert _seqs(resent) == [2, 3, 4]
    for ack in ack_of_4:
        agent.receive(ack, now=T0 + 0.7)
    assert agent.unacked_count == 2  # 2 and 3 are not inferred: the client never had them
    delivered = [e for frame in resent for e in client.receive(frame, now=T0 + 0.8)]
    assert b"".join(e.payload for e in delivered if isinstance(e, StreamData)) == b"cde"
    for ack in client.data_to_send():
        agent.receive(ack, now=T0 + 0.9)
    assert agent.all_acked


def test_a_frame_refused_on_the_current_path_is_not_inferred() -> None:
    """AWS's plugin refuses frames before its session handler is registered, yet buffers and
    acks later ones: an ack of a later frame proves nothing on the path a frame was first sent."""
    agent = _agent(max_payload_size=1, cumulative_acks=True)
    agent.send(OUTPUT, b"a", now=T0)  # refused: "handler not ready"
    agent.data_to_send()
    agent.send(OUTPUT, b"b", now=T0 + 0.1)
    agent.data_to_send()
    agent.receive(_ack(1), now=T0 + 0.2)
    assert agent.unacked_count == 1
    deadline = agent.next_deadline()
    assert deadline is not None
    agent.handle_timer(deadline)
    assert _seqs(agent.data_to_send()) == [0]


def test_inferred_acks_take_no_rtt_sample() -> None:
    agent = _agent(max_payload_size=1, cumulative_acks=True)
    agent.send(OUTPUT, b"a", now=T0)
    agent.receive(_ack(0), now=T0 + 0.2)
    srtt = agent.srtt
    agent.send(OUTPUT, b"b", now=T0 + 1)
    agent.retransmit_all(T0 + 1)  # a path change: frame 1's ack is lost
    agent.send(OUTPUT, b"c", now=T0 + 2)
    agent.receive(_ack(2), now=T0 + 9)  # a round trip of 7 s... for frame 2 only
    assert agent.all_acked
    assert agent.srtt == pytest.approx(0.875 * srtt + 0.125 * 7)  # type: ignore[operator]


def _stuck_duplicate(*, cumulative: bool) -> Endpoint:
    """Frame 0 reached AWS's plugin but its ack was lost in a cut; the path is so slow that
    acks of later frames arrive only after frame 0's next resend, so nothing can be inferred."""
    agent = _agent(max_payload_size=1, cumulative_acks=cumulative)
    agent.send(OUTPUT, b"a", now=T0)
    agent.retransmit_all(T0 + 0.1)  # the reconnect; the plugin drops frame 0 from now on
    agent.data_to_send()
    return agent


@pytest.mark.parametrize("cumulative", [True, False])
def test_a_duplicate_ignored_on_a_stable_path_is_given_up_only_for_the_plugin(
    cumulative: bool,
) -> None:
    agent = _stuck_duplicate(cumulative=cumulative)
    seq = 1
    for _ in range(MAX_IGNORED_RESENDS + 3):
        deadline = agent.next_deadline()
        if deadline is None:
            break
        agent.send(OUTPUT, b"x", now=deadline - 0.01)  # sent just before frame 0's resend...
        agent.handle_timer(deadline)
        agent.receive(_ack(seq), now=deadline + 0.5)  # ...and acked after it
        seq += 1
    if cumulative:
        assert agent.all_acked
        assert agent.retransmissions == 1 + MAX_IGNORED_RESENDS
    else:
        assert agent.unacked_count == 1  # our own client re-acks duplicates: never given up
        assert agent.retransmissions == 1 + MAX_IGNORED_RESENDS + 3


def test_stalled_on_duplicates_tells_a_session_when_to_stop_waiting() -> None:
    agent = _agent(max_payload_size=1, cumulative_acks=True)
    agent.send(OUTPUT, b"ab", now=T0)
    agent.data_to_send()
    assert not agent.stalled_on_duplicates  # first sent on this path: the peer may be slow
    agent.retransmit_all(T0 + 1)  # frame 0 had arrived, frame 1 had not
    assert not agent.stalled_on_duplicates  # nothing heard since
    agent.receive(_ack(1), now=T0 + 1.1)  # 1 first sent before the reconnect: infers nothing
    assert agent.unacked_count == 1
    assert agent.stalled_on_duplicates
    agent.receive(PAUSE, now=T0 + 2)
    assert not agent.stalled_on_duplicates  # the peer is away
    agent.receive(START, now=T0 + 3)
    assert not agent.stalled_on_duplicates  # sent again on a new path: wait for an answer
    agent.receive(_ack(7), now=T0 + 3.1)
    assert agent.stalled_on_duplicates
    agent.send(OUTPUT, b"c", now=T0 + 4)
    assert not agent.stalled_on_duplicates  # frame 2 is not a duplicate
    agent.receive(_ack(2), now=T0 + 4.1)
    assert agent.all_acked and not agent.stalled_on_duplicates


def test_stalled_on_duplicates_is_false_with_our_own_client() -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"ab", now=T0)
    agent.retransmit_all(T0 + 1)
    agent.receive(_ack(1), now=T0 + 1.1)
    assert agent.unacked_count == 1 and not agent.stalled_on_duplicates


# ---- flow control between Hatchway's own ends (docs/protocol.md §6.7) -------------------------


def test_a_refusing_receiver_pauses_its_hatchway_peer_and_restarts_it_at_once() -> None:
    from hatchway.protocol.reliability import FLOW_CONTROL_PAYLOAD

    client, agent = _client(), _agent()
    agent.flow_control = True
    client.send(OUTPUT, b"a", now=T0)
    agent.receive(client.data_to_send()[0], now=T0)
    for ack in agent.data_to_send():
        client.receive(ack, now=T0)
    agent.accepting = False  # e.g. the destination does not keep up
    (pause,) = (decode_frame(d) for d in agent.data_to_send())
    assert pause.message_type == MessageType.PAUSE_PUBLICATION
    assert pause.payload == FLOW_CONTROL_PAYLOAD
    client.send(OUTPUT, b"b", now=T0)
    refused = client.data_to_send()
    assert agent.receive(refused[0], now=T0) == []  # refused: neither delivered nor acked
    assert agent.data_to_send() == []
    assert client.receive(encode_frame(pause), now=T0) == [PublicationPaused()]
    client.send(OUTPUT, b"c", now=T0)
    assert client.data_to_send() == []  # held
    # A late acknowledgement must not end a pause the peer asked for.
    client.receive(_ack(0, MessageType.INPUT_STREAM_DATA), now=T0)
    assert client.data_to_send() == []
    assert client.next_deadline() is None  # no retransmission while held
    agent.accepting = True
    (start,) = (decode_frame(d) for d in agent.data_to_send())
    assert start.message_type == MessageType.START_PUBLICATION
    assert client.receive(encode_frame(start), now=T0) == [PublicationStarted()]
    resent = [decode_frame(d) for d in client.data_to_send()]
    assert [(f.sequence_number, f.payload) for f in resent] == [(1, b"b"), (2, b"c")]
    delivered = [e for f in resent for e in agent.receive(encode_frame(f), now=T0)]
    assert [e.payload for e in delivered if isinstance(e, StreamData)] == [b"b", b"c"]


def test_without_flow_control_a_refusal_is_silent_as_with_aws_peers() -> None:
    agent = _agent()
    agent.accepting = False
    agent.accepting = True
    assert agent.data_to_send() == []


def test_the_gateways_own_pause_still_ends_with_the_next_acknowledgement() -> None:
    client = _client()
    client.receive(PAUSE, now=T0)
    client.send(OUTPUT, b"a", now=T0)
    assert client.data_to_send() == []
    client.receive(_ack(5, MessageType.INPUT_STREAM_DATA), now=T0)  # the path is alive
    assert [decode_frame(d).payload for d in client.data_to_send()] == [b"a"]


def test_a_paused_peer_is_restarted_even_if_nothing_was_refused() -> None:
    agent = _agent()
    agent.flow_control = True
    agent.accepting = False
    agent.accepting = True  # the peer paused in time: no frame was refused
    kinds = [decode_frame(d).message_type for d in agent.data_to_send()]
    assert kinds == [MessageType.PAUSE_PUBLICATION, MessageType.START_PUBLICATION]


def test_without_payload_digests_frames_carry_zeros_and_are_not_checked() -> None:
    client, agent = _client(), _agent()
    client.payload_digest = agent.payload_digest = False  # both Hatchway ends agreed
    client.send(OUTPUT, b"fast", now=T0)
    (wire,) = client.data_to_send()
    assert wire[80:112] == bytes(32)  # PayloadDigest: zeros
    (event,) = agent.receive(wire, now=T0)
    assert isinstance(event, StreamData) and event.payload == b"fast"
    checking = _agent()  # an end that did not agree still refuses a wrong digest
    with pytest.raises(RemoteProtocolError, match="digest"):
        checking.receive(wire, now=T0)
