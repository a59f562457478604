"""The reliable stream (protocol.md §5) driven frame by frame through a Pair."""

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
    FLAG_SYN,
    MessageType,
    PayloadType,
    decode_frame,
    encode_frame,
    make_frame,
)
from hatchway.protocol.payloads import AcknowledgeContent, ChannelClosedPayload, SizePayload
from hatchway.protocol.reliability import INITIAL_RTO, MAX_RTO, Endpoint, Role

from .pair import T0, Pair, counting_ids

OUTPUT = PayloadType.OUTPUT


def _agent(**kwargs: object) -> Endpoint:
    return Endpoint(Role.AGENT, now=T0, id_factory=counting_ids(0xA), **kwargs)  # type: ignore[arg-type]


def _client(**kwargs: object) -> Endpoint:
    return Endpoint(Role.CLIENT, now=T0, id_factory=counting_ids(0xC), **kwargs)  # type: ignore[arg-type]


def _ack(seq: int, kind: str = MessageType.OUTPUT_STREAM_DATA) -> bytes:
    frame = make_frame(kind, b"x", now=T0, sequence_number=seq)
    return ack_for(frame, now=T0)


def _stream(seq: int, payload: bytes = b"x", kind: str = "output_stream_data") -> bytes:
    return encode_frame(make_frame(kind, payload, now=T0, sequence_number=seq, payload_type=OUTPUT))


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
    assert ack.created_date == int((T0 + 1) * 1000)
    content = AcknowledgeContent.from_json(ack.payload)
    assert content.acknowledged_message_type == "output_stream_data"
    assert content.acknowledged_sequence_number == 0
    assert content.is_sequential_message


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
        client.receive(control_frame("acknowledge", b"{}", now=T0), now=T0)
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


def test_control_messages_become_events() -> None:
    client = _client()
    closed = ChannelClosedPayload("m", "1", "i-1", "s-1", output="bye")
    assert client.receive(control_frame("channel_closed", closed.to_json(), now=T0), now=T0) == [
        ChannelClosedEvent(closed)
    ]
    state = session_state_frame("Terminating", "s-1", now=T0)
    assert decode_frame(state).flags == 3
    assert client.receive(state, now=T0) == [SessionStateChanged("Terminating")]
    assert client.receive(control_frame("agent_job", b"{}", now=T0), now=T0) == [
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


def test_rtt_sample_updates_rto() -> None:
    agent = _agent()
    assert (agent.rto, agent.srtt) == (INITIAL_RTO, None)
    agent.send(OUTPUT, b"x", now=T0)
    agent.receive(_ack(0, "input_stream_data"), now=T0 + 0.05)
    # protocol.md §5.4 from the seeds RTT 0.1, RTTV 0.
    srtt = 0.875 * 0.1 + 0.125 * 0.05
    assert agent.srtt == pytest.approx(srtt)
    assert agent.rto == pytest.approx(srtt + 4 * 0.25 * 0.05)


def test_rto_never_exceeds_one_second() -> None:
    agent = _agent()
    for seq in range(20):
        agent.send(OUTPUT, b"x", now=T0 + 10 * seq)
        agent.receive(_ack(seq), now=T0 + 10 * seq + 5)
    assert agent.rto == MAX_RTO


def test_timer_retransmits_and_updates_send_time() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"x", now=T0)
    (original,) = agent.data_to_send()
    assert agent.next_deadline() == pytest.approx(T0 + 0.2)
    agent.handle_timer(T0 + 0.19)
    assert agent.data_to_send() == []
    agent.handle_timer(T0 + 0.2)
    assert agent.data_to_send() == [original]
    assert agent.rto == pytest.approx(0.4)  # backed off
    # The send time was updated (the plugin's bug is that it is not, §5.3).
    assert agent.next_deadline() == pytest.approx(T0 + 0.6)
    agent.handle_timer(T0 + 0.3)
    assert agent.data_to_send() == []


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
    agent.handle_timer(T0 + 0.2)
    agent.receive(_ack(0), now=T0 + 0.25)
    assert agent.srtt is None
    assert agent.rto == pytest.approx(0.4)


def test_timer_retransmits_every_expired_frame_oldest_first() -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"abc", now=T0)
    agent.send(OUTPUT, b"d", now=T0 + 0.1)
    agent.data_to_send()
    agent.receive(_ack(1), now=T0 + 0.15)  # acked frames are not resent; a sample moves RTO
    rto = agent.rto
    agent.handle_timer(T0 + rto)
    resent = [decode_frame(d).sequence_number for d in agent.data_to_send()]
    assert resent == [0, 2]
    agent.handle_timer(T0 + 0.1 + rto)
    assert agent.data_to_send() == []  # seq 3's deadline moved with the doubled RTO
    agent.handle_timer(T0 + 0.1 + 2 * rto)
    assert [decode_frame(d).sequence_number for d in agent.data_to_send()] == [3]


def test_retransmit_all_resends_everything_in_order() -> None:
    pair = Pair(agent={"max_payload_size": 2})
    pair.agent.send(OUTPUT, b"abcdefgh", now=pair.now)
    originals = pair.agent.data_to_send()  # lost with the old connection
    pair.agent.retransmit_all(pair.now)
    resent = pair.agent.data_to_send()
    assert resent == originals
    pair.in_flight.extend((Role.CLIENT, data) for data in resent)
    pair.deliver()
    assert pair.received(Role.CLIENT) == b"abcdefgh"
    assert pair.agent.all_acked


# -- flow control ---------------------------------------------------------------------------


def test_pause_holds_back_new_and_old_frames() -> None:
    agent = _agent()
    agent.send(OUTPUT, b"before", now=T0)
    agent.data_to_send()
    events = agent.receive(control_frame("pause_publication", b"{}", now=T0), now=T0)
    assert events == [PublicationPaused()] and agent.paused
    agent.send(OUTPUT, b"during", now=T0 + 0.1)
    assert agent.data_to_send() == []
    assert agent.next_deadline() is None
    agent.handle_timer(T0 + 5)
    assert agent.data_to_send() == []
    assert agent.unacked_count == 2 and not agent.all_acked

    events = agent.receive(control_frame("start_publication", b"{}", now=T0), now=T0 + 6)
    assert events == [PublicationStarted()] and not agent.paused
    frames = [decode_frame(d) for d in agent.data_to_send()]
    assert [(f.sequence_number, f.payload) for f in frames] == [(0, b"before"), (1, b"during")]
    assert agent.next_deadline() == pytest.approx(T0 + 6 + INITIAL_RTO)


@pytest.mark.parametrize("resume", ["stream", "ack"])
def test_incoming_stream_data_or_ack_ends_a_pause(resume: str) -> None:
    agent = _agent(max_payload_size=1)
    agent.send(OUTPUT, b"ab", now=T0)
    agent.data_to_send()
    agent.receive(control_frame("pause_publication", b"{}", now=T0), now=T0)
    agent.send(OUTPUT, b"c", now=T0)
    if resume == "stream":
        agent.receive(_stream(0, kind="input_stream_data"), now=T0 + 1)
    else:
        agent.receive(_ack(0), now=T0 + 1)
    assert not agent.paused
    sent = [decode_frame(d) for d in agent.data_to_send()]
    stream = [f.sequence_number for f in sent if f.message_type == "output_stream_data"]
    assert stream == ([0, 1, 2] if resume == "stream" else [1, 2])


def test_retransmit_all_ends_a_pause() -> None:
    client = _client()
    client.receive(control_frame("pause_publication", b"{}", now=T0), now=T0)
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
    from hatchway.protocol.frames import (
        MessageType,
        PayloadType,
        decode_frame,
        encode_frame,
        make_frame,
    )
    from hatchway.protocol.reliability import Endpoint, Role

    agent = Endpoint(Role.AGENT, now=1.0, receive_buffer_bytes=3000)

    def far_ahead(seq: int) -> bytes:
        return encode_frame(
            make_frame(MessageType.INPUT_STREAM_DATA, b"x" * 1000, now=1.0,
                       sequence_number=seq, payload_type=PayloadType.OUTPUT)
        )  # fmt: skip

    for seq in range(1, 6):
        assert agent.receive(far_ahead(seq), now=1.0) == []
    acked = [decode_frame(f) for f in agent.data_to_send()]
    assert len(acked) == 3  # only what fits in 3000 bytes was buffered (and acknowledged)
    events = agent.receive(far_ahead(0), now=1.0)
    assert [e.sequence_number for e in events] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    agent.data_to_send()
    assert len(agent.receive(far_ahead(4), now=1.0)) == 1  # room again once drained


def test_send_window_is_bounded_in_bytes_too() -> None:
    from hatchway.protocol.frames import FRAME_HEADER_SIZE, PayloadType
    from hatchway.protocol.reliability import Endpoint, Role

    agent = Endpoint(Role.AGENT, now=1.0, max_payload_size=1000, send_buffer_bytes=10_000)
    assert agent.send_window() == 10_000 // (1000 + FRAME_HEADER_SIZE)
    agent.send(PayloadType.OUTPUT, b"y" * 5000, now=1.0)  # five full frames
    assert agent.send_window() == (10_000 - 5 * (1000 + FRAME_HEADER_SIZE)) // 1120
    agent.send(PayloadType.OUTPUT, b"z" * 3000, now=1.0)
    assert agent.send_window() == 0  # full by bytes, far from full by count
    # a small control payload (an exit code) still fits: only the frame count is a hard limit
    agent.send(PayloadType.EXIT_CODE, b"EXIT_CODE: 0", now=1.0)


def test_refused_input_is_not_acked_and_arrives_by_retransmission() -> None:
    from hatchway.protocol.events import StreamData
    from hatchway.protocol.frames import PayloadType
    from hatchway.protocol.reliability import Endpoint, Role

    client = Endpoint(Role.CLIENT, now=5.0)
    agent = Endpoint(Role.AGENT, now=5.0)
    agent.accepting = False  # the agent's PTY is far behind
    client.send(PayloadType.OUTPUT, b"abc", now=5.0)
    for frame in client.data_to_send():
        assert agent.receive(frame, now=5.0) == []
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
